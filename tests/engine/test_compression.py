"""Long histories are compressed by each model's token budget, and the digest is kept and reused (B10)."""

from __future__ import annotations

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
