"""Long histories are compressed by each model's token budget, and the digest is kept and reused (B10)."""

from __future__ import annotations

from collections.abc import Callable

from moot.exceptions import ContextTooLong, ModelRequestError
from moot.models import ModelRequest, estimate_tokens
from moot.models.testing import FunctionModel

from .helpers import of_type, room, run_all


async def test_history_is_compressed_by_token_budget_and_the_digest_is_reused_B10() -> None:
    digests: list[ModelRequest] = []

    def chair(request: ModelRequest) -> str:
        assert request.context is not None
        if request.context.kind == "digest":
            digests.append(request)
            return f"digest number {len(digests)}: everyone argued"
        return '{"summary": "s", "decision_advice": "a", "consensus_points": ["c"], "dissent_points": ["d"]}'

    def member(request: ModelRequest) -> str:
        assert request.context is not None
        return f"{request.context.speaker} round {request.context.round}: " + "point " * 12

    spec = room(
        "sequential", names=("Alice", "Bob", "Carol"), moderator="Chair", rounds=4,
        models={"small": {"provider": "simulated", "context_window": 500, "max_tokens": 40}},
    )  # fmt: skip
    members = {n: FunctionModel(member, label=n) for n in ("Alice", "Bob", "Carol")}
    run, events = await run_all(spec, {**members, "Chair": FunctionModel(chair, label="chair")})

    compressed = of_type(events, "history_compressed")
    assert compressed, "a long history was never compressed"
    assert all(c.tokens_after < c.tokens_before for c in compressed)
    assert len(run.transcript.digests) == len(compressed) == len(digests)
    later = [
        r for fn in members.values() for r in fn.requests if "Summary of the earlier" in r.messages[0].content
    ]
    assert len(later) > len(digests), "each digest should serve several later turns"
    budget = int(500 * 0.6) - 40
    for fn in members.values():
        for request in fn.requests:
            history = sum(estimate_tokens(m.content) for m in request.messages[:-1])
            assert history <= budget + 60, f"a prompt of {history} tokens exceeds the budget of {budget}"
    # The digest was made with the moderator's model, and the newest speeches stay word for word.
    last = "\n".join(m.content for m in members["Carol"].requests[-1].messages)
    assert "[Bob] Bob round 4" in last and "digest number" in last and "Bob round 1" not in last
    assert events[-1].type == "room_completed"


def _within(window: int, answer: Callable[[ModelRequest], str]) -> Callable[[ModelRequest], str]:
    """A model that refuses, as a server does, any request that does not fit its context window."""

    def reply(request: ModelRequest) -> str:
        need = estimate_tokens(request.system) + sum(estimate_tokens(m.content) + 4 for m in request.messages)
        if need + request.max_tokens > window:
            raise ContextTooLong(f"{need} prompt tokens and {request.max_tokens} to answer exceed {window}")
        return answer(request)

    return reply


def _speech(request: ModelRequest) -> str:
    assert request.context is not None
    if request.context.kind == "digest":
        return "digest: everyone argued for and against"
    words = 30 if request.context.speaker == "Alice" else 150  # the big models' speakers say a lot
    return f"{request.context.speaker} round {request.context.round}: " + "point " * words


async def test_hardening_11_the_history_is_compressed_by_a_model_whose_window_fits_B10() -> None:
    spec = room(
        "sequential",
        names=("Alice", "Bob", "Carol"),
        rounds=4,
        models={
            "small": {"provider": "simulated", "model": "small", "context_window": 600, "max_tokens": 60},
            "big": {"provider": "simulated", "model": "big", "context_window": 32_000, "max_tokens": 60},
        },
        agents=[
            {"name": "Alice", "model": "small"},
            {"name": "Bob", "model": "big"},
            {"name": "Carol", "model": "big"},
        ],
    )  # fmt: skip  -- no moderator: Alice, the first, chairs, and her window is the small one
    models = {
        "Alice": FunctionModel(_within(600, _speech), label="alice"),
        "Bob": FunctionModel(_within(32_000, _speech), label="bob"),
        "Carol": FunctionModel(_within(32_000, _speech), label="carol"),
    }
    run, events = await run_all(spec, models)

    assert not of_type(events, "turn_failed"), of_type(events, "turn_failed")[0].error
    compressed = of_type(events, "history_compressed")
    assert compressed and {c.model for c in compressed} == {"simulated:big"}
    assert not [w for w in of_type(events, "room_warning") if w.code == "history_truncated"]
    assert len([e for e in run.transcript if e.kind == "speech"]) == 12
    assert any("everyone argued" in m.content for r in models["Alice"].requests for m in r.messages)


async def test_hardening_11_when_no_summary_can_be_made_the_oldest_entries_are_left_out_B10() -> None:
    def refuse_digests(request: ModelRequest) -> str:
        assert request.context is not None
        if request.context.kind == "digest":
            raise ModelRequestError("summaries are not supported here")
        return f"{request.context.speaker} round {request.context.round}: " + "point " * 30

    spec = room(
        "sequential", names=("Alice", "Carol"), rounds=5,
        models={"small": {"provider": "simulated", "model": "small", "context_window": 600, "max_tokens": 60}},
    )  # fmt: skip
    models = {n: FunctionModel(_within(600, refuse_digests), label=n) for n in ("Alice", "Carol")}
    run, events = await run_all(spec, models)

    assert not of_type(events, "turn_failed"), of_type(events, "turn_failed")[0].error
    assert events[-1].type == "room_completed"
    warnings = {w.code: w for w in of_type(events, "room_warning")}
    assert (
        "compression_failed" in warnings
        and "summaries are not supported here" in warnings["compression_failed"].message
    )
    assert "left out" in warnings["history_truncated"].message
    assert not run.transcript.digests
    speeches = [r for r in models["Alice"].requests if r.context is not None and r.context.kind == "speech"]
    last = "\n".join(m.content for m in speeches[-1].messages)
    assert "Carol round 4" in last and "Carol round 1" not in last  # the newest stay, the oldest went
