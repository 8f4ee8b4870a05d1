"""`moot run --save`, `rooms`, `show`, `export`, `intervene`, `resume` and `db`: rooms kept in the database.

Every test that uses a database runs on SQLite and on PostgreSQL (the fixtures in tests/durable/_support.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from durable._support import board, db_url, postgres_url, room, room_file

from ._proc import json_lines, moot

__all__ = ["db_url", "postgres_url"]  # fixtures, used by name

UNREACHABLE = "postgresql+asyncpg://moot:s3cret-pw@127.0.0.1:9/moot"


def completed_room(folder: Path) -> str:
    """A board meeting run to its end with --save; its id."""
    result = moot("run", str(room_file(folder, board(0))), "--save", "--json")
    assert result.returncode == 0, result.stderr
    first = json_lines(result.stdout)[0]
    assert first["type"] == "room_started"
    room_id: str = first["room_id"]
    return room_id


def test_run_save_says_the_room_id_first_and_rooms_lists_it(db_url: str, tmp_path: Path) -> None:
    result = moot("run", str(room_file(tmp_path, board(0))), "--save")
    assert result.returncode == 0, result.stderr
    first, *rest = result.stdout.splitlines()
    assert first.startswith("Room ")
    room_id = first.removeprefix("Room ")
    assert "Should our 40-person studio" in "\n".join(rest)  # the header comes after
    assert room(db_url, room_id).status == "completed"
    listed = moot("rooms")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "Task", "Protocol", "Status", "Round", "Updated"]
    assert row.split()[0] == room_id
    assert "Should our" in row
    assert "board" in row
    assert "completed" in row
    assert "2/2" in row


def test_an_empty_store_says_so(db_url: str) -> None:
    result = moot("rooms")
    assert result.returncode == 0, result.stderr
    assert "No rooms yet" in result.stdout
    assert "moot run ROOM.yaml --save" in result.stdout


def test_export_holds_the_meetings_result(db_url: str, tmp_path: Path) -> None:
    # covers: B16
    room_id = completed_room(tmp_path)
    result = moot("export", room_id, "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["room_id"], document["status"], document["rounds_run"]) == (room_id, "completed", 2)
    conclusion = document["conclusion"]
    assert conclusion["summary"]
    assert conclusion["decision_advice"]
    assert conclusion["consensus_points"]
    assert isinstance(conclusion["dissent_points"], list)
    entries = document["entries"]
    assert {"round", "kind", "speaker", "text", "usage"} <= set(entries[0])
    assert [e["kind"] for e in entries].count("speech") == 4
    assert all(e["usage"]["total_tokens"] > 0 for e in entries if e["kind"] == "speech")
    markdown = moot("export", room_id, "--format", "md")
    assert markdown.returncode == 0, markdown.stderr
    for heading in ("# Should our", "## Opening", "## Round 1", "## Round 2", "## Conclusion"):
        assert f"\n{heading}" in f"\n{markdown.stdout}"
    assert "**Decision advice:**" in markdown.stdout
    output = tmp_path / "meeting.md"
    written = moot("export", room_id, "--output", str(output))
    assert written.returncode == 0, written.stderr
    assert written.stdout == ""
    assert output.read_text(encoding="utf-8") == markdown.stdout


def test_show_prints_the_discussion(db_url: str, tmp_path: Path) -> None:
    room_id = completed_room(tmp_path)
    result = moot("show", room_id)
    assert result.returncode == 0, result.stderr
    for text in (
        "Chair",
        "Ana",
        "Ben",
        "Opening",
        "Round 1 of 2",
        "round 2 summary",
        "Conclusion",
        "Consensus",
    ):
        assert text in result.stdout
    assert "Finished after 2 rounds" in result.stdout
    assert "resume with" not in result.stdout


def test_a_completed_room_is_not_run_again_nor_spoken_to(db_url: str, tmp_path: Path) -> None:
    room_id = completed_room(tmp_path)
    resumed = moot("resume", room_id)
    assert resumed.returncode == 2
    assert f"room {room_id} is completed" in resumed.stderr
    spoken = moot("intervene", room_id, "one more thing")
    assert spoken.returncode == 2
    assert "takes no more words" in spoken.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("resume", "nosuchroom"),
        ("show", "nosuchroom"),
        ("export", "nosuchroom"),
        ("intervene", "nosuchroom", "hi"),
    ],
)
def test_an_unknown_room_names_moot_rooms(db_url: str, args: tuple[str, ...]) -> None:
    result = moot(*args)
    assert result.returncode == 2
    assert "no room 'nosuchroom'" in result.stderr
    assert "`moot rooms`" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_empty_intervention_is_refused(db_url: str) -> None:
    result = moot("intervene", "anyroom", "   ")
    assert result.returncode == 2
    assert "needs some text" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("rooms",),
        ("show", "abc"),
        ("export", "abc"),
        ("resume", "abc"),
        ("intervene", "abc", "hi"),
        ("run", "-"),
    ],
)
def test_an_unreachable_database_is_one_clean_line(
    args: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOOT_DATABASE_URL", UNREACHABLE)
    if args[0] == "run":
        args = ("run", str(room_file(tmp_path, board(0))), "--save", "--json")
    result = moot(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "postgresql+asyncpg://moot:***@127.0.0.1:9/moot" in result.stderr
    assert "MOOT_DATABASE_URL" in result.stderr
    assert "s3cret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_run_without_save_needs_no_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOOT_DATABASE_URL", UNREACHABLE)
    result = moot("run", str(room_file(tmp_path, board(0))), "--json")
    assert result.returncode == 0, result.stderr


def test_db_upgrade_and_current(db_url: str) -> None:
    upgraded = moot("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "(newest)" in upgraded.stdout
    current = moot("db", "current")
    assert current.returncode == 0, current.stderr
    assert "(newest)" in current.stdout


def test_continue_asks_a_concluded_room_a_follow_up_question(db_url: str, tmp_path: Path) -> None:
    room_id = completed_room(tmp_path)
    result = moot("continue", room_id, "But what if we keep the enterprise features closed?", "--json")
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert events[0]["type"] == "room_started" and events[0]["resumed"] is True
    [asked] = [e for e in events if e["type"] == "intervention_added"]
    assert asked["follow_up"] is True
    [concluded] = [e for e in events if e["type"] == "room_concluded"]
    assert concluded["number"] == 2 and concluded["round"] == 3
    assert events[-1]["type"] == "room_completed"
    exported = moot("export", room_id, "--format", "json")
    assert exported.returncode == 0, exported.stderr
    assert [c["number"] for c in json.loads(exported.stdout)["conclusions"]] == [1, 2]
    assert room(db_url, room_id).status == "completed"


def test_continue_refuses_a_room_that_has_not_concluded(db_url: str, tmp_path: Path) -> None:
    unknown = moot("continue", "nosuchroom", "why?")
    assert unknown.returncode == 2
