"""Every event a run emits: typed models joined in one discriminated union.

Event names and fields are public API (CLI JSON lines, SSE, WebSocket, the database): add fields, never
rename. Every event has `seq` (rising within a room's stream, never used twice) and `type`; events that belong to a
round carry `round` (0 is the task and the opening). `docs/events.md` documents each one.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from moot.models import Usage
from moot.positions import Position

TurnKind = Literal["opening", "speech", "summary", "conclusion", "ranking", "selection"]
AgentState = Literal["pending", "streaming", "completed", "failed"]
StopReason = Literal[
    "max_rounds",
    "stop_command",
    "token_budget",
    "all_failed",
    "no_members",
    "consensus",
    "cost_budget",
    "time_budget",
]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int = 0


class AgentInfo(BaseModel):
    name: str
    role: Literal["member", "moderator"]
    colour: str
    avatar: str | None = None
    persona: str = ""
    model: str
    active: bool = True


class RoomStarted(_Event):
    """A run began: who takes part and how (B4). `resumed` when it continues an earlier transcript."""

    type: Literal["room_started"] = "room_started"
    room_id: str
    title: str | None = None
    task: str
    protocol: str
    language: str
    max_rounds: int
    agents: list[AgentInfo]
    moderator: str | None = None
    resumed: bool = False
    simulated: bool = False


class RoomWarning(_Event):
    """Something a person should know that does not stop the run (B3's moderator stand-in)."""

    type: Literal["room_warning"] = "room_warning"
    code: str
    message: str


class RoundStarted(_Event):
    type: Literal["round_started"] = "round_started"
    round: int
    max_rounds: int


class TurnStarted(_Event):
    """A speaker begins; `turn_id` names the turn in every later event of it (L7)."""

    type: Literal["turn_started"] = "turn_started"
    turn_id: str
    round: int
    kind: TurnKind
    speaker: str
    colour: str | None = None
    model: str


class TurnDelta(_Event):
    """New text of a turn in flight; deltas only, never the accumulated text (L7)."""

    type: Literal["turn_delta"] = "turn_delta"
    turn_id: str
    round: int
    speaker: str
    text: str


_set = object.__setattr__


def turn_delta(turn_id: str, round: int, speaker: str, text: str, seq: int | None = None) -> TurnDelta:
    """A `TurnDelta` from fields already checked, as `TurnDelta.model_construct` makes it, at a third of the
    cost: one is made for every token of every speaker. `seq` given counts as set, as when it is passed."""
    event = TurnDelta.__new__(TurnDelta)
    _set(
        event,
        "__dict__",
        {
            "seq": 0 if seq is None else seq,
            "type": "turn_delta",
            "turn_id": turn_id,
            "round": round,
            "speaker": speaker,
            "text": text,
        },
    )
    _set(
        event,
        "__pydantic_fields_set__",
        {"turn_id", "round", "speaker", "text"}
        if seq is None
        else {"seq", "type", "turn_id", "round", "speaker", "text"},
    )
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


def numbered(event: Event, seq: int) -> None:
    """`event.seq = seq`, as pydantic assigns a field of these models (no validation on assignment, none
    frozen): the value in the instance's dict, the field marked set; without pydantic's lookup per call."""
    event.__dict__["seq"] = seq
    event.__pydantic_fields_set__.add("seq")


class TurnRestarted(_Event):
    """The turn starts over (a retry or another model, B13): watchers discard its partial text."""

    type: Literal["turn_restarted"] = "turn_restarted"
    turn_id: str
    round: int
    speaker: str
    attempt: int
    reason: str
    model: str
    discard: bool = True


class TurnCompleted(_Event):
    """The whole text of a finished turn, as stored, with the provider's token usage (L7, L8)."""

    type: Literal["turn_completed"] = "turn_completed"
    turn_id: str
    round: int
    kind: TurnKind
    speaker: str
    colour: str | None = None
    text: str
    usage: Usage
    finish_reason: str
    model: str
    created_at: float


class TurnFailed(_Event):
    """One agent could not speak; the room goes on (L3, L12, B7)."""

    type: Literal["turn_failed"] = "turn_failed"
    turn_id: str
    round: int
    kind: TurnKind
    speaker: str
    error: str
    error_type: str


class RoundProgress(_Event):
    """Per-speaker state of a round whose turns run at once, and how many are done (L6)."""

    type: Literal["round_progress"] = "round_progress"
    round: int
    states: dict[str, AgentState]
    completed: int
    total: int


class InterventionAdded(_Event):
    """A person's words joined the transcript; `stop` when they end the discussion (B9)."""

    type: Literal["intervention_added"] = "intervention_added"
    round: int
    author: str
    text: str
    stop: bool = False
    follow_up: bool = False  # a question to a concluded room: more rounds follow, then a new conclusion


class HistoryCompressed(_Event):
    """Earlier entries were summarised to fit a model's context window; the digest is kept (B10)."""

    type: Literal["history_compressed"] = "history_compressed"
    round: int
    entries: int
    tokens_before: int
    tokens_after: int
    model: str
    text: str


class RoundCompleted(_Event):
    """A round ended; `continues` says whether another follows (B8, L13)."""

    type: Literal["round_completed"] = "round_completed"
    round: int
    continues: bool


class PositionsRecorded(_Event):
    """Where each member stands after a round, read from the chair's summary, and how much they agree."""

    type: Literal["positions_recorded"] = "positions_recorded"
    round: int
    speaker: str
    positions: list[Position]
    consensus: float  # the confidence-weighted share of the largest stance, 0 to 1 (docs/protocols.md)
    leading: str  # the stance with the most weight


class RankedAnswer(BaseModel):
    agent: str
    mean_rank: float | None  # None when no review ranked it
    first_places: int
    reviews: int


class RankingsAggregated(_Event):
    """council: how the members ranked each other's anonymous answers, best first."""

    type: Literal["rankings_aggregated"] = "rankings_aggregated"
    round: int
    answers: list[RankedAnswer]


class SpeakerSelected(_Event):
    """selector: who speaks next, who chose (the chair, round robin, chance or a person) and why."""

    type: Literal["speaker_selected"] = "speaker_selected"
    round: int
    speaker: str
    by: str
    reason: str = ""


class ChoiceRequested(_Event):
    """The discussion waits for a person's choice (selector with `speaker_selection: manual`): send one of
    `options` as words (`moot run --interactive`, POST .../messages, the WebSocket)."""

    type: Literal["choice_requested"] = "choice_requested"
    round: int
    options: list[str]
    prompt: str


class EstimatesAggregated(_Event):
    """delphi: the members' numeric answers of a round, aggregated: median and spread."""

    type: Literal["estimates_aggregated"] = "estimates_aggregated"
    round: int
    estimates: dict[str, float]
    median: float | None
    low: float | None
    high: float | None
    spread: float | None  # the interquartile range


class RoomConcluded(_Event):
    """The structured conclusion (B11); `fallback` when it was made without a valid model answer (B12)."""

    type: Literal["room_concluded"] = "room_concluded"
    round: int
    speaker: str
    summary: str
    decision_advice: str
    consensus_points: list[str]
    dissent_points: list[str]
    fallback: bool = False
    provisional: bool = False  # made because the room failed: a resumed run replaces it with the real one
    positions: list[Position] = Field(default_factory=list)
    number: int = 1  # the room's first conclusion is 1; each follow-up question adds one


class RoomCompleted(_Event):
    """The run finished (L13): how many rounds ran, why it stopped, and token usage per agent."""

    type: Literal["room_completed"] = "room_completed"
    rounds_run: int
    stop_reason: StopReason
    usage: Usage
    usage_by_agent: dict[str, Usage]
    cost_usd: float = 0.0


class RoomPaused(_Event):
    """The run stopped where it was and can be resumed from its transcript (L11)."""

    type: Literal["room_paused"] = "room_paused"
    round: int
    reason: str


class RoomFailed(_Event):
    """A room-level failure: the room's status becomes error (L12)."""

    type: Literal["room_failed"] = "room_failed"
    round: int
    error: str
    error_type: str


Event = Annotated[
    RoomStarted
    | RoomWarning
    | RoundStarted
    | TurnStarted
    | TurnDelta
    | TurnRestarted
    | TurnCompleted
    | TurnFailed
    | RoundProgress
    | InterventionAdded
    | HistoryCompressed
    | RoundCompleted
    | PositionsRecorded
    | RankingsAggregated
    | SpeakerSelected
    | ChoiceRequested
    | EstimatesAggregated
    | RoomConcluded
    | RoomCompleted
    | RoomPaused
    | RoomFailed,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES: tuple[str, ...] = tuple(
    cls.model_fields["type"].default
    for cls in _Event.__subclasses__()  # every event class derives from _Event directly
)


def event_json(event: Event) -> str:
    """One event as compact JSON: the line format of `--json`, SSE data and WebSocket frames."""
    return event.model_dump_json()


def parse_event(data: str | bytes) -> Event:
    return EVENT_ADAPTER.validate_json(data)
