"""A stored room survives its process: killed or paused anywhere, resumed, it ends with every turn once.

Each test drives the real `moot` command in subprocesses on the slow simulated model and cuts it at chosen
events; the stored transcript is then compared with an uninterrupted run of the same room.
"""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cli._proc import Running, json_lines, moot, running
from moot.events import TurnCompleted
from moot.testing.servers import FakeLLMServer, Fault

from ._support import HANG, HeldModel, board, read, reference_turns, room, room_file, stored_turns

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

Predicate = Callable[[dict[str, Any]], bool]


def nth(count: int, predicate: Predicate) -> Predicate:
    """True at the `count`-th event that satisfies `predicate`: a point some way into a stream."""
    seen = 0

    def check(event: dict[str, Any]) -> bool:
        nonlocal seen
        seen += predicate(event)
        return seen >= count

    return check


def delta_of(kind: str) -> Predicate:
    return lambda e: e["type"] == "turn_delta" and f":{kind}:" in e["turn_id"]


def event_of(type_: str, kind: str) -> Predicate:
    return lambda e: e["type"] == type_ and e["kind"] == kind


def until(condition: Callable[[], bool]) -> None:
    """Waits until `condition()` holds, looking again every 0.05 s (HANG: a hang fails the test)."""
    deadline = time.monotonic() + HANG
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


def narrow(run: Running) -> None:
    """Shrinks the pipe that carries the command's events to one page (on Linux).

    The command writes each event and flushes it: with a pipe this small it blocks a couple of dozen events
    past the last one this test has read, however slowly this test runs. So a cut aimed at an event lands
    right after it, and not seconds later on a busy machine.
    """
    import fcntl  # POSIX only, as are these tests

    assert run.proc.stdout is not None
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        fcntl.fcntl(run.proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, 4096)


def cut(args: list[str], at: Predicate, how: signal.Signals) -> tuple[int, list[dict[str, Any]], str]:
    """Runs `moot ARGS`, sends `how` once an event satisfies `at`, and returns what `finish` returns."""
    with running(*args) as run:
        narrow(run)
        run.wait_for(at, timeout=HANG)
        run.proc.send_signal(how)
        return run.finish(timeout=HANG)


def assert_complete_once(url: str, room_id: str, data: dict[str, Any]) -> None:
    """Every turn once, in the order and with the words of an uninterrupted run; completed, concluded."""
    turns = stored_turns(url, room_id)
    reference = reference_turns(data)
    assert [t for t, _ in turns] == [t for t, _ in reference]
    assert turns == reference  # a turn run again saw the same history as in the uninterrupted run
    transcript = read(url, lambda s: s.load_transcript(room_id))
    [task] = [e for e in transcript if e.kind == "task"]  # L4: the task once, as round 0
    assert (task.round, task.text) == (0, data["task"])
    assert all(e.round >= 0 and e.speaker and e.created_at for e in transcript)  # L8
    record = room(url, room_id)
    assert record.status == "completed"  # B1
    assert record.round == data["max_rounds"]
    assert record.lease is None
    assert record.conclusion is not None  # B16
    assert record.conclusion.summary
    assert record.conclusion.decision_advice
    events = read(url, lambda s: s.events_after(room_id, 0))
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))
    completed = Counter(e.turn_id for e in events if isinstance(e, TurnCompleted))
    assert set(completed) == {t for t, _ in reference}
    assert set(completed.values()) == {1}


@pytest.mark.slow
def test_a_room_killed_anywhere_resumes_with_every_turn_once(db_url: str, tmp_path: Path) -> None:
    # covers: L10, L4, L8, L13, B1, B16
    data = board(200)
    path = room_file(tmp_path, data)
    # where to kill, and the turns that must be stored (and must not be) once it is dead
    points = [
        ("mid-stream, in a member's speech", nth(3, delta_of("speech")), "r0:opening:Chair", "r1:summary:Chair"),
        ("during a round summary", nth(2, delta_of("summary")), "r1:speech:Ben", "r1:summary:Chair"),
        ("between turns, after a summary", event_of("turn_completed", "summary"), "r1:summary:Chair", "r2:summary:Chair"),
        ("during the conclusion", event_of("turn_started", "conclusion"), "r2:summary:Chair", "r2:conclusion:Chair"),
    ]  # fmt: skip
    room_id = ""
    for number, (where, at, stored, not_yet) in enumerate(points):
        args = ["resume", room_id, "--json"] if room_id else ["run", str(path), "--save", "--json"]
        returncode, events, stderr = cut(args, at, signal.SIGKILL)
        assert returncode == -signal.SIGKILL, f"{where}: {stderr}"
        assert events[0]["type"] == "room_started"
        assert events[0]["resumed"] is (number > 0), where
        room_id = events[0]["room_id"]
        record = room(db_url, room_id)
        assert record.status == "running", where  # as the killed process left it
        assert record.lease is not None
        assert not record.lease.alive, where  # its owner is gone: stale at once (L14)
        turns = {turn for turn, _ in stored_turns(db_url, room_id)}
        assert stored in turns, where
        assert not_yet not in turns, where
        if number == 0:
            listed = moot("rooms")
            assert listed.returncode == 0, listed.stderr
            assert room_id in listed.stdout
            assert "interrupted" in listed.stdout
    result = moot("resume", room_id, "--json", timeout=HANG)
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert events[0]["type"] == "room_started"
    assert events[0]["resumed"] is True
    assert events[-1]["type"] == "room_completed"
    assert events[-1]["rounds_run"] == 2  # L13
    assert any(e["type"] == "room_concluded" for e in events)
    assert_complete_once(db_url, room_id, data)


@pytest.mark.slow
def test_a_room_paused_again_and_again_ends_complete(db_url: str, tmp_path: Path) -> None:
    # covers: L11, L10
    data = board(200)
    path = room_file(tmp_path, data)
    points = [
        nth(3, delta_of("opening")),
        event_of("turn_completed", "speech"),  # one member has spoken, the other is mid-speech
        event_of("turn_started", "summary"),
        event_of("turn_started", "conclusion"),
    ]
    room_id = ""
    for number, at in enumerate(points):
        args = ["resume", room_id, "--json"] if room_id else ["run", str(path), "--save", "--json"]
        returncode, events, stderr = cut(args, at, signal.SIGINT)
        room_id = events[0]["room_id"]
        assert returncode == 130, stderr
        assert events[0]["resumed"] is (number > 0)
        assert events[-1]["type"] == "room_paused"
        assert events[-1]["reason"] == "interrupted"
        assert f"resume with: moot resume {room_id}" in stderr
        assert "Traceback" not in stderr
        record = room(db_url, room_id)
        assert record.status == "paused"
        assert record.lease is None  # a clean pause lets go of the room
    result = moot("resume", room_id, "--json", timeout=HANG)
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout)[-1]["type"] == "room_completed"
    assert_complete_once(db_url, room_id, data)


@pytest.mark.slow
def test_two_resumes_at_once_run_the_room_once(db_url: str, tmp_path: Path) -> None:
    # covers: L14
    with HeldModel(
        heard
    ) as members:  # held: whichever resume runs the room cannot end it before the other tries
        data = board(0)
        data["models"] = {**data["models"], "members": members.spec}
        data["agents"] = [
            {**a, "model": "members"} if a.get("role") != "moderator" else a for a in data["agents"]
        ]
        path = room_file(tmp_path, data)
        returncode, events, stderr = cut(
            ["run", str(path), "--save", "--json"], event_of("turn_completed", "opening"), signal.SIGINT
        )
        assert returncode == 130, stderr
        room_id = events[0]["room_id"]
        with running("resume", room_id, "--json") as first, running("resume", room_id, "--json") as second:
            until(lambda: first.proc.poll() is not None or second.proc.poll() is not None)
            members.release()
            outcomes = [first.finish(timeout=HANG), second.finish(timeout=HANG)]
        codes = sorted(code for code, _, _ in outcomes)
        assert codes == [0, 3], outcomes
        [(_, ran, _)] = [o for o in outcomes if o[0] == 0]
        [(_, busy_events, busy_err)] = [o for o in outcomes if o[0] == 3]
        assert ran[-1]["type"] == "room_completed"
        assert busy_events == []
        assert f"room {room_id} is already running" in busy_err
        assert "Traceback" not in busy_err
        assert_complete_once(db_url, room_id, data)


def heard(body: dict[str, Any]) -> str:
    """A member's words, which differ with what it was shown: a turn run again must see the same history."""
    shown = sum(len(str(m.get("content", ""))) for m in body["messages"])
    return f"Having read {shown} characters of this discussion, I would try a four-day week for a quarter."


def test_hardening_9_watchers_of_a_turn_cut_by_a_crash_are_told_to_drop_its_text(
    db_url: str, tmp_path: Path
) -> None:
    # covers: L10
    with FakeLLMServer(reply_tokens=12) as server:
        server.faults.append(Fault.hang(HANG, after_chunks=2))  # the opening streams two pieces, then stalls
        data = board(0)
        chair = {
            "provider": "openai",
            "model": "fake-model",
            "base_url": f"{server.url}/v1",
            "api_key": "sk-x",
        }
        data["models"] = {**data["models"], "chair": chair}
        data["agents"] = [
            {**a, "model": "chair"} if a.get("role") == "moderator" else a for a in data["agents"]
        ]
        with running("run", str(room_file(tmp_path, data)), "--save", "--json") as run:
            room_id = run.wait_for(lambda e: e["type"] == "room_started", HANG)["room_id"]
            seen = run.wait_for(delta_of("opening"), HANG)
            until(lambda: "r0:opening:Chair" in read(db_url, lambda s: s.partials(room_id)))
            run.proc.send_signal(signal.SIGKILL)
            run.finish(timeout=HANG)
        result = moot("resume", room_id, "--json", timeout=HANG)
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert events[0]["type"] == "room_started"
    restarted = events[1]
    assert restarted["type"] == "turn_restarted"
    assert (restarted["turn_id"], restarted["discard"]) == ("r0:opening:Chair", True)
    assert restarted["seq"] > seen["seq"]
    again = next(i for i, e in enumerate(events) if e["type"] == "turn_started")
    assert events[again]["turn_id"] == "r0:opening:Chair"  # it runs again after watchers were told
    assert events[-1]["type"] == "room_completed"
