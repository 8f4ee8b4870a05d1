"""The transcript is the whole state of a discussion: protocols read it, the engine adds to it.

Entries are kept in a canonical order, `Entry.key` = (round, stage, slot, arrival), not in the order they
happened to finish. Speeches of a parallel round therefore join the history in turn order however their
streams ended (L6), and a transcript rebuilt from storage after a crash sorts the same way.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from moot.conclusion import Conclusion
from moot.models import Usage
from moot.positions import Position

EntryKind = Literal[
    "task", "opening", "speech", "summary", "conclusion", "intervention", "digest", "ranking", "selection"
]
TurnKind = Literal["opening", "speech", "summary", "conclusion", "ranking", "selection"]
TURN_KINDS: frozenset[str] = frozenset(("opening", "speech", "summary", "conclusion", "ranking", "selection"))
Key = tuple[int, int, int, int]

USER = "user"


def turn_id(round_: int, kind: str, speaker: str) -> str:
    """A turn's identity (room-local): the same turn can be stored only once."""
    return f"r{round_}:{kind}:{speaker}"


class Entry(BaseModel):
    """One thing said (or one failed attempt to say it) in a discussion."""

    model_config = ConfigDict(extra="forbid")

    kind: EntryKind
    round: int = Field(ge=0)
    speaker: str
    text: str = ""
    stage: int = 0
    slot: int = 0
    arrival: int = 0
    failed: bool = False
    error: str | None = None
    usage: Usage | None = None
    model: str | None = None
    colour: str | None = None
    finish_reason: str | None = None
    command: Literal["stop", "follow_up"] | None = None
    ref: str | None = None  # intervention: the id it was stored under on arrival, before it joined
    covers: Key | None = None  # digest: summarises the entries whose key is below this
    conclusion: Conclusion | None = None
    positions: list[Position] | None = None  # summary: where each member stands after the round
    data: dict[str, Any] | None = None  # what a protocol read out of the turn (a ranking, a choice)
    fallback: bool = False
    # conclusion: made from the history when the room failed midway (B12). It stands for the conclusion
    # only until the discussion goes on: it is no turn, and the real conclusion replaces it when written.
    provisional: bool = False
    created_at: float = Field(default_factory=time.time)

    @property
    def key(self) -> Key:
        return (self.round, self.stage, self.slot, self.arrival)

    @property
    def turn_id(self) -> str:
        return turn_id(self.round, self.kind, self.speaker)

    @property
    def is_turn(self) -> bool:
        return self.kind in TURN_KINDS and not self.provisional


class Transcript:
    """Entries in canonical order, plus the digests that stand for long stretches of them (B10).

    Provisional conclusions (made when the room failed) are kept apart, like digests: no speaker sees them,
    and they never count as the discussion's end.
    """

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._entries: list[Entry] = []
        self._digests: list[Entry] = []
        self._provisional: list[Entry] = []
        self._turn_ids: set[str] = set()
        self._speeches: dict[int, list[int]] = {}  # round -> [spoken, failed]
        for entry in entries:
            self.add(entry)

    def add(self, entry: Entry) -> None:
        """Inserts at the entry's place in canonical order; a turn already present is refused."""
        if entry.kind == "digest":
            bisect.insort(self._digests, entry, key=lambda e: e.covers or (0, 0, 0, 0))
            return
        if entry.provisional:
            bisect.insort(self._provisional, entry, key=lambda e: (e.key, e.created_at))
            return
        if entry.is_turn:
            if entry.turn_id in self._turn_ids:
                raise ValueError(f"turn {entry.turn_id} is already in the transcript")
            self._turn_ids.add(entry.turn_id)
            if entry.kind == "speech":
                counts = self._speeches.setdefault(entry.round, [0, 0])
                counts[0] += 1
                counts[1] += entry.failed
        if entry.kind == "intervention" and entry.arrival == 0:
            entry.arrival = 1 + sum(1 for e in self._entries if e.kind == "intervention")
        bisect.insort(self._entries, entry, key=lambda e: e.key)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> list[Entry]:
        return list(self._entries)

    @property
    def digests(self) -> list[Entry]:
        return list(self._digests)

    def has_turn(self, round_: int, kind: str, speaker: str) -> bool:
        return turn_id(round_, kind, speaker) in self._turn_ids

    def turn(self, round_: int, kind: str, speaker: str) -> Entry | None:
        """The stored entry of a turn, or None when it is not in."""
        if turn_id(round_, kind, speaker) not in self._turn_ids:
            return None
        return next(
            (
                e
                for e in self._entries
                if e.is_turn and e.round == round_ and e.kind == kind and e.speaker == speaker
            ),
            None,
        )

    def before(self, bound: Key) -> list[Entry]:
        """Entries that come before a position: what a turn placed there may see."""
        index = bisect.bisect_left(self._entries, bound, key=lambda e: e.key)
        return self._entries[:index]

    def speech_counts(self, round_: int) -> tuple[int, int]:
        """How many speeches of a round are in, and how many of them failed."""
        spoken, failed = self._speeches.get(round_, (0, 0))
        return spoken, failed

    @property
    def task(self) -> Entry | None:
        return next((e for e in self._entries if e.kind == "task"), None)

    @property
    def conclusion(self) -> Entry | None:
        """The conclusion that stands: the real one, else the provisional one of the room's last failure."""
        final = next((e for e in reversed(self._entries) if e.kind == "conclusion"), None)
        return final or (self._provisional[-1] if self._provisional else None)

    @property
    def concluded(self) -> bool:
        """The conclusion turn is in (after the last follow-up question, if any): the discussion is over.
        A provisional conclusion does not end it."""
        since = self.segment
        return any(e.kind == "conclusion" and e.key > since for e in reversed(self._entries))

    @property
    def follow_up(self) -> Entry | None:
        """The last follow-up question asked of a concluded discussion, or None."""
        return next((e for e in reversed(self._entries) if e.command == "follow_up"), None)

    @property
    def segment(self) -> Key:
        """Where the discussion now going on began: after the last follow-up question, else at the start."""
        follow_up = self.follow_up
        return follow_up.key if follow_up is not None else (0, -2, 0, 0)

    def conclusions(self) -> list[Entry]:
        """Every conclusion given, oldest first: one per follow-up question after the first."""
        return [e for e in self._entries if e.kind == "conclusion"]

    @property
    def last_round(self) -> int:
        """The highest round any speech or summary belongs to (0 before the first round)."""
        return max((e.round for e in self._entries if e.kind in ("speech", "summary")), default=0)

    @property
    def stop_requested(self) -> bool:
        """A person said stop in the discussion now going on (a follow-up question starts a new one)."""
        since = self.segment
        return any(e.command == "stop" and e.key > since for e in self._entries)

    def usage(self) -> Usage:
        total = Usage()
        for entry in (*self._entries, *self._digests):
            if entry.usage is not None:
                total = total + entry.usage
        return total

    def cost_usd(self) -> float:
        """What the discussion has cost so far, in US dollars."""
        return self.usage().cost_usd

    def usage_by_speaker(self) -> dict[str, Usage]:
        totals: dict[str, Usage] = {}
        for entry in (*self._entries, *self._digests):
            if entry.usage is not None:
                totals[entry.speaker] = totals.get(entry.speaker, Usage()) + entry.usage
        return totals
