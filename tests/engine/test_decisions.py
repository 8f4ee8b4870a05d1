"""Positions, consensus, budgets and termination conditions: decisions a person can trust."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from moot.durable import DurableRun
from moot.engine import Run, Steerable
from moot.export import to_json, to_markdown
from moot.models import Completion, ModelRequest, Usage
from moot.models.testing import FunctionModel
from moot.positions import Position, PositionsInvalid, consensus_score, parse_positions
from moot.pricing import priced
from moot.protocols import PROTOCOLS, Finish, Step, get_protocol
from moot.spec import ModelSpec, ProtocolName, RoomSpec
from moot.termination import (
    AnyOf,
    MaxRounds,
    State,
    consensus,
    cost_budget,
    max_rounds,
    stop_command,
    time_budget,
    token_budget,
)
from moot.transcript import Entry, Transcript

from .helpers import of_type, room, run_all, turn_order

MEMBERS = ("Alice", "Bob", "Carol")
CONCLUSION = json.dumps(
    {"summary": "We go.", "decision_advice": "Go.", "consensus_points": ["a"], "dissent_points": []}
)


def _positions(stance: str, confidence: float, names: tuple[str, ...] = MEMBERS) -> str:
    block = {
        "positions": [
            {"agent": n, "stance": stance, "confidence": confidence, "changed": False, "reason": "r"}
            for n in names
        ]
    }
    return f"Summary of the round.\n\n```json\n{json.dumps(block)}\n```"


def _chair(summaries: list[str]) -> FunctionModel:
    """A chair whose summaries come from a list, in order; it opens and concludes plainly."""
    said = iter(summaries)

    def reply(request: ModelRequest) -> str:
        assert request.context is not None
        kind = request.context.kind
        if kind == "summary":
            return next(said)
        return CONCLUSION if kind == "conclusion" else "Welcome."

    return FunctionModel(reply, label="chair")


def _member() -> FunctionModel:
    return FunctionModel(lambda request: "I support it.", label="member")


def _board(**extra: Any) -> RoomSpec:
    return room("board", names=MEMBERS, moderator="Chair", rounds=4, **extra)


# ---- termination conditions --------------------------------------------------------------------------


def test_conditions_combine_with_or_and_the_first_named_wins() -> None:
    combined = (
        max_rounds(3) | stop_command | token_budget(10) | cost_budget(1.0) | time_budget(60) | consensus(0.85)
    )
    assert isinstance(combined, AnyOf) and len(combined.conditions) == 6
    assert isinstance(combined.conditions[0], MaxRounds)
    spec = room("sequential", names=("A",))
    transcript = Transcript(
        [Entry(kind="speech", round=1, speaker="A", text="x", usage=Usage(input_tokens=20, output_tokens=0))]
    )
    transcript.add(
        Entry(kind="intervention", round=1, slot=1000, speaker="user", text="/stop", command="stop")
    )
    assert combined.check(State(spec, transcript)) == "stop_command"
    assert (token_budget(10) | stop_command).check(State(spec, transcript)) == "token_budget"
    assert time_budget(60).check(State(spec, transcript, elapsed=59.0)) is None
    assert time_budget(60).check(State(spec, transcript, elapsed=60.0)) == "time_budget"


def test_a_run_takes_its_own_termination_conditions() -> None:
    spec = room("sequential", names=("A", "B"), rounds=3)
    protocol = get_protocol("sequential")
    step = protocol.next_step(spec, Transcript(), condition=max_rounds(0))
    assert isinstance(step, Finish) and step.reason == "max_rounds"


def test_every_protocol_a_room_file_names_is_one_registered_protocol() -> None:
    assert set(ProtocolName.__args__) == set(PROTOCOLS)


def test_the_protocol_says_who_chairs() -> None:
    assert _board().chair is not None and _board().chair.name == "Chair"  # type: ignore[union-attr]
    plain = room("sequential", names=MEMBERS)
    assert plain.chair is None and [a.name for a in plain.members] == list(MEMBERS)
    declared = room("sequential", names=MEMBERS, moderator="M")
    assert declared.chair is not None and declared.chair.name == "M"


# ---- positions and the consensus score ---------------------------------------------------------------


def test_positions_are_read_from_the_summarys_json_block() -> None:
    positions = parse_positions(_positions("support", 0.9), MEMBERS)
    assert [p.agent for p in positions] == list(MEMBERS)
    with pytest.raises(PositionsInvalid, match="no position for Carol"):
        parse_positions(_positions("support", 0.9, ("Alice", "Bob")), MEMBERS)
    with pytest.raises(PositionsInvalid, match="'Zed' is not a member"):
        parse_positions(_positions("support", 0.9, ("Alice", "Bob", "Carol", "Zed")), MEMBERS)
    with pytest.raises(PositionsInvalid, match="confidence"):
        parse_positions(_positions("support", 1.5), MEMBERS)
    with pytest.raises(PositionsInvalid, match="stance"):
        parse_positions(_positions("maybe", 0.5), MEMBERS)


def test_consensus_is_the_confidence_weighted_share_of_the_largest_stance() -> None:
    def p(stance: str, confidence: float) -> Position:
        return Position.model_validate({"agent": "x", "stance": stance, "confidence": confidence})

    assert consensus_score([]) == 0.0
    assert consensus_score([p("support", 1.0)] * 3) == 1.0
    assert consensus_score([p("support", 0.9), p("support", 0.9), p("oppose", 1.0)]) == 0.6
    assert consensus_score([p("undecided", 1.0)] * 2) == 0.0


async def test_a_converging_board_stops_early_on_consensus_and_still_concludes() -> None:
    chair = _chair([_positions("conditional", 0.5), _positions("support", 0.9)])
    models = {"Chair": chair, **{n: _member() for n in MEMBERS}}
    run, events = await run_all(_board(consensus=0.8), models)
    recorded = of_type(events, "positions_recorded")
    assert [(e.round, e.consensus, e.leading) for e in recorded] == [
        (1, 0.5, "conditional"),
        (2, 0.9, "support"),
    ]
    assert turn_order(events)[-2:] == [(2, "summary", "Chair"), (2, "conclusion", "Chair")]
    [completed] = of_type(events, "room_completed")
    assert completed.stop_reason == "consensus" and completed.rounds_run == 2
    [concluded] = of_type(events, "room_concluded")
    assert [(p.agent, p.stance) for p in concluded.positions] == [(n, "support") for n in MEMBERS]
    assert run.result is not None and run.result.stop_reason == "consensus"
    assert [p.stance for p in run.result.positions] == ["support"] * 3


async def test_invalid_positions_are_asked_for_again_with_the_error() -> None:
    chair = _chair(
        [_positions("support", 0.9, ("Alice", "Bob")), _positions("support", 0.9)]  # Carol left out first
    )
    models = {"Chair": chair, **{n: _member() for n in MEMBERS}}
    _, events = await run_all(_board(consensus=0.8), models)
    [restarted] = of_type(events, "turn_restarted")
    assert "no position for Carol" in restarted.reason
    retry = [r for r in chair.requests if r.context and r.context.kind == "summary"][1]
    assert "no position for Carol" in retry.messages[-1].content
    assert of_type(events, "room_completed")[0].stop_reason == "consensus"


async def test_a_summary_without_positions_is_kept_when_nothing_depends_on_them() -> None:
    chair = _chair(["Plain summary."] * 4)
    models = {"Chair": chair, **{n: _member() for n in MEMBERS}}
    _, events = await run_all(_board(), models)
    assert not of_type(events, "turn_restarted") and not of_type(events, "positions_recorded")
    assert of_type(events, "room_completed")[0].stop_reason == "max_rounds"


async def test_a_positions_block_cut_off_by_the_token_limit_is_left_out_unless_the_room_needs_it() -> None:
    cut = _positions("support", 0.9)[:60]  # the block begun, the reply's token limit reached

    class Cut(FunctionModel):
        async def _play(self, request: ModelRequest):  # type: ignore[no-untyped-def,override]
            async for item in super()._play(request):
                length = (
                    isinstance(item, Completion) and request.context and request.context.kind == "summary"
                )
                yield replace(item, finish_reason="length") if length else item

    chair = Cut(lambda request: cut if request.context and request.context.kind == "summary" else
                CONCLUSION if request.json_output else "Welcome.", label="chair")  # fmt: skip
    _, events = await run_all(_board(), {"Chair": chair, **{n: _member() for n in MEMBERS}})
    assert not of_type(events, "turn_restarted") and not of_type(events, "positions_recorded")
    assert [e.text for e in of_type(events, "turn_completed") if e.kind == "summary"] == [cut] * 4

    chair.requests.clear()
    _, events = await run_all(_board(consensus=0.8), {"Chair": chair, **{n: _member() for n in MEMBERS}})
    assert "the reply holds no JSON object with positions" in of_type(events, "turn_restarted")[0].reason


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_the_simulated_chair_gives_positions_each_round(language: str) -> None:
    _, events = await run_all(room("board", names=MEMBERS, moderator="Chair", language=language))
    recorded = of_type(events, "positions_recorded")
    assert [e.round for e in recorded] == [1, 2]
    assert all({p.agent for p in e.positions} == set(MEMBERS) for e in recorded)
    [concluded] = of_type(events, "room_concluded")
    assert {p.agent for p in concluded.positions} == set(MEMBERS)


# ---- money and time ------------------------------------------------------------------------------------


def _priced_room(**limits: Any) -> RoomSpec:
    return RoomSpec.from_data(
        {
            "task": "t",
            "protocol": "sequential",
            "max_rounds": 3,
            "models": {
                "house": {
                    "provider": "openai",
                    "model": "house-model",
                    "base_url": "http://127.0.0.1:9/v1",
                    "api_key": "x",
                    "price": {"input_per_mtok": 1000, "output_per_mtok": 1000},
                }
            },
            "agents": [{"name": "A"}, {"name": "B"}, {"name": "M", "role": "moderator"}],
            "limits": limits,
        }
    )


def _fixed(text: str = "words") -> FunctionModel:
    return FunctionModel(lambda r: text, usage=Usage(input_tokens=100, output_tokens=100))


async def test_every_turn_and_the_room_carry_their_cost() -> None:
    spec = _priced_room()
    conclusion = FunctionModel(lambda r: CONCLUSION, usage=Usage(input_tokens=100, output_tokens=100))
    run, events = await run_all(spec, {"A": _fixed(), "B": _fixed(), "M": conclusion})
    completed_turns = of_type(events, "turn_completed")
    assert {t.usage.cost_usd for t in completed_turns} == {0.2}
    [completed] = of_type(events, "room_completed")
    assert completed.cost_usd == pytest.approx(0.2 * len(completed_turns))
    assert completed.usage_by_agent["A"].cost_usd == pytest.approx(0.6)
    assert run.result is not None and run.result.cost_usd == completed.cost_usd


async def test_exports_carry_the_cost_per_entry_agent_and_room() -> None:
    spec = _priced_room()
    conclusion = FunctionModel(lambda r: CONCLUSION, usage=Usage(input_tokens=100, output_tokens=100))
    run, _ = await run_all(spec, {"A": _fixed(), "B": _fixed(), "M": conclusion})
    document = json.loads(to_json("r", spec, run.transcript, status="completed"))
    assert document["cost_usd"] == pytest.approx(0.2 * 7)
    assert document["usage_by_agent"]["B"]["cost_usd"] == pytest.approx(0.6)
    assert {e["usage"]["cost_usd"] for e in document["entries"] if e["usage"]} == {0.2}
    assert "$1.4000" in to_markdown("r", spec, run.transcript, status="completed")


async def test_max_cost_stops_a_room_whose_next_turn_would_pass_it() -> None:
    spec = _priced_room(max_cost_usd=0.5)
    conclusion = FunctionModel(lambda r: CONCLUSION, usage=Usage(input_tokens=100, output_tokens=100))
    _, events = await run_all(spec, {"A": _fixed(), "B": _fixed(), "M": conclusion})
    # after A (0.20), B (0.20) and the conclusion (0.20) would pass 0.50: the chair concludes at once
    assert turn_order(events) == [(1, "speech", "A"), (1, "conclusion", "M")]
    [completed] = of_type(events, "room_completed")
    assert completed.stop_reason == "cost_budget"
    assert completed.cost_usd <= 0.5


async def test_max_seconds_stops_the_room_by_the_runs_clock() -> None:
    now = [0.0]

    def speak(request: ModelRequest) -> str:
        now[0] += 10.0  # each turn takes ten seconds of the injected clock
        return CONCLUSION if request.json_output else "words"

    spec = room("sequential", names=("A", "B"), moderator="M", rounds=5, limits={"max_seconds": 25})
    models = {n: FunctionModel(speak) for n in ("A", "B", "M")}
    run = Run(spec, models=models, clock=lambda: now[0])
    events = [e async for e in run]
    assert turn_order(events) == [
        (1, "speech", "A"),
        (1, "speech", "B"),
        (2, "speech", "A"),
        (2, "conclusion", "M"),
    ]
    assert of_type(events, "room_completed")[0].stop_reason == "time_budget"


async def test_a_time_budget_that_runs_out_mid_reply_cuts_the_reply() -> None:
    now = [0.0]

    async def slow(request: ModelRequest) -> str:
        return CONCLUSION if request.json_output else "word " * 40

    class Ticking(FunctionModel):
        async def _play(self, request: ModelRequest):  # type: ignore[no-untyped-def,override]
            async for item in super()._play(request):
                now[0] += 1.0  # every piece of the stream takes a second
                yield item

    spec = room("sequential", names=("A",), moderator="M", rounds=2, limits={"max_seconds": 5})
    run = Run(spec, models={"A": Ticking(slow, chunk=5), "M": FunctionModel(slow)}, clock=lambda: now[0])
    events = [e async for e in run]
    [warning] = [e for e in of_type(events, "room_warning") if e.code == "time_budget"]
    assert "A" in warning.message
    speech = next(e for e in of_type(events, "turn_completed") if e.kind == "speech")
    assert speech.finish_reason == "length" and len(speech.text) < len("word " * 40)
    assert of_type(events, "room_completed")[0].stop_reason == "time_budget"


def test_prices_come_from_the_table_the_room_or_nowhere() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=0)
    known = ModelSpec(provider="openai", model="gpt-4o-mini")
    assert priced(known, usage).cost_usd > 0
    local = ModelSpec(provider="openai", model="gpt-4o-mini", base_url="http://127.0.0.1:8080/v1")
    assert priced(local, usage).cost_usd == 0
    assert priced(ModelSpec(provider="simulated"), usage).cost_usd == 0
    own = ModelSpec.model_validate({"provider": "openai", "model": "x", "price": {"input_per_mtok": 2.5}})
    assert priced(own, usage).cost_usd == 2.5


# ---- one steering interface ----------------------------------------------------------------------------


async def test_run_and_durable_run_are_steered_alike() -> None:
    assert issubclass(Run, Steerable) and issubclass(DurableRun, Steerable)
    spec = room("sequential", names=("A", "B"), rounds=2)
    run: Steerable = Run(spec)
    said = False
    events = []
    async for event in run:
        events.append(event)
        if event.type == "turn_completed" and not said:
            said = True
            await run.say("Think of the users.")
            await run.end()
    assert [e.text for e in of_type(events, "intervention_added")] == ["Think of the users.", "/stop"]
    assert run.result is not None and run.result.stop_reason == "stop_command"


def test_a_step_is_what_the_engine_runs() -> None:
    step = get_protocol("board").next_step(_board(), Transcript())
    assert isinstance(step, Step) and step.turns[0].kind == "opening"
