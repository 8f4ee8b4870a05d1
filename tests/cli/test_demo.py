"""`moot demo`: the offline meeting, as JSON lines and as the terminal view."""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from typing import Any

import pytest

from moot.positions import strip_positions

from ._proc import json_lines, moot

MEMBERS_EN = ["Maya", "Tomás", "Priya", "Jonas"]
MEMBERS_ZH = ["陈静", "王磊", "林晓", "赵敏"]
ROUND_EVENTS = {
    "round_started", "turn_started", "turn_delta", "turn_restarted", "turn_completed", "turn_failed",
    "round_progress", "intervention_added", "round_completed", "room_concluded", "room_paused",
}  # fmt: skip
_CJK = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")


def demo_events(*args: str) -> list[dict[str, Any]]:
    result = moot("demo", "--json", "--speed", "0", *args)
    assert result.returncode == 0, result.stderr
    return json_lines(result.stdout)


def turns(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "turn_completed" and e["kind"] == kind]


def of_type(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == type_]


def test_board_demo_json_is_a_whole_meeting() -> None:
    # covers: B4, B5, B6, B8, B11, B16, L13, L7
    events = demo_events("--protocol", "board", "--rounds", "2", "--lang", "en")

    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "room_started"
    assert events[-1]["type"] == "room_completed"
    started = events[0]
    assert started["simulated"] is True
    assert started["max_rounds"] == 2
    assert started["moderator"] == "Helen"
    assert [(a["name"], a["role"]) for a in started["agents"]] == [
        ("Helen", "moderator"),
        *((name, "member") for name in MEMBERS_EN),
    ]
    assert all(a["persona"] for a in started["agents"])

    assert [(t["round"], t["speaker"]) for t in turns(events, "opening")] == [(0, "Helen")]
    for round_ in (1, 2):
        speakers = [t["speaker"] for t in turns(events, "speech") if t["round"] == round_]
        assert sorted(speakers) == sorted(MEMBERS_EN)
    assert [(t["round"], t["speaker"]) for t in turns(events, "summary")] == [(1, "Helen"), (2, "Helen")]
    assert [(e["round"], e["max_rounds"]) for e in of_type(events, "round_started")] == [(1, 2), (2, 2)]
    assert [(e["round"], e["continues"]) for e in of_type(events, "round_completed")] == [
        (1, True),
        (2, False),
    ]

    [concluded] = of_type(events, "room_concluded")
    for field in ("summary", "decision_advice", "consensus_points", "dissent_points"):
        assert concluded[field], field
    assert concluded["fallback"] is False
    completed = events[-1]
    assert completed["rounds_run"] == 2
    assert completed["stop_reason"] == "max_rounds"
    assert set(completed["usage_by_agent"]) == {"Helen", *MEMBERS_EN}

    for event in events:
        if event["type"] in ROUND_EVENTS:
            assert isinstance(event["round"], int), event

    # L7: each turn starts, streams deltas (never the accumulated text), and ends with the whole text
    streamed: dict[str, list[str]] = defaultdict(list)
    started_at: dict[str, int] = {}
    for index, event in enumerate(events):
        if event["type"] == "turn_started":
            started_at[event["turn_id"]] = index
        elif event["type"] == "turn_delta":
            assert event["turn_id"] in started_at
            streamed[event["turn_id"]].append(event["text"])
        elif event["type"] == "turn_completed":
            assert "".join(streamed.pop(event["turn_id"])) == event["text"]
            assert event["usage"]["output_tokens"] > 0
    assert not streamed


def test_board_demo_in_chinese_speaks_chinese() -> None:
    # covers: B15
    events = demo_events("--lang", "zh")
    assert events[0]["language"] == "zh"
    speeches = turns(events, "speech") + turns(events, "summary") + turns(events, "opening")
    assert {t["speaker"] for t in turns(events, "speech")} == set(MEMBERS_ZH)
    for speech in speeches:
        words = strip_positions(speech["text"])  # a summary's positions block uses the schema's keys
        letters = [ch for ch in words if not ch.isspace()]
        assert len(_CJK.findall(words)) > 0.7 * len(letters), speech["text"]
    [concluded] = of_type(events, "room_concluded")
    assert _CJK.search(concluded["summary"])
    assert events[-1]["type"] == "room_completed"


def test_sequential_demo_runs_to_completion_in_turn_order() -> None:
    # covers: L5
    events = demo_events("--protocol", "sequential", "--rounds", "2")
    order = [(t["round"], t["speaker"]) for t in turns(events, "speech")]
    assert order == [(r, name) for r in (1, 2) for name in MEMBERS_EN]
    # one speaker at a time: no turn's deltas interleave with another's
    speakers = [e["speaker"] for e in events if e["type"] == "turn_delta"]
    runs = [name for i, name in enumerate(speakers) if i == 0 or speakers[i - 1] != name]
    assert runs == [t["speaker"] for t in turns(events, "speech")] + ["Helen"]
    assert not of_type(events, "round_progress")
    assert of_type(events, "room_concluded")
    assert events[-1] == {
        **events[-1],
        "type": "room_completed",
        "stop_reason": "max_rounds",
        "rounds_run": 2,
    }


def test_parallel_demo_merges_live_streams() -> None:
    # covers: L6
    result = moot("demo", "--json", "--protocol", "parallel", "--rounds", "2", "--speed", "400")
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    for round_ in (1, 2):
        progress = [e for e in of_type(events, "round_progress") if e["round"] == round_]
        assert progress[0]["states"] == dict.fromkeys(MEMBERS_EN, "pending")
        assert progress[-1]["completed"] == progress[-1]["total"] == 4
        assert set(progress[-1]["states"].values()) == {"completed"}
        assert any("streaming" in e["states"].values() for e in progress)
        deltas = [e["speaker"] for e in events if e["type"] == "turn_delta" and e["round"] == round_]
        switches = sum(1 for a, b in itertools.pairwise(deltas) if a != b)
        assert switches > len(MEMBERS_EN), "the speakers' streams should interleave"
    assert sorted(t["speaker"] for t in turns(events, "speech") if t["round"] == 2) == sorted(MEMBERS_EN)
    assert of_type(events, "room_concluded")
    assert events[-1]["type"] == "room_completed"


@pytest.mark.parametrize(
    ("lang", "labels"),
    [
        (
            "en",
            ["SIMULATED", "Conclusion", "Summary", "Decision advice", "Consensus", "Dissent", "Round 2 of 2"],
        ),
        ("zh", ["模拟", "结论", "总结", "决策建议", "共识", "分歧", "第 2 轮"]),
    ],
)
def test_terminal_view_names_everyone_and_labels_the_conclusion(lang: str, labels: list[str]) -> None:
    result = moot("demo", "--speed", "0", "--lang", lang)
    assert result.returncode == 0, result.stderr
    for name in ["Helen", *MEMBERS_EN] if lang == "en" else ["周老师", *MEMBERS_ZH]:
        assert name in result.stdout
    for label in labels:
        assert label in result.stdout
    assert '"type"' not in result.stdout


def test_bad_option_is_bad_input() -> None:
    result = moot("demo", "--protocol", "round-robin")
    assert result.returncode == 2
