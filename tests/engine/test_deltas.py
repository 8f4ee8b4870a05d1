"""A token's event made the cheap way is the same event pydantic would make; handed to a waiting reader at
once, it keeps the stream whole and in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from moot.engine import Run
from moot.events import Event, TurnDelta, event_json, parse_event, turn_delta
from moot.models import Completion, Model, ModelRequest, Usage

from .helpers import of_type, room


def test_a_delta_made_cheaply_is_the_event_pydantic_makes() -> None:
    fields = {"turn_id": "r1:speech:Ada", "round": 1, "speaker": "Ada", "text": "wörds \n"}
    cheap = turn_delta(**fields)
    built = TurnDelta.model_construct(**fields)
    assert cheap == built == TurnDelta(**fields)
    assert list(cheap.__dict__) == list(TurnDelta.model_fields)  # a field added to TurnDelta fails here
    assert cheap.model_fields_set == built.model_fields_set
    assert event_json(cheap) == event_json(TurnDelta(**fields))
    cheap.seq = built.seq = 7  # numbered as the engine numbers it
    assert cheap == built and cheap.model_fields_set == built.model_fields_set
    assert parse_event(event_json(cheap)) == cheap


def test_a_joined_delta_keeps_its_seq_as_set() -> None:
    cheap = turn_delta("r1:speech:Ada", 1, "Ada", "a b c", seq=42)
    built = TurnDelta.model_construct(
        seq=42, type="turn_delta", turn_id="r1:speech:Ada", round=1, speaker="Ada", text="a b c"
    )
    assert cheap == built and cheap.model_fields_set == built.model_fields_set
    assert cheap.model_dump() == built.model_dump()


def test_numbering_an_event_is_pydantic_s_own_assignment() -> None:
    from moot.events import RoundStarted, numbered

    for cls in (TurnDelta, RoundStarted):
        assert not cls.model_config.get("validate_assignment") and not cls.model_config.get("frozen")
    for make in (
        lambda: turn_delta("r1:speech:Ada", 1, "Ada", "w"),
        lambda: RoundStarted(round=2, max_rounds=3),
    ):
        ours, theirs = make(), make()
        numbered(ours, 12)
        theirs.seq = 12
        assert ours == theirs and ours.model_fields_set == theirs.model_fields_set
        assert event_json(ours) == event_json(theirs)


class _Ticking(Model):
    """Yields one piece per turn of the event loop, as a socket read would."""

    label = "ticking"

    def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
        return self._play()

    async def _play(self) -> AsyncIterator[str | Completion]:
        pieces = [f"piece {i} " for i in range(30)]
        for piece in pieces:
            await asyncio.sleep(0)
            yield piece
        usage = Usage(input_tokens=10, output_tokens=len(pieces))
        yield Completion(text="".join(pieces), usage=usage, finish_reason="stop", model="ticking")


async def test_deltas_handed_at_once_to_a_waiting_reader_keep_the_stream_whole_and_in_seq_order() -> None:
    spec = room("parallel", rounds=1, names=("Ada", "Ben", "Cyd"))
    run = Run(spec, models={agent.name: _Ticking() for agent in spec.agents})
    seen: list[Event] = []
    direct: list[TurnDelta] = []

    def deliver(delta: TurnDelta) -> None:
        direct.append(delta)
        seen.append(delta)

    run.deliver = deliver
    async for event in run:
        seen.append(event)

    assert direct, "a reader waiting with nothing queued gets deltas from the speaker at once"
    assert len(direct) < len(of_type(seen, "turn_delta"))  # and the channel still carries the rest
    seqs = [e.seq for e in seen]
    assert seqs == list(range(1, len(seen) + 1))  # every event once, in seq order, whichever way it came
    for done in of_type(seen, "turn_completed"):
        streamed = [e.text for e in seen if e.type == "turn_delta" and e.turn_id == done.turn_id]
        assert "".join(streamed) == done.text
