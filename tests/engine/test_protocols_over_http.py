"""council, selector, delphi and debate against a local OpenAI-compatible server that records every request:
what each agent was shown, and that members stay anonymous where the protocol says so."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from moot.engine import Run
from moot.events import Event
from moot.protocols.selector import Selector
from moot.spec import RoomSpec
from moot.testing.servers import FakeLLMServer

from .helpers import of_type, turn_order

NAMES = ("Alice", "Bob", "Carol")
CONCLUSION = {"summary": "done", "decision_advice": "go", "consensus_points": ["a"], "dissent_points": ["b"]}


def _text(body: dict[str, Any]) -> str:
    return "\n".join(str(m["content"]) for m in body["messages"])


def _last(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


def _reply(body: dict[str, Any]) -> str:
    last = _last(body)
    if "JSON schema" in last:
        return json.dumps(CONCLUSION)
    if labels := re.search(r"using each of these labels once: ([A-Z, ]+)\.", last):
        return json.dumps({"ranking": labels.group(1).split(", ")[::-1], "reason": "clearer"})
    if "speak next" in last:
        return json.dumps({"next": "Carol", "reason": "she knows the market"})
    if "ESTIMATE" in last:
        return "My reasons are these.\nESTIMATE: 40" if "Round 1 of" in last else "Revised.\nESTIMATE: 50"
    return "We should act, and here is why."


def _room(server: FakeLLMServer, protocol: str, **extra: Any) -> RoomSpec:
    model = {"provider": "openai", "model": "fake-model", "base_url": server.url + "/v1", "api_key": "k"}
    agents: list[dict[str, Any]] = [{"name": n, "persona": "an expert", "model": "local"} for n in NAMES]
    agents.append({"name": "Chair", "role": "moderator", "model": "local"})
    return RoomSpec.from_data(
        {"task": "Should we open-source?", "protocol": protocol, "max_rounds": 2, "models": {"local": model},
         "agents": agents, **extra}
    )  # fmt: skip


async def _run(spec: RoomSpec, run: Run | None = None) -> list[Event]:
    run = run or Run(spec)
    events = [e async for e in run]
    assert run.result is not None and run.result.status == "completed", events[-1]
    return events


def _bodies(server: FakeLLMServer, marker: str) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if marker in _last(r.body)]


def _names_in(body: dict[str, Any]) -> set[str]:
    seen = json.dumps(body, ensure_ascii=False)
    return {name for name in (*NAMES, "Chair") if name in seen}


async def test_council_reviewers_rank_anonymous_answers_and_the_chair_synthesises() -> None:
    async with FakeLLMServer(reply=_reply) as server:
        events = await _run(_room(server, "council"))
    assert turn_order(events) == [
        *((1, "speech", n) for n in NAMES),
        *((1, "ranking", n) for n in NAMES),
        (1, "conclusion", "Chair"),
    ]
    answers = _bodies(server, "Answer the task on your own")
    assert len(answers) == 3
    for body in answers:  # answered independently: no other member's words
        assert "We should act" not in _text(body)
    reviews = _bodies(server, "Rank them from best to worst")
    assert len(reviews) == 3
    for body in reviews:
        assert _names_in(body) == set(), body  # no member's name anywhere in a reviewer's prompt
        assert _text(body).count("We should act") == 2  # the two other answers
    [aggregated] = of_type(events, "rankings_aggregated")
    assert {a.agent for a in aggregated.answers} == set(NAMES)
    assert sum(a.first_places for a in aggregated.answers) == 3
    assert all(a.reviews == 2 for a in aggregated.answers)
    [synthesis] = _bodies(server, "JSON schema")
    assert "first places" in _last(synthesis) and set(NAMES) <= _names_in(synthesis)


async def test_council_labels_are_shuffled_per_reviewer_and_stable_per_room() -> None:
    from moot.protocols.council import labels_for

    spec = RoomSpec.from_data(
        {"task": "t", "protocol": "council", "agents": [{"name": n, "model": "simulated"} for n in "ABCDEFG"]}
    )
    authors = list("BCDEFG")
    assert labels_for(spec, "A", authors) == labels_for(spec, "A", authors)
    orders = {tuple(labels_for(spec, reviewer, authors).values()) for reviewer in "AXYZ"}
    assert len(orders) > 1


async def test_selector_the_chair_names_each_next_speaker_with_a_reason() -> None:
    async with FakeLLMServer(reply=_reply) as server:
        events = await _run(_room(server, "selector"))
    assert turn_order(events) == [
        (1, "selection", "Chair"), (1, "speech", "Carol"), (2, "selection", "Chair"), (2, "speech", "Carol"),
        (2, "conclusion", "Chair"),
    ]  # fmt: skip
    selected = of_type(events, "speaker_selected")
    assert [(e.speaker, e.by, e.reason) for e in selected] == [("Carol", "chair", "she knows the market")] * 2
    [first, _] = _bodies(server, "speak next")
    assert "Alice, Bob, Carol" in _last(first)


async def test_selector_a_name_that_is_no_member_is_asked_again_then_round_robin() -> None:
    def reply(body: dict[str, Any]) -> str:
        return json.dumps({"next": "Zed"}) if "speak next" in _last(body) else _reply(body)

    async with FakeLLMServer(reply=reply) as server:
        events = await _run(_room(server, "selector", max_rounds=1))
    restarted = of_type(events, "turn_restarted")
    assert len(restarted) == 1 and "'Zed' is not a member" in restarted[0].reason
    [again] = [b for b in _bodies(server, "Answer again") if "Zed" in _text(b)]
    assert "'Zed' is not a member; name one of Alice, Bob, Carol" in _last(again)
    [selected] = of_type(events, "speaker_selected")
    assert (selected.speaker, selected.by) == ("Alice", "round_robin")
    assert (1, "speech", "Alice") in turn_order(events)


async def test_selector_takes_a_python_function_in_the_library() -> None:
    async with FakeLLMServer(reply=_reply) as server:
        spec = _room(server, "selector", max_rounds=3)
        order = iter(["Bob", "Bob", "Alice"])
        run = Run(spec, protocol=Selector(choose=lambda room, transcript, round_: next(order)))
        events = await _run(spec, run)
    assert [s for _, kind, s in turn_order(events) if kind == "speech"] == ["Bob", "Bob", "Alice"]
    assert [(e.speaker, e.by) for e in of_type(events, "speaker_selected")] == [
        ("Bob", "function"), ("Bob", "function"), ("Alice", "function"),
    ]  # fmt: skip
    assert not _bodies(server, "speak next")


async def test_delphi_panelists_see_only_anonymous_answers_and_the_estimates_converge() -> None:
    async with FakeLLMServer(reply=_reply) as server:
        events = await _run(_room(server, "delphi"))
    first = [b for b in _bodies(server, "ESTIMATE") if "Round 1 of" in _last(b)]
    second = [b for b in _bodies(server, "ESTIMATE") if "Round 2 of" in _last(b)]
    assert len(first) == len(second) == 3
    for body in first:
        assert "My reasons" not in _text(body) and _names_in(body) == set()
    for body in second:
        assert _names_in(body) == set(), body
        assert _text(body).count("Panelist") == 2 and "Your own answer in round 1" in _text(body)
    aggregated = of_type(events, "estimates_aggregated")
    assert [(e.round, e.median, e.spread) for e in aggregated] == [(1, 40.0, 0.0), (2, 50.0, 0.0)]
    assert aggregated[0].estimates == dict.fromkeys(NAMES, 40.0)
    [conclusion] = _bodies(server, "JSON schema")
    assert "median 40" in _last(conclusion) and "median 50" in _last(conclusion)


async def test_delphi_an_answer_without_a_number_is_asked_again() -> None:
    asked: list[str] = []

    def reply(body: dict[str, Any]) -> str:
        last = _last(body)
        if "ESTIMATE" in last and "Round 1 of" in last and len(asked) < 1:
            asked.append(last)
            return "No number from me."
        return _reply(body)

    async with FakeLLMServer(reply=reply) as server:
        events = await _run(_room(server, "delphi", max_rounds=1))
    assert any("ESTIMATE: <number>" in r.reason for r in of_type(events, "turn_restarted"))
    assert of_type(events, "estimates_aggregated")[0].median == 40.0
    assert server.requests


async def test_debate_sides_alternate_and_the_judge_decides() -> None:
    sides = {"Alice": "proposition", "Bob": "opposition", "Carol": "proposition"}
    async with FakeLLMServer(reply=_reply) as server:
        events = await _run(_room(server, "debate", sides=sides, max_rounds=1))
    assert turn_order(events) == [
        (1, "speech", "Alice"), (1, "speech", "Bob"), (1, "speech", "Carol"), (1, "conclusion", "Chair"),
    ]  # fmt: skip
    speeches = _bodies(server, "Debate, round")
    assert ["for the motion" in _last(b) for b in speeches] == [True, False, True]
    assert "against the motion" in _last(speeches[1])
    [judge] = _bodies(server, "JSON schema")
    assert "You judged this debate" in _last(judge)
    [concluded] = of_type(events, "room_concluded")
    assert concluded.decision_advice == "go"


@pytest.mark.parametrize("protocol", ["council", "selector", "delphi", "debate"])
@pytest.mark.parametrize("language", ["en", "zh"])
async def test_the_simulated_model_plays_every_role(protocol: str, language: str) -> None:
    from moot.demo import demo_room

    spec = demo_room(protocol, 2, language, tokens_per_second=0)  # type: ignore[arg-type]
    events = await _run(spec)
    assert not of_type(events, "turn_failed") and not of_type(events, "turn_restarted")
    [concluded] = of_type(events, "room_concluded")
    assert concluded.summary and not concluded.fallback
    expected = {
        "council": "rankings_aggregated",
        "selector": "speaker_selected",
        "delphi": "estimates_aggregated",
    }
    if protocol in expected:
        assert of_type(events, expected[protocol])


async def test_selector_manual_waits_for_a_persons_choice() -> None:
    async with FakeLLMServer(reply=_reply) as server:
        run = Run(_room(server, "selector", speaker_selection="manual"))
        choices = iter(["bob", "Nobody in particular", "/next Alice"])
        events: list[Event] = []
        async for event in run:
            events.append(event)
            if event.type == "choice_requested":
                assert event.options == list(NAMES)
                run.intervene(next(choices))
    assert run.result is not None and run.result.status == "completed"
    assert [s for _, kind, s in turn_order(events) if kind == "speech"] == ["Bob", "Alice"]
    assert len(of_type(events, "choice_requested")) == 3  # asked again after words that named nobody
    assert [(e.speaker, e.by) for e in of_type(events, "speaker_selected")] == [
        ("Bob", "person"),
        ("Alice", "person"),
    ]
    assert not _bodies(server, "speak next")


async def test_selector_manual_paused_while_waiting_asks_again_when_resumed() -> None:
    async with FakeLLMServer(reply=_reply) as server:
        spec = _room(server, "selector", speaker_selection="manual", max_rounds=1)
        first = Run(spec)
        async for event in first:
            if event.type == "choice_requested":
                first.pause("later")
        assert first.result is not None and first.result.status == "paused"
        second = Run(spec, transcript=first.transcript)
        async for event in second:
            if event.type == "choice_requested":
                second.intervene("Carol")
        assert second.result is not None and second.result.status == "completed"
        assert [e.speaker for e in second.transcript if e.kind == "speech"] == ["Carol"]
