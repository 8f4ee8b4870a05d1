"""Parallel: each round everyone speaks at once, seeing the history as it was at the round's start (L6)."""

from __future__ import annotations

from collections.abc import Iterator

from moot.protocols._base import Protocol, Step, together
from moot.spec import RoomSpec
from moot.transcript import Transcript


class Parallel(Protocol):
    name = "parallel"

    def plan(self, room: RoomSpec, transcript: Transcript) -> Iterator[Step]:
        names = [a.name for a in room.members]
        for round_ in range(1, room.max_rounds + 1):
            yield together("speech", names, round_, 0)
