"""What every protocol shares: steps, turns, the chair, the closing conclusion, and termination.

A protocol is one file: a subclass of `Protocol` with a `name`. It declares who chairs (if anyone), plans
its turns from the transcript, says what each turn is asked (by naming a prompt, or building the request
itself), reads structured answers out of turns, and says what events follow a step. The engine runs
whatever it returns and knows nothing of boards, councils or debates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from moot.events import Event, PositionsRecorded, StopReason, TurnKind
from moot.positions import (
    PositionsInvalid,
    consensus_score,
    leading_stance,
    parse_positions,
    positions_response_schema,
    strip_positions,
)
from moot.termination import Condition, State, for_room
from moot.transcript import Entry, Key, Transcript, turn_id

if TYPE_CHECKING:
    from moot.models import ModelRequest
    from moot.spec import AgentSpec, RoomSpec

_CONCLUSION_STAGE = 9  # the conclusion sorts after every other stage of its round

PROTOCOLS: dict[str, type[Protocol]] = {}


@dataclass(frozen=True, slots=True)
class Turn:
    """One speaker's turn; it sees every entry placed before `sees` (its own round's start in parallel).

    `ask` names the prompt that tells the turn what to do (`moot.prompts`); empty means the kind's own.
    """

    kind: TurnKind
    speaker: str
    round: int
    stage: int
    slot: int
    sees: Key
    ask: str = ""

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
    awaiting: tuple[str, ...] = ()  # no turns: the discussion waits for a person to choose one of these

    @property
    def is_conclusion(self) -> bool:
        return any(t.kind == "conclusion" for t in self.turns)


@dataclass(frozen=True, slots=True)
class Finish:
    reason: StopReason


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Everything a turn's request is built from, made by the engine for each turn and passed to `request`.

    `visible` is the history the turn may see, fitted to its model's window; `digest`, when set, stands for
    the older entries it leaves out (B10). The engine builds the request more than once while it fits the
    history, so `request` must be a pure function of this.
    """

    room: RoomSpec
    agent: AgentSpec
    turn: Turn
    transcript: Transcript
    max_tokens: int
    temperature: float | None
    visible: Sequence[Entry] = ()
    digest: Entry | None = None

    def build(
        self, *, instruction_text: str | None = None, visible: Sequence[Entry] | None = None
    ) -> ModelRequest:
        """The usual request: the history (`visible` unless given) and the turn's instruction, the prompt
        `turn.ask` names unless `instruction_text` replaces it."""
        from moot.prompts import build_request

        return build_request(
            self.room, self.agent, kind=self.turn.kind, round_=self.turn.round,
            visible=self.visible if visible is None else visible, digest=self.digest,
            max_tokens=self.max_tokens, temperature=self.temperature, ask=self.turn.ask,
            instruction_text=instruction_text,
        )  # fmt: skip


class Unreadable(ValueError):
    """A turn's answer lacks what its protocol needs from it; the message is what the model is told.

    `required` is False where the room can do without it (a summary's positions when nothing stops on
    consensus): a reply cut off by its token limit is then kept without it rather than asked for again.
    """

    def __init__(self, message: str, *, required: bool = True) -> None:
        super().__init__(message)
        self.required = required


def one_turn(kind: TurnKind, speaker: str, round_: int, stage: int, ask: str = "") -> Step:
    """A step of a single turn that sees everything before it."""
    key = (round_, stage, 1, 0)
    return Step(round=round_, turns=(Turn(kind, speaker, round_, stage, 1, key, ask),))


def together(kind: TurnKind, speakers: Sequence[str], round_: int, stage: int, ask: str = "") -> Step:
    """A step whose turns run at once, each seeing the history as it was when the step began."""
    sees = (round_, stage, 1, 0)
    turns = tuple(Turn(kind, name, round_, stage, 1 + i, sees, ask) for i, name in enumerate(speakers))
    return Step(round=round_, turns=turns, concurrent=True)


class Protocol(ABC):
    """A pure function from a transcript to the next step; the engine runs whatever it returns."""

    name: ClassVar[str]
    chaired: ClassVar[bool] = False  # a chair leads even when no agent is declared moderator (B3)
    borrows_models: ClassVar[bool] = False  # another agent's model speaks for a failed one by default (B13)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            PROTOCOLS[cls.name] = cls

    # ---- who ----------------------------------------------------------------------------------------------

    def chair(self, room: RoomSpec) -> AgentSpec | None:
        """Who chairs: the moderator (or its stand-in) where the protocol has a chair or one is declared."""
        return room.moderator if (self.chaired or room.has_moderator) else None

    # ---- what -----------------------------------------------------------------------------------------------

    @abstractmethod
    def plan(self, room: RoomSpec, transcript: Transcript) -> Iterator[Step]:
        """Every step of an uninterrupted run, in order; `next_step` skips those already done."""

    def termination(self, room: RoomSpec) -> Condition:
        """When the discussion ends early: what the room file asks for (`moot.termination`)."""
        return for_room(room)

    def next_step(
        self,
        room: RoomSpec,
        transcript: Transcript,
        *,
        elapsed: float | None = None,
        condition: Condition | None = None,
    ) -> Step | Finish:
        """The first step of the plan not yet done, unless a termination condition ends the discussion."""
        condition = condition or self.termination(room)
        reason = condition.check(State(room, transcript, elapsed=elapsed))
        follow_up = transcript.follow_up
        answered = follow_up.round if follow_up is not None else -1  # rounds before it ended already
        if reason is None:
            for step in self.plan(room, transcript):
                if step.awaiting:
                    return step
                remaining = tuple(
                    t for t in step.turns if not transcript.has_turn(t.round, t.kind, t.speaker)
                )
                if remaining:
                    upcoming = replace(step, turns=remaining)
                    reason = condition.check(State(room, transcript, upcoming=upcoming, elapsed=elapsed))
                    if reason is None:
                        return upcoming
                    break
                if step.round <= answered:
                    continue
                reason = condition.check(State(room, transcript, just_finished=step, elapsed=elapsed))
                if reason is not None:
                    break
            else:
                reason = "max_rounds"
        return self.conclude(room, transcript, reason)

    def conclude(self, room: RoomSpec, transcript: Transcript, reason: StopReason) -> Step | Finish:
        """The chair's conclusion when there is a chair and none was given yet, else the end."""
        turn = self.conclusion_turn(room, transcript)
        if turn is None or transcript.concluded:
            return Finish(reason)
        return Step(round=turn.round, turns=(turn,), stop_reason=reason)

    def conclusion_turn(self, room: RoomSpec, transcript: Transcript) -> Turn | None:
        """The turn that concludes (B11), also where a failed room's fallback conclusion is kept (B12)."""
        chair = self.chair(room)
        if chair is None:
            return None
        round_ = transcript.last_round
        key = (round_, _CONCLUSION_STAGE, 1, 0)
        return Turn("conclusion", chair.name, round_, _CONCLUSION_STAGE, 1, key)

    # ---- asking and reading ---------------------------------------------------------------------------------

    def request(self, ctx: RequestContext) -> ModelRequest:
        """What the turn sends its model: by default its history (L9) and the prompt `turn.ask` names."""
        return ctx.build()

    def structured(self, turn: Turn) -> bool:
        """Whether the turn's whole answer is a JSON object: it gets the structured answers' token limit
        (`limits.structured_tokens`), not a speech's, since an object cut short is no answer at all."""
        return turn.kind == "conclusion"

    def apart(
        self, room: RoomSpec, turn: Turn, request: ModelRequest, text: str, *, max_tokens: int
    ) -> ModelRequest | None:
        """The request for the structured part a free-text answer lacks, asked on its own: a summary's
        positions, missing, malformed or cut off by the reply's token limit. The engine asks it only of a
        server that holds answers to a schema (else the turn is asked again whole, as `read` says); None
        when the text already holds a valid one or the turn carries none."""
        if turn.kind != "summary":
            return None
        from moot.prompts import apart_request, texts

        members = [a.name for a in room.members]
        try:
            parse_positions(text, members)
            return None
        except PositionsInvalid:
            pass
        return apart_request(
            request, strip_positions(text),
            instruction_text=texts(room.language).positions_apart.format(members=", ".join(members)),
            schema=positions_response_schema(members), schema_name="positions", max_tokens=max_tokens,
        )  # fmt: skip

    def read(self, room: RoomSpec, turn: Turn, text: str, transcript: Transcript) -> dict[str, Any] | None:
        """What the protocol needs out of a turn's answer, or None when it needs nothing.

        Raises `Unreadable` when the answer lacks it: the turn is asked once more with the error (B11's
        way), and on a second failure `fallback` stands in. A chair's summary carries the members'
        positions: a block that is there must be valid, and one must be there where the room stops on
        consensus (elsewhere a block the reply's token limit cut short is left out, not asked for again).
        """
        if turn.kind != "summary":
            return None
        try:
            positions = parse_positions(text, [a.name for a in room.members])
        except PositionsInvalid as exc:
            if room.consensus is not None or '"positions"' in text:
                raise Unreadable(str(exc), required=room.consensus is not None) from None
            return None
        return {"positions": [p.model_dump() for p in positions]}

    def fallback(self, room: RoomSpec, turn: Turn, text: str) -> dict[str, Any] | None:
        """What stands in when a turn's answer stays unreadable; None keeps the turn without it."""
        return None

    def before_step(self, room: RoomSpec, transcript: Transcript, step: Step) -> list[Event]:
        """Events that announce a step as it begins (who was chosen to speak); none by default."""
        return []

    def after_step(self, room: RoomSpec, transcript: Transcript, step: Step) -> list[Event]:
        """Events that follow a step once all its turns are in: by default, the positions of a summary."""
        events: list[Event] = []
        for turn in step.turns:
            if turn.kind != "summary":
                continue
            entry = transcript.turn(turn.round, turn.kind, turn.speaker)
            if entry is not None and entry.positions:
                events.append(
                    PositionsRecorded(
                        round=turn.round,
                        speaker=turn.speaker,
                        positions=list(entry.positions),
                        consensus=consensus_score(entry.positions),
                        leading=leading_stance(entry.positions),
                    )
                )
        return events
