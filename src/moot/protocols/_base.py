"""What every protocol shares: steps, turns, termination, and the closing conclusion."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import ClassVar

from moot.events import StopReason, TurnKind
from moot.spec import RoomSpec
from moot.transcript import Key, Transcript, turn_id

CONCLUSION_STAGE = 9


@dataclass(frozen=True, slots=True)
class Turn:
    """One speaker's turn; it sees every entry placed before `sees` (its own round's start in parallel)."""

    kind: TurnKind
    speaker: str
    round: int
    stage: int
    slot: int
    sees: Key

    @property
    def key(self) -> Key:
        return (self.round, self.stage, self.slot, 0)

    @property
    def id(self) -> str:
        return turn_id(self.round, self.kind, self.speaker)


@dataclass(frozen=True, slots=True)
class Step:
    """Turns to run now; `concurrent` when they run at once and are merged into one stream (L6)."""

    round: int
    turns: tuple[Turn, ...]
    concurrent: bool = False
    stop_reason: StopReason | None = None  # set on the concluding step: why the discussion ended

    @property
    def is_conclusion(self) -> bool:
        return any(t.kind == "conclusion" for t in self.turns)


@dataclass(frozen=True, slots=True)
class Finish:
    reason: StopReason


def one_turn(kind: TurnKind, speaker: str, round_: int, stage: int) -> Step:
    """A step of a single turn that sees everything before it."""
    key = (round_, stage, 1, 0)
    return Step(round=round_, turns=(Turn(kind, speaker, round_, stage, 1, key),))


def together(kind: TurnKind, speakers: list[str], round_: int, stage: int) -> Step:
    """A step whose turns run at once, each seeing the history as it was when the step began."""
    sees = (round_, stage, 1, 0)
    turns = tuple(Turn(kind, name, round_, stage, 1 + i, sees) for i, name in enumerate(speakers))
    return Step(round=round_, turns=turns, concurrent=True)


class Protocol(ABC):
    """A pure function from a transcript to the next step; the engine runs whatever it returns."""

    name: ClassVar[str]

    @abstractmethod
    def plan(self, room: RoomSpec, transcript: Transcript) -> Iterator[Step]:
        """Every step of an uninterrupted run, in order; `next_step` skips those already done."""

    def next_step(self, room: RoomSpec, transcript: Transcript) -> Step | Finish:
        reason = termination(room, transcript)
        if reason is None:
            for step in self.plan(room, transcript):
                remaining = tuple(
                    t for t in step.turns if not transcript.has_turn(t.round, t.kind, t.speaker)
                )
                if remaining:
                    return replace(step, turns=remaining)
                reason = termination(room, transcript, just_finished=step)
                if reason is not None:
                    break
            else:
                reason = "max_rounds"
        return self.conclude(room, transcript, reason)

    def conclude(self, room: RoomSpec, transcript: Transcript, reason: StopReason) -> Step | Finish:
        """The moderator's conclusion when there is a moderator and none was given yet, else the end."""
        moderator = room.moderator if (room.protocol == "board" or room.has_moderator) else None
        if moderator is None or transcript.concluded:
            return Finish(reason)
        step = one_turn("conclusion", moderator.name, transcript.last_round, CONCLUSION_STAGE)
        return replace(step, stop_reason=reason)


def termination(
    room: RoomSpec, transcript: Transcript, just_finished: Step | None = None
) -> StopReason | None:
    """Conditions that end a discussion early: a stop command (B9), the token budget, a round of failures."""
    if transcript.stop_requested:
        return "stop_command"
    budget = room.limits.max_total_tokens
    if budget is not None and transcript.usage().total_tokens >= budget:
        return "token_budget"
    if just_finished is not None and any(t.kind == "speech" for t in just_finished.turns):
        spoken, failed = transcript.speech_counts(just_finished.round)
        if room.members and spoken >= len(room.members) and failed == spoken:
            return "all_failed"
    return None
