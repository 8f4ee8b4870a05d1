"""`moot run`: a room file run with its own models, steered from stdin, paused by Ctrl-C."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import pytest

from ._proc import json_lines, moot, running

SEQUENTIAL_ROOM = """
task: Should we rewrite the billing service?
protocol: sequential
max_rounds: 2
models:
  sim: {provider: simulated, seed: 2, tokens_per_second: %s}
default_model: sim
agents:
  - {name: Ana, persona: a cautious engineer}
  - {name: Ben, persona: an ambitious product lead}
  - {name: Cleo, persona: a finance lead}
  - {name: Chair, role: moderator, persona: a neutral chair}
"""


def room_file(tmp_path: Path, speed: float) -> Path:
    path = tmp_path / "room.yaml"
    path.write_text(SEQUENTIAL_ROOM % speed, encoding="utf-8")
    return path


def test_run_a_room_file(tmp_path: Path) -> None:
    result = moot("run", str(room_file(tmp_path, 0)), "--json", "--rounds", "1")
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert events[0]["max_rounds"] == 1
    speeches = [e["speaker"] for e in events if e["type"] == "turn_completed" and e["kind"] == "speech"]
    assert speeches == ["Ana", "Ben", "Cleo"]
    assert events[-1]["type"] == "room_completed"


def test_a_stop_typed_on_stdin_ends_the_discussion_with_a_conclusion(tmp_path: Path) -> None:
    # covers: B9
    with running("run", str(room_file(tmp_path, 150)), "--json", "--interactive") as run:
        run.wait_for(lambda e: e["type"] == "turn_completed")
        assert run.proc.stdin is not None
        run.proc.stdin.write("/stop\n")
        run.proc.stdin.flush()
        returncode, events, stderr = run.finish()
    assert returncode == 0, stderr
    [stop] = [e for e in events if e["type"] == "intervention_added"]
    assert stop["stop"] is True
    assert stop["text"] == "/stop"
    speeches = [e for e in events if e["type"] == "turn_completed" and e["kind"] == "speech"]
    assert len(speeches) < 6
    concluded = [e for e in events if e["type"] == "room_concluded"]
    assert concluded
    assert concluded[0]["summary"]
    assert events[-1]["type"] == "room_completed"
    assert events[-1]["stop_reason"] == "stop_command"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_hardening_13_ctrl_c_stops_an_unsaved_run_cleanly_says_so_and_exits_130() -> None:
    # covers: L11
    with running("demo", "--json", "--speed", "50") as run:
        run.wait_for(lambda e: e["type"] == "turn_delta")
        run.proc.send_signal(signal.SIGINT)
        returncode, events, stderr = run.finish()
    assert returncode == 130, stderr
    assert events[-1]["type"] == "room_paused"
    assert events[-1]["reason"] == "interrupted"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    # nothing was stored, so nothing can be resumed: the person is not told it was paused
    assert "stopped at round" in stderr
    assert "cannot be resumed" in stderr
    assert "paused" not in stderr
    assert "--save" not in stderr  # `moot demo` has no --save to suggest
    assert "Traceback" not in stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_hardening_13_ctrl_c_on_an_unsaved_room_file_says_how_to_make_it_resumable(tmp_path: Path) -> None:
    with running("run", str(room_file(tmp_path, 50)), "--json") as run:
        run.wait_for(lambda e: e["type"] == "turn_delta")
        run.proc.send_signal(signal.SIGINT)
        returncode, events, stderr = run.finish()
    assert returncode == 130, stderr
    assert events[-1]["type"] == "room_paused"
    assert "stopped at round" in stderr
    assert "paused" not in stderr
    assert "Run it with --save to be able to resume it later." in stderr


def test_a_failed_room_exits_1(tmp_path: Path) -> None:
    # covers: L12 (at the CLI: a room-level failure is exit code 1)
    with socket.socket() as probe:  # a loopback port nobody listens on: every call is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "room.yaml"
    path.write_text(
        f"""
task: Anyone there?
protocol: sequential
max_rounds: 2
models:
  dead: {{provider: openai, base_url: "http://127.0.0.1:{port}/v1", api_key: x, max_retries: 0}}
agents:
  - {{name: Ana, model: dead}}
  - {{name: Ben, model: dead}}
""",
        encoding="utf-8",
    )
    result = moot("run", str(path), "--json")
    assert result.returncode == 1, result.stderr
    events = json_lines(result.stdout)
    assert [e["type"] for e in events if e["type"] != "room_started"] == [
        "round_started", "turn_started", "turn_failed", "turn_started", "turn_failed", "round_completed",
        "room_failed",
    ]  # fmt: skip
    assert events[-1]["error_type"] == "AllMembersFailed"
