"""Board meeting: the moderator opens; each round the members speak at once and the moderator sums up (B5-B8)."""

from __future__ import annotations

from collections.abc import Iterator

from moot.protocols._base import Protocol, Step, one_turn, together
from moot.spec import RoomSpec
from moot.transcript import Transcript


class Board(Protocol):
    name = "board"
    chaired = True
    borrows_models = True

    def plan(self, room: RoomSpec, transcript: Transcript) -> Iterator[Step]:
        moderator = self.chair(room)
        if moderator is None:
            return
        yield one_turn("opening", moderator.name, 0, 0)
        names = [a.name for a in room.members]
        for round_ in range(1, room.max_rounds + 1):
            yield together("speech", names, round_, 0, ask="board_speech")
            yield one_turn("summary", moderator.name, round_, 1)
