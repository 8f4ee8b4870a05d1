"""Sequential: one turn at a time in turn order; each speaker sees everything said before it (L5)."""

from __future__ import annotations

from collections.abc import Iterator

from moot.protocols._base import Protocol, Step, one_turn
from moot.spec import RoomSpec
from moot.transcript import Transcript


class Sequential(Protocol):
    name = "sequential"

    def plan(self, room: RoomSpec, transcript: Transcript) -> Iterator[Step]:
        for round_ in range(1, room.max_rounds + 1):
            for index, agent in enumerate(room.members):
                yield one_turn("speech", agent.name, round_, index)
