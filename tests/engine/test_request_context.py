"""A protocol builds each turn's request from one context the engine makes for the turn."""

from __future__ import annotations

from moot.engine import Run
from moot.models import ModelRequest
from moot.models.testing import FunctionModel
from moot.protocols import RequestContext
from moot.protocols.sequential import Sequential

from .helpers import collect, of_type, room


class _Asking(Sequential):
    """A protocol written in code: its own speech prompt, and every context it was given."""

    def __init__(self) -> None:
        self.asked: list[RequestContext] = []

    def request(self, ctx: RequestContext) -> ModelRequest:
        self.asked.append(ctx)
        if ctx.turn.kind != "speech":
            return super().request(ctx)
        return ctx.build(instruction_text=f"Speak now, {ctx.agent.name}, round {ctx.turn.round}.")


async def test_a_protocols_request_reads_the_turn_its_history_and_limits_from_one_context_B10() -> None:
    def member(request: ModelRequest) -> str:
        assert request.context is not None
        if request.context.kind == "digest":
            return "digest: everyone argued"
        return f"{request.context.speaker} round {request.context.round}: " + "point " * 12

    spec = room(
        "sequential", names=("Alice", "Bob"), rounds=4,
        models={"small": {"provider": "simulated", "context_window": 500, "max_tokens": 40}},
    )  # fmt: skip
    models = {n: FunctionModel(member, label=n) for n in ("Alice", "Bob")}
    protocol = _Asking()
    run = Run(spec, models=models, protocol=protocol)
    events = await collect(run)

    assert events[-1].type == "room_completed"
    assert of_type(events, "history_compressed"), "the history was never compressed"
    speeches = [(e.round, e.speaker) for e in of_type(events, "turn_completed")]
    assert sorted({(c.turn.round, c.agent.name) for c in protocol.asked}) == sorted(speeches)
    for ctx in protocol.asked:
        assert ctx.agent.name == ctx.turn.speaker
        assert (ctx.max_tokens, ctx.temperature, ctx.room) == (40, None, spec)
        assert ctx.transcript is run.transcript
        assert all(e.key < ctx.turn.sees for e in ctx.visible)
        if ctx.digest is not None and ctx.digest.covers is not None:
            assert all(e.kind == "task" or e.key >= ctx.digest.covers for e in ctx.visible)
    assert any(c.digest is not None for c in protocol.asked), "no turn was asked with a digest"
    for name, model in models.items():
        asked = [r for r in model.requests if r.context is not None and r.context.kind == "speech"]
        assert len(asked) == 4
        for request in asked:
            assert request.context is not None
            said = f"Speak now, {name}, round {request.context.round}."
            assert request.messages[-1].content.endswith(said)
