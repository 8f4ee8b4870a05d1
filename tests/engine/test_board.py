"""Board meetings: opening, parallel members, summaries, the structured conclusion, and their failures."""

from __future__ import annotations

from moot.exceptions import ModelAuthError, TransientModelError
from moot.models import ModelRequest
from moot.models.testing import FunctionModel, ScriptedModel

from .helpers import of_type, room, run_all, turn_order

VALID = (
    '{"summary": "We agree to open-source", "decision_advice": "Do it in Q3", '
    '"consensus_points": ["community"], "dissent_points": ["support cost"]}'
)


def _chair(*, conclusion: str | list[str] = VALID) -> FunctionModel:
    answers = [conclusion] if isinstance(conclusion, str) else list(conclusion)

    def reply(request: ModelRequest) -> str:
        assert request.context is not None
        if request.context.kind == "conclusion":
            return answers.pop(0) if len(answers) > 1 else answers[0]
        return f"chair {request.context.kind} {request.context.round}"

    return FunctionModel(reply, label="chair")


async def test_board_runs_opening_rounds_summaries_and_conclusion_B4_B5_B6_B8_B11_B16() -> None:
    spec = room("board", moderator="Chair", rounds=2)
    run, events = await run_all(spec)

    started = events[0]
    assert started.type == "room_started"
    assert started.moderator == "Chair" and started.max_rounds == 2 and started.simulated
    assert [(a.name, a.role) for a in started.agents][-1] == ("Chair", "moderator")
    assert turn_order(events) == [
        (0, "opening", "Chair"),
        (1, "speech", "Alice"), (1, "speech", "Bob"), (1, "speech", "Carol"), (1, "summary", "Chair"),
        (2, "speech", "Alice"), (2, "speech", "Bob"), (2, "speech", "Carol"), (2, "summary", "Chair"),
        (2, "conclusion", "Chair"),
    ]  # fmt: skip
    assert [(e.round, e.continues) for e in of_type(events, "round_completed")] == [(1, True), (2, False)]
    concluded = of_type(events, "room_concluded")[0]
    assert concluded.summary and concluded.decision_advice
    assert concluded.consensus_points and concluded.dissent_points and not concluded.fallback
    assert events[-1].type == "room_completed"
    result = run.result
    assert result is not None and result.status == "completed" and result.rounds_run == 2
    assert (result.summary, result.dissent_points) == (concluded.summary, concluded.dissent_points)


async def test_board_prompts_carry_persona_round_and_instructions_B6_B5_B8() -> None:
    members = {n: FunctionModel(lambda r: "I support it, firmly.", label=f"fn-{n}") for n in ("Alice", "Bob")}
    chair = _chair()
    spec = room("board", names=("Alice", "Bob"), moderator="Chair", rounds=2)
    await run_all(spec, {**members, "Chair": chair})

    alice = members["Alice"].requests[1]
    assert "Alice's persona" in alice.system and "Alice's framework" in alice.system
    last = alice.messages[-1].content
    assert "Round 2 of 2" in last and "Should we open-source" in last
    assert "Stay in character" in last and "clear position" in last
    assert "[Chair] chair opening 0" in "\n".join(m.content for m in alice.messages)
    opening, summary1 = chair.requests[0], chair.requests[1]
    assert "core question" in opening.messages[-1].content and "Alice, Bob" in opening.messages[-1].content
    assert "agree" in summary1.messages[-1].content and "next round" in summary1.messages[-1].content
    assert [m.role for m in summary1.messages] == ["user", "assistant", "user"]  # its own opening (L9)
    assert "[Alice] I support it" in summary1.messages[-1].content
    conclusion = chair.requests[-1]
    assert conclusion.json_output and "consensus_points" in conclusion.messages[-1].content


async def test_moderator_stands_in_when_missing_and_no_active_agent_fails_B3() -> None:
    spec = room("board", names=("Alice", "Bob", "Carol"), rounds=1)
    run, events = await run_all(spec)
    warning = of_type(events, "room_warning")[0]
    assert warning.code == "moderator_substituted" and "Alice" in warning.message
    assert turn_order(events)[0] == (0, "opening", "Alice")
    assert {s for _, k, s in turn_order(events) if k == "speech"} == {"Bob", "Carol"}
    assert run.result is not None and run.result.status == "completed"

    inactive = room("board", names=("Alice",), rounds=1, agents=[{"name": "Alice", "active": False}])
    run, events = await run_all(inactive)
    assert [e.type for e in events] == ["room_started", "room_failed"]
    assert "no active agent" in events[-1].error
    assert run.result is not None and run.result.status == "error" and run.result.error


async def test_a_failed_speech_is_skipped_and_order_stays_stable_B7_L12() -> None:
    models = {
        "Alice": FunctionModel(lambda r: "Alice here", label="a", delay=0.02),
        "Bob": ScriptedModel([ModelAuthError("bad key for bob")] * 1 + ["Bob in round 2"], label="b"),
        "Carol": FunctionModel(lambda r: "Carol here", label="c"),
        "Chair": _chair(),
    }
    spec = room("board", moderator="Chair", rounds=2)
    run, events = await run_all(spec, models)
    failed = of_type(events, "turn_failed")
    assert [(f.round, f.speaker, f.error_type) for f in failed] == [(1, "Bob", "ModelAuthError")]
    assert "bad key for bob" in failed[0].error
    speeches = [(e.round, e.speaker) for e in run.transcript if e.kind == "speech" and not e.failed]
    assert speeches == [(1, "Alice"), (1, "Carol"), (2, "Alice"), (2, "Bob"), (2, "Carol")]
    summary = models["Chair"].requests[1].messages[-1].content
    assert "[Alice] Alice here" in summary and "[Carol] Carol here" in summary
    assert "[Bob]" not in summary  # the failure is not history
    assert run.result is not None and run.result.status == "completed"


async def test_conclusion_is_validated_and_asked_again_once_B11() -> None:
    chair = _chair(conclusion=["not json at all", VALID])
    spec = room("board", names=("Alice",), moderator="Chair", rounds=1)
    run, events = await run_all(spec, {"Chair": chair})
    restarted = [e for e in of_type(events, "turn_restarted") if e.speaker == "Chair"]
    assert len(restarted) == 1 and "not valid" in restarted[0].reason
    retry_prompt = chair.requests[-1].messages
    assert retry_prompt[-2].role == "assistant" and retry_prompt[-2].content == "not json at all"
    assert "could not be used" in retry_prompt[-1].content
    concluded = of_type(events, "room_concluded")[0]
    assert concluded.summary == "We agree to open-source" and not concluded.fallback

    chair = _chair(conclusion="Just prose, twice.")
    run, events = await run_all(spec, {"Chair": chair})
    concluded = of_type(events, "room_concluded")[0]
    assert concluded.summary == "Just prose, twice." and concluded.fallback
    assert run.result is not None and run.result.conclusion_is_fallback


async def test_when_every_member_fails_the_meeting_ends_with_a_fallback_conclusion_B12() -> None:
    failing = {n: ScriptedModel([TransientModelError("down")] * 5, label=f"x-{n}") for n in ("Alice", "Bob")}
    spec = room(
        "board", names=("Alice", "Bob"), moderator="Chair", rounds=3,
        models={"sim": {"provider": "simulated", "max_retries": 0}},
    )  # fmt: skip
    run, events = await run_all(spec, {**failing, "Chair": _chair()})
    assert [e.type for e in events][-3:] == ["turn_completed", "room_concluded", "room_failed"]
    assert of_type(events, "room_concluded")[0].round == 1
    assert "every member" in events[-1].error
    result = run.result
    assert result is not None and result.status == "error" and result.stop_reason == "all_failed"
    assert result.summary == "We agree to open-source"


async def test_conclusion_falls_back_to_the_history_when_no_model_answers_B12_B13() -> None:
    chair = ScriptedModel(
        ["Opening words", "Summary words", ModelAuthError("chair key revoked")], label="chair"
    )
    member = FunctionModel(lambda r: "A member's clear view", label="member")
    spec = room("board", names=("Alice",), moderator="Chair", rounds=1, limits={"fallback_models": False})
    run, events = await run_all(spec, {"Chair": chair, "Alice": member})
    concluded = of_type(events, "room_concluded")[0]
    assert concluded.fallback and "chair key revoked" in concluded.summary
    assert "A member's clear view" in concluded.summary
    assert run.result is not None and run.result.status == "completed"


async def test_an_unavailable_model_is_replaced_by_another_members_model_B13() -> None:
    spec = room(
        "board", names=("Alice", "Bob"), moderator="Chair", rounds=1,
        limits={"fallback_to_simulated": True},
        models={
            "broken": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "NOPE_KEY"},
            "sim": {"provider": "simulated"},
        },
        agents=[
            {"name": "Alice", "model": "broken"},
            {"name": "Bob", "model": "sim"},
            {"name": "Chair", "role": "moderator", "model": "sim"},
        ],
    )  # fmt: skip
    run, events = await run_all(spec)
    restarts = [e for e in of_type(events, "turn_restarted") if e.speaker == "Alice"]
    assert restarts and "NOPE_KEY" in restarts[0].reason and restarts[0].model == "simulated:simulated"
    alice = next(e for e in run.transcript if e.speaker == "Alice" and e.kind == "speech")
    assert not alice.failed and alice.model == "simulated:simulated"
    assert not of_type(events, "turn_failed")
    warning = [w for w in of_type(events, "room_warning") if w.code == "models_substituted"]
    assert len(warning) == 1 and "Alice through simulated:simulated" in warning[0].message
    [told] = [w for w in of_type(events, "room_warning") if w.code == "simulated_fallback"]
    assert "Alice may be heard through the offline simulated model" in told.message  # said at the start
    assert run.result is not None and run.result.substituted == {"Alice": "simulated:simulated"}
