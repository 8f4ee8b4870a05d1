"""`moot validate`: a summary for a good room file, the field and the file for a bad one."""

from __future__ import annotations

from pathlib import Path

import pytest

from moot.spec import load_room

from ._proc import moot

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    expected = {"board_zh.yaml", "board_en.yaml", "sequential.yaml", "parallel.yaml", "mixed.yaml"}
    assert expected <= {p.name for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_valid(path: Path) -> None:
    room = load_room(path)
    result = moot("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert room.protocol in result.stdout
    for agent in room.agents:
        assert agent.name in result.stdout


def test_mixed_example_warns_about_missing_keys() -> None:
    result = moot("validate", str(EXAMPLES[0].parent / "mixed.yaml"))
    assert result.returncode == 0
    assert "ANTHROPIC_API_KEY" in result.stdout


def test_a_broken_room_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "room.yaml"
    path.write_text(
        "task: x\nprotocol: round-robin\nagents:\n  - name: A\n    model: simulated\n", encoding="utf-8"
    )
    result = moot("validate", str(path))
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert "protocol" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_a_broken_room_is_bad_input_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "room.yaml"
    path.write_text("task: x\nagents:\n  - name: A\n    model: nowhere\n", encoding="utf-8")
    result = moot("run", str(path), "--json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{path}: agents[0].model" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_file_is_bad_input(tmp_path: Path) -> None:
    result = moot("validate", str(tmp_path / "nowhere.yaml"))
    assert result.returncode == 2
    assert "nowhere.yaml" in result.stderr


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "task: t\nprotocol: board\ndefault_model: simulated\nagents:\n"
            "  - {name: Chair, role: moderator}\n  - {name: Ann, active: false}\n",
            "no active member to speak besides the moderator Chair",
        ),
        (
            "task: t\ndefault_model: simulated\nagents:\n  - {name: Ann, active: false}\n",
            "no agent is active",
        ),
    ],
)
def test_hardening_13_validate_and_run_refuse_a_room_that_cannot_start(
    tmp_path: Path, body: str, expected: str
) -> None:
    path = tmp_path / "room.yaml"
    path.write_text(body, encoding="utf-8")
    validated = moot("validate", str(path))
    assert validated.returncode == 2, validated.stdout
    assert f"{path}: the room cannot run: {expected}" in validated.stderr
    assert "valid room" not in validated.stdout
    ran = moot("run", str(path), "--json")
    assert ran.returncode == 2, ran.stderr
    assert ran.stdout == ""  # refused before it started: not one event
    assert expected in ran.stderr


def test_hardening_13_validate_says_what_a_misspelt_key_meant(tmp_path: Path) -> None:
    path = tmp_path / "room.yaml"
    path.write_text("task: t\nagents:\n  - {name: Ann, modle: simulated}\n", encoding="utf-8")
    result = moot("validate", str(path))
    assert result.returncode == 2
    assert f"{path}: agents[0].modle: unknown field 'modle'; did you mean 'model'?" in result.stderr
