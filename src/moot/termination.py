"""Conditions that end a discussion, as small objects that combine with `|`.

    max_rounds(3) | stop_command | token_budget(20_000) | cost_budget(0.50) | time_budget(600) | consensus(0.85)

Each condition reads one `State` (the room, its transcript, the step that just finished or the one about to
run, and the seconds this run has taken) and names why the discussion ends, or returns None. They read the
transcript alone, except the time budget, which reads the run's clock: so a resumed room stops where an
uninterrupted one would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from moot.events import StopReason

if TYPE_CHECKING:
    from moot.protocols._base import Step
    from moot.spec import RoomSpec
    from moot.transcript import Transcript


@dataclass(frozen=True, slots=True)
class State:
    """What a condition may look at. `just_finished` after a step; `upcoming` before one runs."""

    room: RoomSpec
    transcript: Transcript
    just_finished: Step | None = None
    upcoming: Step | None = None
    elapsed: float | None = None  # seconds this run has taken so far, by the run's clock


class Condition(ABC):
    """One reason to end a discussion; `a | b` ends it when either says so (the first one named wins)."""

    @abstractmethod
    def check(self, state: State) -> StopReason | None:
        """Why the discussion ends now, or None to go on."""

    def __or__(self, other: Condition) -> Condition:
        return AnyOf((*_parts(self), *_parts(other)))


def _parts(condition: Condition) -> tuple[Condition, ...]:
    return condition.conditions if isinstance(condition, AnyOf) else (condition,)


@dataclass(frozen=True, slots=True)
class AnyOf(Condition):
    conditions: tuple[Condition, ...]

    def check(self, state: State) -> StopReason | None:
        for condition in self.conditions:
            reason = condition.check(state)
            if reason is not None:
                return reason
        return None


@dataclass(frozen=True, slots=True)
class MaxRounds(Condition):
    """No step of a round past the last one runs (protocols plan within it too)."""

    rounds: int

    def check(self, state: State) -> StopReason | None:
        if state.upcoming is not None and state.upcoming.round > self.rounds:
            return "max_rounds"
        return None


@dataclass(frozen=True, slots=True)
class StopCommand(Condition):
    """A person said stop (B9)."""

    def check(self, state: State) -> StopReason | None:
        return "stop_command" if state.transcript.stop_requested else None


@dataclass(frozen=True, slots=True)
class TokenBudget(Condition):
    tokens: int

    def check(self, state: State) -> StopReason | None:
        return "token_budget" if state.transcript.usage().total_tokens >= self.tokens else None


@dataclass(frozen=True, slots=True)
class CostBudget(Condition):
    """Spent money reached the budget, or the next step would pass it.

    The next step is estimated from what turns cost so far: its turns times the dearest turn yet, plus one
    more such turn where a chair must still conclude, so that the conclusion fits in what is left.
    """

    usd: float

    def check(self, state: State) -> StopReason | None:
        spent = state.transcript.cost_usd()
        if spent >= self.usd:
            return "cost_budget"
        if state.upcoming is not None:
            dearest = max((e.usage.cost_usd for e in state.transcript if e.is_turn and e.usage), default=0.0)
            turns = len(state.upcoming.turns) + (1 if state.room.chair is not None else 0)
            if spent + dearest * turns > self.usd:
                return "cost_budget"
        return None


@dataclass(frozen=True, slots=True)
class TimeBudget(Condition):
    """This run has taken the seconds it was given (measured by the run's clock, which tests inject)."""

    seconds: float

    def check(self, state: State) -> StopReason | None:
        if state.elapsed is not None and state.elapsed >= self.seconds:
            return "time_budget"
        return None


@dataclass(frozen=True, slots=True)
class Consensus(Condition):
    """The last round's positions agree at least this much (see `moot.positions.consensus_score`)."""

    threshold: float

    def check(self, state: State) -> StopReason | None:
        from moot.positions import consensus_score

        finished = state.just_finished
        if finished is None or not any(t.kind == "summary" for t in finished.turns):
            return None
        entry = next(
            (
                e
                for e in state.transcript
                if e.kind == "summary" and e.round == finished.round and e.positions is not None
            ),
            None,
        )
        if entry is None or entry.positions is None:
            return None
        return "consensus" if consensus_score(entry.positions) >= self.threshold else None


@dataclass(frozen=True, slots=True)
class AllFailed(Condition):
    """Every member's speech of the round just finished failed: the meeting failed midway (B12)."""

    def check(self, state: State) -> StopReason | None:
        finished = state.just_finished
        if finished is None or not any(t.kind == "speech" for t in finished.turns):
            return None
        spoken, failed = state.transcript.speech_counts(finished.round)
        members = state.room.members
        if members and spoken >= len(members) and failed == spoken:
            return "all_failed"
        return None


def max_rounds(rounds: int) -> Condition:
    return MaxRounds(rounds)


def token_budget(tokens: int) -> Condition:
    return TokenBudget(tokens)


def cost_budget(usd: float) -> Condition:
    return CostBudget(usd)


def time_budget(seconds: float) -> Condition:
    return TimeBudget(seconds)


def consensus(threshold: float) -> Condition:
    return Consensus(threshold)


stop_command: Condition = StopCommand()
all_failed: Condition = AllFailed()


def for_room(room: RoomSpec) -> Condition:
    """The conditions a room file asks for: stop commands, failures and rounds always; budgets if set."""
    condition = stop_command
    limits = room.limits
    if limits.max_total_tokens is not None:
        condition = condition | token_budget(limits.max_total_tokens)
    if limits.max_cost_usd is not None:
        condition = condition | cost_budget(limits.max_cost_usd)
    if limits.max_seconds is not None:
        condition = condition | time_budget(limits.max_seconds)
    condition = condition | all_failed
    if room.consensus is not None:
        condition = condition | consensus(room.consensus)
    return condition | max_rounds(room.max_rounds)
