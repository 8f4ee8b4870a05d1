"""Each of the newer protocols, killed mid-protocol (SIGKILL) and resumed, ends with the transcript of an
uninterrupted run: every turn once, with the same words."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cli._proc import json_lines, moot

from ._support import HANG, board, room, room_file, stored_turns
from .test_crash import Predicate, assert_complete_once, cut, delta_of, nth

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# where to cut each protocol, deep in the step that makes it what it is (each predicate counts: made anew per test)
CUTS: dict[str, tuple[Callable[[], Predicate], dict[str, Any]]] = {
    "council": (lambda: nth(2, delta_of("ranking")), {"max_rounds": 1}),  # one round: answers, reviews, synthesis
    "selector": (lambda: nth(3, lambda e: e["type"] == "turn_delta" and e["turn_id"].startswith("r2:")), {"max_rounds": 3}),
    "delphi": (lambda: nth(3, lambda e: e["type"] == "turn_delta" and e["turn_id"].startswith("r2:")), {}),
    "debate": (lambda: nth(3, lambda e: e["type"] == "turn_delta" and e["turn_id"] == "r1:speech:Ben"), {"sides": {"Ana": "proposition", "Ben": "opposition"}}),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("protocol", sorted(CUTS))
def test_a_protocol_killed_mid_step_resumes_to_the_same_transcript(
    protocol: str, db_url: str, tmp_path: Path
) -> None:
    make, changes = CUTS[protocol]
    at = make()
    data = board(200, protocol=protocol, **changes)
    path = room_file(tmp_path, data)
    returncode, events, stderr = cut(["run", str(path), "--save", "--json"], at, signal.SIGKILL)
    assert returncode == -signal.SIGKILL, stderr
    room_id = events[0]["room_id"]
    assert room(db_url, room_id).status == "running"  # as the killed process left it
    cut_turn = next(e["turn_id"] for e in reversed(events) if e["type"] == "turn_delta")
    assert cut_turn not in {turn for turn, _ in stored_turns(db_url, room_id)}
    result = moot("resume", room_id, "--json", timeout=HANG)
    assert result.returncode == 0, result.stderr
    resumed = json_lines(result.stdout)
    assert resumed[0]["resumed"] is True and resumed[-1]["type"] == "room_completed"
    assert_complete_once(db_url, room_id, data)
