"""People's words reach a stored room wherever it runs: stored on arrival, taken in at the next step (B9)."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cli._proc import json_lines, moot, running

from ._support import HANG, HeldModel, board, read, room, room_file

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

QUESTION = "What happens to the on-call rota on Fridays?"
R1_SPEECHES = {"r1:speech:Ana", "r1:speech:Ben"}


def held_members(model: HeldModel) -> dict[str, Any]:
    """The board meeting with the chair simulated (it speaks at once) and both members speaking through
    `model`, whose replies wait until the test releases them: a round's speeches stay in flight meanwhile."""
    data = board(0)
    data["models"] = {**data["models"], "held": model.spec}
    data["agents"] = [{**a, "model": "held"} if a.get("role") != "moderator" else a for a in data["agents"]]
    return data


def mentions_the_question(body: dict[str, Any]) -> str:
    """A member who saw the question in its prompt speaks to it."""
    if QUESTION in json.dumps(body):
        return "On the on-call rota: Fridays stay covered by a rotating pair."
    return "A four-day week works if the work is planned for it."


def all_started(turns: set[str]) -> Callable[[dict[str, Any]], bool]:
    """For `wait_for`: true once every one of `turns` has started."""
    waiting = set(turns)

    def check(event: dict[str, Any]) -> bool:
        if event["type"] == "turn_started":
            waiting.discard(event["turn_id"])
        return not waiting

    return check


def until_stored(url: str, room_id: str, text: str) -> None:
    """Waits until the room's store holds `text` among the words not yet taken in (HANG: a hang fails)."""
    deadline = time.monotonic() + HANG
    while text not in [p.text for p in read(url, lambda s: s.pending_interventions(room_id))]:
        assert time.monotonic() < deadline, f"{text!r} was never stored"
        time.sleep(0.05)


def index(events: list[dict[str, Any]], type_: str, **fields: Any) -> int:
    """Where the first event of this type with these fields is in the stream."""
    return next(
        i
        for i, e in enumerate(events)
        if e["type"] == type_ and all(e.get(k) == v for k, v in fields.items())
    )


@pytest.mark.slow
def test_words_from_another_process_reach_the_next_speakers_and_the_summary(
    db_url: str, tmp_path: Path
) -> None:
    # covers: B9
    with HeldModel(mentions_the_question) as model:
        with running("run", str(room_file(tmp_path, held_members(model))), "--save", "--json") as run:
            room_id = run.wait_for(lambda e: e["type"] == "room_started", HANG)["room_id"]
            run.wait_for(
                all_started(R1_SPEECHES), HANG
            )  # both members speak; neither finishes before the release
            result = moot("intervene", room_id, QUESTION, timeout=HANG)
            assert result.returncode == 0, result.stderr
            assert f"Stored; room {room_id} takes it in at its next step." in result.stdout
            pending = read(
                db_url, lambda s: s.pending_interventions(room_id)
            )  # stored at once, not yet taken
            assert [(p.text, p.author) for p in pending] == [(QUESTION, "user")]
            model.release()
            returncode, events, stderr = run.finish(timeout=HANG)
        asked = model.bodies
    assert returncode == 0, stderr
    added = index(events, "intervention_added", text=QUESTION)
    assert index(events, "turn_completed", turn_id="r1:speech:Ana") < added
    assert index(events, "turn_completed", turn_id="r1:speech:Ben") < added
    assert added < index(events, "turn_started", turn_id="r1:summary:Chair")
    assert read(db_url, lambda s: s.pending_interventions(room_id)) == []
    transcript = read(db_url, lambda s: s.load_transcript(room_id)).entries
    order = [e.turn_id if e.is_turn else e.kind for e in transcript]
    at = order.index("intervention")
    assert order[at - 2 : at + 4] == [
        "r1:speech:Ana",
        "r1:speech:Ben",
        "intervention",
        "r1:summary:Chair",
        "r2:speech:Ana",
        "r2:speech:Ben",
    ]
    assert transcript[at].text == QUESTION
    assert transcript[at].ref == pending[0].id  # the stored words, not a copy
    said = {e.turn_id: e.text for e in transcript if e.is_turn}
    assert "on-call rota" in said["r1:summary:Chair"]  # the moderator addresses it
    assert [QUESTION in json.dumps(body) for body in asked] == [False, False, True, True]  # r1, then r2
    assert "on-call rota" in said["r2:speech:Ana"]  # the next speakers saw it
    assert "on-call rota" in said["r2:speech:Ben"]


def test_words_for_a_paused_room_join_when_it_resumes(db_url: str, tmp_path: Path) -> None:
    # covers: B9, L10
    with running("run", str(room_file(tmp_path, board(150))), "--save", "--json") as run:
        room_id = run.wait_for(lambda e: e["type"] == "room_started")["room_id"]
        run.wait_for(lambda e: e["type"] == "turn_completed" and e["kind"] == "opening")
        run.proc.send_signal(signal.SIGINT)
        returncode, _, stderr = run.finish()
    assert returncode == 130, stderr
    result = moot("intervene", room_id, QUESTION)
    assert result.returncode == 0, result.stderr
    assert f"takes it in when it runs again (moot resume {room_id})" in result.stdout
    shown = moot("show", room_id)
    assert shown.returncode == 0, shown.stderr
    assert "Opening" in shown.stdout
    assert "(interrupted)." in shown.stdout  # "Discussion paused at round N (interrupted)."
    assert shown.stdout.rstrip().endswith(f"resume with: moot resume {room_id}")
    assert QUESTION not in shown.stdout  # not in the transcript until the room takes it in
    resumed = moot("resume", room_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    events = json_lines(resumed.stdout)
    added = index(events, "intervention_added", text=QUESTION)
    assert added < next(i for i, e in enumerate(events) if e["type"] == "turn_started")
    assert room(db_url, room_id).status == "completed"


def test_a_line_typed_into_a_saved_run_is_stored_then_taken_in(db_url: str, tmp_path: Path) -> None:
    # covers: B9
    with HeldModel() as model:
        args = ["run", str(room_file(tmp_path, held_members(model))), "--save", "--json", "--interactive"]
        with running(*args) as run:
            room_id = run.wait_for(lambda e: e["type"] == "room_started", HANG)["room_id"]
            run.wait_for(
                lambda e: e["type"] == "turn_started" and e["kind"] == "speech", HANG
            )  # held in flight
            assert run.proc.stdin is not None
            run.proc.stdin.write("   \n/stop\n")
            run.proc.stdin.flush()
            until_stored(db_url, room_id, "/stop")
            model.release()
            returncode, events, stderr = run.finish(timeout=HANG)
    assert returncode == 0, stderr
    assert events[-1]["stop_reason"] == "stop_command"
    [stop] = [e for e in read(db_url, lambda s: s.load_transcript(room_id)) if e.kind == "intervention"]
    assert (stop.text, stop.command) == ("/stop", "stop")
    assert stop.ref is not None  # it went through the store first
    assert room(db_url, room_id).conclusion is not None
