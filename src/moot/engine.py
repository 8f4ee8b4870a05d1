"""Runs a room: asks the protocol for the next step, runs its turns, and streams typed events.

The run is a driver task feeding a bounded channel; whoever iterates the `Run` only reads that channel.
The driver runs the discussion as a work task of its own: pausing cancels that work, never the driver, so
the driver always ends the stream itself, and a cancellation from outside (the loop shutting down) is never
swallowed. Continuing is a new `Run` over the same transcript. The engine knows nothing of databases or
transports: it declares what it needs (`on_entry`) and takes interventions by method call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from moot import tracing
from moot.conclusion import Conclusion, ConclusionInvalid, parse_conclusion
from moot.events import (
    AgentInfo,
    AgentState,
    ChoiceRequested,
    Event,
    HistoryCompressed,
    InterventionAdded,
    RoomCompleted,
    RoomConcluded,
    RoomFailed,
    RoomPaused,
    RoomStarted,
    RoomWarning,
    RoundCompleted,
    RoundProgress,
    RoundStarted,
    StopReason,
    TurnCompleted,
    TurnDelta,
    TurnFailed,
    TurnRestarted,
    TurnStarted,
    numbered,
    turn_delta,
)
from moot.exceptions import ContextTooLong, ModelError, MootError, RunError, TransientModelError
from moot.models import (
    Completion,
    Message,
    Model,
    ModelRequest,
    Usage,
    build_model,
    estimate_tokens,
    estimate_usage,
)
from moot.models.retry import complete, retrying
from moot.positions import Position
from moot.pricing import priced
from moot.prompts import digest_request, is_stop_command, texts
from moot.protocols import Finish, Protocol, RequestContext, Step, Turn, Unreadable, get_protocol
from moot.scrub import scrub
from moot.spec import AgentSpec, ModelSpec, RoomSpec
from moot.termination import Condition
from moot.transcript import USER, Entry, Key, Transcript

RunStatus = Literal["idle", "running", "paused", "completed", "error"]
EntryHook = Callable[[Entry, "list[Event]"], Awaitable[None]]

MAX_INTERVENTION_CHARS = 8000
_AFTER_STEP = 1000  # interventions sort after every turn of the step before them
_QUEUE_SIZE = 512
_OVERFLOW = 64  # events a run that is ending may add past a full channel: its last few, never a stream
_REFITS = 2  # times a turn is tried again, compressed to a context window a server reported smaller
_DIGEST_TOKENS = 800
# Seqs left free below a turn's stored events while they are written, for the deltas that other speakers
# stream meanwhile: the write never holds up the stream, and the stream stays in seq order.
_SEQS_DURING_SAVE = 1000
_RUNNING: set[str] = set()  # rooms running in this process (L14); the store guards across processes

log = logging.getLogger("moot.engine")


@dataclass
class RunResult:
    """The meeting's result (B16): status, the conclusion's fields, rounds run, usage, and the error."""

    status: RunStatus
    rounds_run: int
    stop_reason: StopReason | None = None
    conclusion: Conclusion | None = None
    conclusion_is_fallback: bool = False
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    usage_by_agent: dict[str, Usage] = field(default_factory=dict)
    cost_usd: float = 0.0
    substituted: dict[str, str] = field(
        default_factory=dict
    )  # agent -> the other model it spoke through (B13)

    @property
    def summary(self) -> str:
        return self.conclusion.summary if self.conclusion else ""

    @property
    def decision_advice(self) -> str:
        return self.conclusion.decision_advice if self.conclusion else ""

    @property
    def consensus_points(self) -> list[str]:
        return self.conclusion.consensus_points if self.conclusion else []

    @property
    def dissent_points(self) -> list[str]:
        return self.conclusion.dissent_points if self.conclusion else []

    @property
    def positions(self) -> list[Position]:
        return self.conclusion.positions if self.conclusion else []


class Steerable(ABC):
    """What a caller holds and steers, whether the run keeps its words in a store (`DurableRun`) or not
    (`Run`): iterate it for events; `say`, `end` and `pause` steer it; `result` is there once it ended."""

    @property
    @abstractmethod
    def result(self) -> RunResult | None:
        """The run's result once it ended; None before."""

    @property
    @abstractmethod
    def taking_words(self) -> bool:
        """Whether words said now reach the discussion (a stored run also takes them before it starts)."""

    @abstractmethod
    def start(self) -> None:
        """Starts the run without waiting for a reader (a stored run starts when it is first read)."""

    @abstractmethod
    async def say(self, text: str, *, author: str = USER) -> None:
        """A person's words, kept where the run keeps anything, then taken in at the next step (B9).

        A ValueError says what is wrong with the text; stop commands stop.
        """

    @abstractmethod
    async def end(self) -> None:
        """Ends the discussion early, with a conclusion where it has a chair."""

    @abstractmethod
    def pause(self, reason: str = "paused") -> None:
        """Stops now; the turn in flight runs again from its start when the room is resumed (L10, L11)."""

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[Event]: ...

    async def wait(self) -> RunResult:
        """Runs to the end without reading events; returns the result."""
        async for _ in self:
            pass
        assert self.result is not None
        return self.result


class _Done:
    """Marks the end of the event stream."""


class _Unsaved(Exception):
    """The `on_entry` hook failed: nothing more can be kept, so the room fails, never just one turn."""


class _Channel:
    """Events from the driver to the reader.

    Bounded while the run goes on, so a slow reader slows the run rather than filling memory. Once the run
    is ending (`ending()`), a put never waits: the last events go in past the bound (at most `_OVERFLOW` of
    them), because a reader that never comes must not keep a pause or a shutdown waiting forever.
    """

    def __init__(self, size: int) -> None:
        self._items: deque[Event | _Done] = deque()
        self._size = size
        self._ending = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._reader_waiting = False  # the reader waits in `get`: it has handled everything it took

    def ending(self) -> None:
        self._ending = True
        self._writable.set()

    def drained(self) -> bool:
        """Whether the reader waits with nothing queued: everything put so far has been handled."""
        return self._reader_waiting and not self._items

    def has_room(self) -> bool:
        """Whether a put would go in without waiting."""
        return len(self._items) < self._size or self._ending

    def put_now(self, item: Event | _Done) -> bool:
        """Puts without waiting; False, and nothing put, when the channel is full and the run goes on."""
        if len(self._items) >= self._size and not self._ending:
            return False
        if len(self._items) >= self._size + _OVERFLOW and not isinstance(item, _Done):
            return True  # nobody has read for a long while: only the end marker still goes in
        self._items.append(item)
        self._readable.set()
        return True

    async def put(self, item: Event | _Done) -> None:
        while not self.put_now(item):
            self._writable.clear()
            await self._writable.wait()

    def get_now(self) -> Event | _Done | None:
        """The next item, or None when there is none yet."""
        if not self._items:
            return None
        item = self._items.popleft()
        if len(self._items) < self._size:
            self._writable.set()
        return item

    async def get(self) -> Event | _Done:
        while not self._items:
            self._readable.clear()
            self._reader_waiting = True
            try:
                await self._readable.wait()
            finally:
                self._reader_waiting = False
        item = self._items.popleft()
        if len(self._items) < self._size:
            self._writable.set()
        return item


class _Order:
    """The lock events are numbered and queued under, counting who holds it or waits for it: when nobody
    does, an event can be numbered and queued at once, without taking it (nothing can come between)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._users = 0

    def free(self) -> bool:
        return self._users == 0

    async def __aenter__(self) -> None:
        self._users += 1
        try:
            await self._lock.acquire()
        except BaseException:
            self._users -= 1
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
        self._users -= 1


class _Progress:
    """Per-speaker state of a step whose turns run at once, as `round_progress` events (L6)."""

    def __init__(self, step: Step) -> None:
        self.round = step.round
        self.states: dict[str, AgentState] = {t.speaker: "pending" for t in step.turns}

    def event(self, speaker: str | None = None, state: AgentState = "pending") -> RoundProgress:
        if speaker is not None:
            self.states[speaker] = state
        done = sum(1 for s in self.states.values() if s in ("completed", "failed"))
        return RoundProgress(
            round=self.round, states=dict(self.states), completed=done, total=len(self.states)
        )


class Run(Steerable):
    """One run of a room. Iterate it for events; `intervene`, `stop` and `pause` steer it meanwhile."""

    def __init__(
        self,
        room: RoomSpec,
        *,
        transcript: Transcript | None = None,
        room_id: str | None = None,
        models: Mapping[str, Model] | None = None,
        start_seq: int = 0,
        on_entry: EntryHook | None = None,
        after_start: Sequence[Event] = (),
        termination: Condition | None = None,
        clock: Callable[[], float] = time.monotonic,
        protocol: Protocol | None = None,
    ) -> None:
        """`after_start`: events to emit right after `room_started` (a resumed run's notice of cut turns).

        `termination` replaces the conditions the room file asks for (`moot.termination`); `clock` measures
        the run's time budget (seconds, monotonic), and tests give their own. `protocol` replaces the
        protocol the room names with one built in code (a `Selector` with its own `choose` function).
        """
        self.room_id = room_id or uuid.uuid4().hex[:12]
        self.transcript = transcript if transcript is not None else Transcript()
        self._room = room
        self.room = with_follow_ups(room, self.transcript)
        self.status: RunStatus = "idle"
        self._result: RunResult | None = None
        self._resumed = len(self.transcript) > 0
        self._protocol = protocol or get_protocol(room.protocol)
        self._termination = termination
        self._clock = clock
        self._began: float | None = None
        self._given_models = dict(models or {})
        self._models: dict[tuple[object, ...], Model] = {}  # built once per run, by the spec's value
        self._windows: dict[tuple[object, ...], int] = {}  # context windows servers said were smaller
        self._asked: set[tuple[object, ...]] = set()  # models whose server was asked for its window
        self._asking: dict[tuple[object, ...], asyncio.Lock] = {}  # one question at a time per model
        self._seq = start_seq
        self._on_entry = on_entry
        self._after_start = list(after_start)
        self._channel = _Channel(_QUEUE_SIZE)
        self._order = _Order()  # events are numbered and queued under it: seq order is stream order
        self._saving = asyncio.Lock()  # one entry written at a time, in the order the entries came
        self._ceiling: int | None = None  # while an entry is written: the last seq other events may take
        self._saved = asyncio.Event()  # set when no entry is being written
        self._saved.set()
        self._pending: list[tuple[str, str, str | None]] = []
        self._words = asyncio.Event()  # set when words arrive: a discussion waiting for a choice goes on
        self._driver: asyncio.Task[None] | None = None
        self._work: asyncio.Task[None] | None = None
        self._pause_reason: str | None = None
        self._open_round: int | None = None
        self._partial: dict[str, list[str]] = {}
        self._attempts: dict[str, int] = {}
        self._token_cache: dict[str, int] = {}
        self._substituted: dict[str, str] = {}
        self._truncated: set[str] = set()
        self._reader_gone = False
        # What the reader does with a delta, done here at once while the reader waits with nothing queued
        # (`_emit_now`): a token then costs no hop through the channel and the reader's task. Set by the
        # reader before the run starts; it must not wait, and it sees deltas in seq order as the reader would.
        self.deliver: Callable[[TurnDelta], None] | None = None

    # ---- steering -------------------------------------------------------------------------------------

    @property
    def result(self) -> RunResult | None:
        return self._result

    @property
    def taking_words(self) -> bool:
        return self.status == "running"

    async def say(self, text: str, *, author: str = USER) -> None:
        self.intervene(text, author=author)

    async def end(self) -> None:
        self.stop()

    def intervene(self, text: str, *, author: str = USER, ref: str | None = None) -> None:
        """A person's words; they join the transcript before the next step (B9). Stop commands stop.

        `ref` is the id under which a store kept the intervention on arrival; it comes back on the entry.
        """
        self._pending.append((author, check_intervention(text), ref))
        self._words.set()

    def stop(self) -> None:
        """Ends the discussion early, with a conclusion where the room has a moderator."""
        self._pending.append((USER, "/stop", None))

    def pause(self, reason: str = "paused") -> None:
        """Stops now; the turn in flight is dropped and runs again from its start on resume (L10, L11).

        The discussion's work is cancelled, not the driver: the driver sees the pause flag, ends the stream
        with `room_paused`, and never waits for a reader to do so.
        """
        if self._driver is not None and self._driver.done():
            return
        self._pause_reason = reason
        self._channel.ending()
        if self._work is not None:
            self._work.cancel()

    def streaming(self) -> bool:
        """Whether a turn is streaming now: a step whose turns run at once has not ended yet."""
        return bool(self._partial)

    def partial_texts(self) -> dict[str, str]:
        """Text of the turns in flight, by turn id: a snapshot for watchers who join mid-turn."""
        return {turn: "".join(parts) for turn, parts in self._partial.items()}

    # ---- reading ----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._driver is None:
            if self.room_id in _RUNNING:
                raise RunError(
                    f"room {self.room_id} is already running; wait for it to end or pause it first"
                )
            _RUNNING.add(self.room_id)
            self.status = "running"
            self._driver = asyncio.get_running_loop().create_task(
                self._drive(), name=f"moot-run-{self.room_id}"
            )

    def __aiter__(self) -> AsyncGenerator[Event]:
        return self._events()

    async def _events(self) -> AsyncGenerator[Event]:
        self.start()
        try:
            channel = self._channel
            while True:
                item = channel.get_now()
                if item is None:
                    item = await channel.get()
                if isinstance(item, _Done):
                    return
                yield item
        finally:
            if self._driver is not None and not self._driver.done():
                self._reader_gone = True
                self.pause("the reader went away")
                await asyncio.wait({self._driver})  # its outcome is its own: a cancelled reader still ends

    # ---- the run ----------------------------------------------------------------------------------------

    async def _emit(self, *events: Event) -> None:
        for event in events:
            if self._emit_now(event):
                continue
            while True:
                async with self._order:
                    if self._ceiling is None or self._seq < self._ceiling:
                        self._seq += 1
                        event.seq = self._seq
                        if not self._reader_gone:
                            await self._channel.put(event)
                        break
                await self._saved.wait()  # the seqs left free during a write are spent: wait for it

    def _emit_now(self, event: Event) -> bool:
        """Numbers and queues the event when that needs no waiting: nobody holds or waits for the ordering
        lock, a seq is free below any write's ceiling, and the channel has room. False: nothing done.
        A delta goes to `deliver` instead when the reader waits with nothing queued."""
        if not self._order.free():
            return False
        if self._ceiling is not None and self._seq >= self._ceiling:
            return False
        if not (self._reader_gone or self._channel.has_room()):
            return False
        self._seq += 1
        numbered(event, self._seq)
        if not self._reader_gone:
            channel = self._channel
            if self.deliver is not None and event.__class__ is TurnDelta and channel.drained():
                self.deliver(event)  # the reader handled everything before it: order is kept
            else:
                channel.put_now(event)
        return True

    async def _commit(self, entry: Entry, *events: Event) -> None:
        """Adds an entry and emits its events as one step that a pause cannot cut in half."""
        task = asyncio.ensure_future(self._commit_now(entry, list(events)))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise

    async def _commit_now(self, entry: Entry, events: list[Event]) -> None:
        """Numbers the entry's events, has them kept (`on_entry`), then emits them.

        While the hook writes, other turns go on streaming: their events take the seqs left free below the
        entry's (other turns in flight only), so the stream stays in seq order and a reader gets the entry's
        events only once they are kept.
        """
        async with self._saving:
            async with self._order:
                self.transcript.add(entry)
                others = self._on_entry is not None and any(t != entry.turn_id for t in self._partial)
                first = self._seq + 1 + (_SEQS_DURING_SAVE if others else 0)
                for number, event in enumerate(events, start=first):
                    event.seq = number
                if self._on_entry is None:
                    self._seq = first - 1 + len(events)
                    for event in events:
                        if not self._reader_gone:
                            await self._channel.put(event)
                    return
                self._ceiling = first - 1
                self._saved.clear()
            kept = False
            try:
                await self._on_entry(entry, events)
                kept = True
            except Exception as exc:
                raise _Unsaved(str(exc)) from exc
            finally:
                async with self._order:  # in one hold: no event can come between the entry's and the rest
                    self._ceiling = None
                    self._saved.set()
                    self._seq = max(self._seq, first - 1 + len(events))
                    for event in events if kept else ():
                        if not self._reader_gone:
                            await self._channel.put(event)

    async def _drive(self) -> None:
        try:
            if self._pause_reason is None:
                self._work = asyncio.create_task(self._discuss(), name=f"moot-work-{self.room_id}")
                await self._work
            else:  # paused before it began: it still ends with room_paused
                await self._end_paused()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            outside = task is not None and task.cancelling() > 0
            await self._end_paused("cancelled" if outside else None)
            if outside:  # the loop is shutting down, or an owner cancelled the driver: never swallowed
                raise
        except Exception as exc:  # a room-level failure: report it, keep what was said (L12, B12)
            await self._fail(exc)
        finally:
            _RUNNING.discard(self.room_id)
            for model in self._models.values():
                with contextlib.suppress(Exception):
                    await model.aclose()
            # No entry comes after this; the hook's owner (a durable run) holds this run: a reference cycle
            # that would keep the whole run, transcript and models included, for a full collection to free.
            self._on_entry = None
            self._channel.ending()
            if not self._reader_gone:
                await self._channel.put(_Done())

    async def _discuss(self) -> None:
        self._began = self._clock()
        await self._emit(self._started_event(), *self._after_start)
        await self._run_steps()

    async def _end_paused(self, reason: str | None = None) -> None:
        self._channel.ending()
        self.status = "paused"
        self._partial.clear()
        await self._emit(
            RoomPaused(round=self._current_round(), reason=reason or self._pause_reason or "paused")
        )
        self._finish(None)

    async def _fail(self, exc: Exception) -> None:
        """A room-level failure: logged whole for the operator, told plainly to the room (B12)."""
        cause = exc.__cause__ if isinstance(exc, _Unsaved) and isinstance(exc.__cause__, Exception) else exc
        error = public_error(cause)
        log_failure(f"room {self.room_id} failed", cause)
        self.status = "error"
        self._channel.ending()
        try:
            await self._warn_substitutions()
            await self._fallback_conclusion(error)
        except Exception as again:  # the store that failed may fail again: the room still ends, said so
            log_failure(f"room {self.room_id}: its fallback conclusion could not be kept", again)
        await self._emit(
            RoomFailed(round=self.transcript.last_round, error=error, error_type=type(cause).__name__)
        )
        self._finish(None, error=error)

    def _current_round(self) -> int:
        return self._open_round if self._open_round is not None else self.transcript.last_round

    def _finish(self, stop_reason: StopReason | None, error: str | None = None) -> None:
        entry = self.transcript.conclusion
        if entry is not None and entry.provisional and self.status != "error":
            entry = None  # a failure's conclusion is this run's result only when this run failed too
        self._result = RunResult(
            status=self.status,
            rounds_run=self.transcript.last_round,
            stop_reason=stop_reason,
            conclusion=entry.conclusion if entry else None,
            conclusion_is_fallback=entry.fallback if entry else False,
            error=error,
            usage=self.transcript.usage(),
            usage_by_agent=self.transcript.usage_by_speaker(),
            cost_usd=self.transcript.cost_usd(),
            substituted=dict(self._substituted),
        )

    def _started_event(self) -> RoomStarted:
        room = self.room
        moderator = self._protocol.chair(room)
        return RoomStarted(
            room_id=self.room_id,
            title=room.title,
            task=room.task,
            protocol=room.protocol,
            language=room.language,
            max_rounds=room.max_rounds,
            agents=[
                AgentInfo(
                    name=a.name,
                    role="moderator" if a is moderator else "member",
                    colour=a.colour or "",
                    avatar=a.avatar,
                    persona=_short(a.persona),
                    model=room.model_for(a).label,
                    active=a.active,
                )
                for a in room.agents
            ],
            moderator=moderator.name if moderator else None,
            resumed=self._resumed,
            simulated=any(room.model_for(a).provider == "simulated" for a in room.agents if a.active),
        )

    async def _run_steps(self) -> None:
        room = self.room
        if room.moderator is None:
            raise RunError("no active agent: mark at least one agent active: true")
        if self._protocol.chaired and not room.declared_moderator_usable:
            await self._emit(
                RoomWarning(
                    code="moderator_substituted",
                    message=f"no active moderator; {room.moderator.name} chairs the meeting instead",
                )
            )
        if not room.members:
            raise RunError("no active member to speak: add an active agent that is not the moderator")
        real = [a.name for a in room.agents if a.active and room.model_for(a).provider != "simulated"]
        if real and self._falls_back() and room.limits.fallback_to_simulated:
            await self._emit(
                RoomWarning(
                    code="simulated_fallback",
                    message=f"if their models fail, {', '.join(real)} may be heard through the offline "
                    "simulated model (limits.fallback_to_simulated); the end of the run says who was",
                )
            )
        if self.transcript.task is None:
            await self._commit(Entry(kind="task", round=0, stage=-1, speaker=USER, text=room.task))  # L4
        while True:
            await self._take_interventions()
            room = self.room  # a follow-up question taken just now may have added rounds
            step = self._protocol.next_step(
                room, self.transcript, elapsed=self._elapsed(), condition=self._termination
            )
            if isinstance(step, Finish):
                await self._close_round(continues=False)
                await self._warn_substitutions()
                if step.reason == "all_failed":  # B12: the meeting failed midway; its conclusion is kept
                    error = f"every member's turn failed in round {self.transcript.last_round}"
                    self.status = "error"
                    self._finish(step.reason, error=error)
                    await self._emit(
                        RoomFailed(
                            round=self.transcript.last_round, error=error, error_type="AllMembersFailed"
                        )
                    )
                    return
                self.status = "completed"
                self._finish(step.reason)
                await self._emit(
                    RoomCompleted(
                        rounds_run=self.transcript.last_round,
                        stop_reason=step.reason,
                        usage=self.transcript.usage(),
                        usage_by_agent=self.transcript.usage_by_speaker(),
                        cost_usd=self.transcript.cost_usd(),
                    )
                )
                return
            if step.awaiting:
                await self._await_choice(step)
                continue
            await self._enter_round(step)
            if not step.is_conclusion:
                await self._emit(*self._protocol.before_step(room, self.transcript, step))
            if step.concurrent and len(step.turns) > 1:
                await self._run_together(step)
            else:
                for turn in step.turns:
                    await self._run_turn(turn)
            if not step.is_conclusion:
                await self._emit(*self._protocol.after_step(room, self.transcript, step))

    def _budget_spent(self, request: ModelRequest, chars: int, spec: ModelSpec | None) -> str | None:
        """`time_budget` or `cost_budget` when the room's budget runs out with this reply so far; else None."""
        limits = self.room.limits
        elapsed = self._elapsed()
        if limits.max_seconds is not None and elapsed is not None and elapsed >= limits.max_seconds:
            return "time_budget"
        if limits.max_cost_usd is not None and spec is not None:
            so_far = priced(spec, Usage(input_tokens=_request_tokens(request), output_tokens=chars // 4))
            if self.transcript.cost_usd() + so_far.cost_usd >= limits.max_cost_usd:
                return "cost_budget"
        return None

    async def _await_choice(self, step: Step) -> None:
        """Asks a person to choose, then waits for words (a pause ends the wait like any other step)."""
        if not self._pending:
            self._words.clear()
            prompt = texts(self.room.language).choose.format(options=", ".join(step.awaiting))
            await self._emit(ChoiceRequested(round=step.round, options=list(step.awaiting), prompt=prompt))
            await self._words.wait()

    def _elapsed(self) -> float | None:
        return None if self._began is None else self._clock() - self._began

    async def _enter_round(self, step: Step) -> None:
        if step.is_conclusion:
            await self._close_round(continues=False)
        elif step.round != self._open_round and step.round >= 1:
            await self._close_round(continues=True)
            self._open_round = step.round
            await self._emit(RoundStarted(round=step.round, max_rounds=self.room.max_rounds))

    async def _close_round(self, *, continues: bool) -> None:
        if self._open_round is not None:
            await self._emit(RoundCompleted(round=self._open_round, continues=continues))
            self._open_round = None

    async def _take_interventions(self) -> None:
        pending, self._pending = self._pending, []
        for author, text, ref in pending:
            last = self.transcript.entries[-1].key if len(self.transcript) else (0, -1, 0, 0)
            stop = is_stop_command(text)
            follow_up = not stop and self.transcript.concluded  # a question to a concluded room
            entry = Entry(
                kind="intervention",
                round=last[0],
                stage=last[1],
                slot=_AFTER_STEP,
                speaker=USER,
                text=text,
                command="stop" if stop else "follow_up" if follow_up else None,
                ref=ref,
                data={"rounds": self._room.follow_up_rounds} if follow_up else None,
            )
            await self._commit(
                entry,
                InterventionAdded(
                    round=entry.round, author=author, text=text, stop=stop, follow_up=follow_up
                ),
            )
            if follow_up:
                self.room = with_follow_ups(self._room, self.transcript)

    # ---- turns --------------------------------------------------------------------------------------------

    async def _run_together(self, step: Step) -> None:
        """Runs a step's turns at once; their deltas interleave in the one event stream (L6).

        A turn's own failures end that turn only; what comes out of one here is room-level (a store that
        could not keep an entry), and it comes out as itself, not wrapped in a group.
        """
        progress = _Progress(step)
        await self._emit(progress.event())
        tasks = [
            asyncio.create_task(self._run_turn(turn, progress), name=f"moot-turn-{turn.id}")
            for turn in step.turns
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_turn(self, turn: Turn, progress: _Progress | None = None) -> None:
        """One turn in its span (moot.tracing): its model calls are the span's children."""
        spec = self.room.model_for(self.room.agent(turn.speaker))
        with tracing.turn(
            self.room_id, turn.id, turn.speaker, round=turn.round, kind=turn.kind,
            provider=spec.provider, model=spec.name,
        ):  # fmt: skip
            await self._take_turn(turn, progress)

    async def _take_turn(self, turn: Turn, progress: _Progress | None = None) -> None:
        """One turn, start to end. Whatever goes wrong in it ends this turn only (L12); the room goes on."""
        agent = self.room.agent(turn.speaker)
        spec = self.room.model_for(agent)
        await self._emit(
            TurnStarted(
                turn_id=turn.id,
                round=turn.round,
                kind=turn.kind,
                speaker=agent.name,
                colour=agent.colour,
                model=spec.label,
            )
        )
        try:
            async with asyncio.timeout(self.room.limits.turn_timeout):
                for refit in range(_REFITS + 1):
                    try:
                        if turn.kind == "conclusion":
                            await self._conclude(turn, agent, spec)
                            return
                        request = await self._request_for(turn, agent, spec)
                        completion, label = await self._speak(turn, agent, request, progress)
                        completion, label, data = await self._read(
                            turn, agent, spec, request, completion, label, progress
                        )
                        break
                    except ContextTooLong as exc:
                        if refit == _REFITS or not self._learn_window(spec, exc):
                            raise
                        await self._restart(turn, agent, spec, _refit_reason(spec, self._window(spec)))
        except _Unsaved:
            raise  # the store failed, not the turn: the room cannot go on
        except Exception as exc:  # a model's failure, the turn's time running out, or a bug: this turn only
            tracing.failed(exc)
            message = self._turn_error(turn, agent, exc)
            if turn.kind == "conclusion":
                await self._fallback_conclusion(message, turn)
                return
            no_model = isinstance(exc, ModelError) and self._falls_back()
            await self._commit(
                Entry(
                    kind=turn.kind,
                    round=turn.round,
                    stage=turn.stage,
                    slot=turn.slot,
                    speaker=agent.name,
                    text=texts(self.room.language).placeholder.format(name=agent.name) if no_model else "",
                    failed=True,
                    error=message,
                    model=spec.label,
                    colour=agent.colour,
                ),
                TurnFailed(
                    turn_id=turn.id,
                    round=turn.round,
                    kind=turn.kind,
                    speaker=agent.name,
                    error=message,
                    error_type=type(exc).__name__,
                ),
                *([progress.event(agent.name, "failed")] if progress else []),
            )
            return
        finally:
            self._partial.pop(turn.id, None)
            self._attempts.pop(turn.id, None)
        data = dict(data) if data else None
        positions = data.pop("positions", None) if data else None
        entry = Entry(
            kind=turn.kind, round=turn.round, stage=turn.stage, slot=turn.slot, speaker=agent.name,
            text=completion.text, usage=completion.usage, model=label, colour=agent.colour,
            finish_reason=completion.finish_reason, data=data or None,
            positions=[Position.model_validate(p) for p in positions] if positions is not None else None,
        )  # fmt: skip
        await self._commit(
            entry,
            self._completed_event(turn, entry),
            *([progress.event(agent.name, "completed")] if progress else []),
        )

    async def _read(
        self,
        turn: Turn,
        agent: AgentSpec,
        spec: ModelSpec,
        request: ModelRequest,
        completion: Completion,
        label: str,
        progress: _Progress | None,
    ) -> tuple[Completion, str, dict[str, Any] | None]:
        """What the protocol reads out of the answer; asked again with the error where it cannot (B11's way).

        What the room can do without is not asked for again when the reply was cut off by its token limit:
        the answer again would be cut off where this one was, and the turn is kept as it is. On a server that
        holds answers to a schema, a structured part the text lacks (a summary's positions) is asked for on
        its own instead (`Protocol.apart`), and the text is kept as it was said.
        The returned completion carries the usage of every attempt.
        """
        usage = completion.usage
        retries = self.room.limits.conclusion_retries
        model = self._model(spec, agent)
        apart = (
            self._protocol.apart(
                self.room, turn, request, completion.text, max_tokens=self._structured_tokens(spec)
            )
            if model.structured_output()
            else None
        )
        source = completion.text  # what the protocol reads: the answer, or the part asked on its own
        for retry in range(retries + 1):
            if apart is not None:  # the text stays; only the structured part is asked, held to its schema
                try:
                    answer = await complete(model, apart, spec)
                except ModelError:
                    break
                source, usage = answer.text, usage + priced(spec, answer.usage)
            try:
                data = self._protocol.read(self.room, turn, source, self.transcript)
                return replace(completion, usage=usage), label, data
            except Unreadable as unreadable:
                if retry == retries:
                    break
                if apart is not None:
                    error = texts(self.room.language).read_retry.format(error=unreadable)
                    messages = (*apart.messages, Message("assistant", source), Message("user", error))
                    apart = replace(apart, messages=messages)
                    continue
                if not unreadable.required and completion.finish_reason == "length":
                    break
                await self._restart(turn, agent, spec, f"the answer could not be read: {unreadable}")
                request = replace(
                    request,
                    messages=(
                        *request.messages,
                        Message(role="assistant", content=completion.text),
                        Message(
                            role="user", content=texts(self.room.language).read_retry.format(error=unreadable)
                        ),
                    ),
                )
                completion, label = await self._speak(turn, agent, request, progress)
                source, usage = completion.text, usage + completion.usage
        fallback = self._protocol.fallback(self.room, turn, completion.text)
        return replace(completion, usage=usage), label, fallback

    def _last_positions(self) -> list[Position]:
        """The members' positions in the last summary that gave them: what a conclusion without its own keeps."""
        for entry in reversed(self.transcript.entries):
            if entry.kind == "summary" and entry.positions:
                return list(entry.positions)
        return []

    def _turn_error(self, turn: Turn, agent: AgentSpec, exc: Exception) -> str:
        """What the room is told about a failed turn; an unexpected failure is logged whole as well."""
        if isinstance(exc, TimeoutError) and not isinstance(exc, ModelError):
            return f"the turn took longer than {self.room.limits.turn_timeout:g} s"
        if not isinstance(exc, MootError):
            log_failure(f"room {self.room_id}: turn {turn.id} failed unexpectedly", exc)
        message = public_error(exc)
        if isinstance(exc, ModelError) and self._falls_back():  # B13: no model at all answered
            return f"{texts(self.room.language).placeholder.format(name=agent.name)}: {message}"
        return message

    def _completed_event(self, turn: Turn, entry: Entry) -> TurnCompleted:
        return TurnCompleted(
            turn_id=turn.id, round=turn.round, kind=turn.kind, speaker=entry.speaker, colour=entry.colour,
            text=entry.text, usage=entry.usage or Usage(), finish_reason=entry.finish_reason or "stop",
            model=entry.model or "", created_at=entry.created_at,
        )  # fmt: skip

    # ---- models (B13) -------------------------------------------------------------------------------------

    def _candidates(self, agent: AgentSpec) -> list[ModelSpec]:
        """The agent's own model, then other active agents' models where the room allows it (B13).

        A real model is replaced only by another real one, unless the room allows the simulated one.
        """
        own = self.room.model_for(agent)
        if not self._falls_back():
            return [own]
        simulated_ok = own.provider == "simulated" or self.room.limits.fallback_to_simulated
        seen = {(own.label, own.base_url)}
        candidates = [own]
        for other in self.room.agents:
            spec = self.room.model_for(other)
            if not other.active or (spec.label, spec.base_url) in seen:
                continue
            if spec.provider == "simulated" and not simulated_ok:
                continue
            seen.add((spec.label, spec.base_url))
            candidates.append(spec)
        return candidates

    def _falls_back(self) -> bool:
        """Whether another agent's model may speak for one whose model fails (B13): as the protocol says
        (board meetings do), unless the room says otherwise."""
        allowed = self.room.limits.fallback_models
        return allowed if allowed is not None else self._protocol.borrows_models

    def _model(self, spec: ModelSpec, agent: AgentSpec | None) -> Model:
        """The adapter for a model, built once per run for each distinct declaration (by value, not identity)."""
        if agent is not None and agent.name in self._given_models:
            return self._given_models[agent.name]
        key = _spec_key(spec)
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = build_model(spec)
        return model

    def _window(self, spec: ModelSpec) -> int:
        """The context window to fit: the declared one, or the smaller one its server reported this run."""
        return min(spec.window, self._windows.get(_spec_key(spec), spec.window))

    async def _learn_server_window(self, spec: ModelSpec, agent: AgentSpec) -> None:
        """Asks a model's server for its context window once per run; fits the smaller of it and the room
        file's, and warns when a declared window is not what the server has.

        Turns run together wait for the one question in flight rather than go on with the declared window
        (and they go on in the order they asked); a turn cancelled while asking leaves the next one to ask.
        """
        key = _spec_key(spec)
        if key in self._asked:
            return
        async with self._asking.setdefault(key, asyncio.Lock()):
            if key in self._asked:
                return
            try:
                stated = await self._model(spec, agent).server_window()
            except ModelError:
                stated = None  # the turn itself will fail with this error, where it is reported
            self._asked.add(key)
            if stated is None or stated == spec.window:
                return
            if stated < self._window(spec):
                self._windows[key] = stated
        if spec.context_window is not None:
            await self._emit(
                RoomWarning(
                    code="context_window_differs",
                    message=f"{spec.label}: the room file says context_window {spec.context_window:,} but the "
                    f"server reads {stated:,} tokens; fitting the discussion to {self._window(spec):,}",
                )
            )

    def _learn_window(self, spec: ModelSpec, error: ContextTooLong) -> bool:
        """Remembers the window a server reported for the rest of the run; False when there is nothing new."""
        if error.limit is None or error.limit >= self._window(spec):
            return False
        self._windows[_spec_key(spec)] = error.limit
        return True

    async def _warn_substitutions(self) -> None:
        """Says, at the end, which agents spoke through a model other than their own (B13)."""
        if not self._substituted:
            return
        said = "; ".join(
            f"{name} through {label} instead of {self.room.model_for(self.room.agent(name)).label}"
            for name, label in self._substituted.items()
        )
        await self._emit(
            RoomWarning(
                code="models_substituted",
                message=f"some agents spoke through another agent's model: {said}; fix their models to hear "
                "them in their own voice",
            )
        )

    async def _restart(self, turn: Turn, agent: AgentSpec, spec: ModelSpec, reason: str) -> None:
        parts = self._partial.setdefault(turn.id, [])
        self._attempts[turn.id] = self._attempts.get(turn.id, 1) + 1
        await self._emit(
            TurnRestarted(
                turn_id=turn.id,
                round=turn.round,
                speaker=agent.name,
                attempt=self._attempts[turn.id],
                reason=scrub(reason),
                model=spec.label,
                discard=bool(parts),
            )
        )
        parts.clear()

    async def _speak(
        self,
        turn: Turn,
        agent: AgentSpec,
        request: ModelRequest,
        progress: _Progress | None = None,
    ) -> tuple[Completion, str]:
        """Streams one reply, retrying transient failures and trying fallback models; deltas become events.

        When no model answers, the agent's own model's error is raised: that is the one a person can fix.
        """
        first_error: ModelError | None = None
        last_error: ModelError | None = None
        parts = self._partial.setdefault(turn.id, [])
        self._attempts.setdefault(turn.id, 1)
        for index, spec in enumerate(self._candidates(agent)):
            try:
                model = self._model(spec, agent if index == 0 else None)
                async for retry in retrying(spec):
                    with retry:
                        if last_error is not None:
                            await self._restart(turn, agent, spec, _restart_reason(last_error, spec))
                        try:
                            with tracing.model_call(spec, request, self.room_id) as call:  # one per attempt
                                completion = call.done(
                                    await self._stream(turn, agent, model, request, parts, progress, spec)
                                )
                        except ModelError as exc:
                            last_error = exc
                            raise
                if index > 0:
                    self._substituted.setdefault(agent.name, spec.label)
                return replace(completion, usage=priced(spec, completion.usage)), spec.label
            except ContextTooLong as exc:
                if index == 0:
                    raise  # compressing to the window the server reported is the remedy, not another model
                first_error, last_error = first_error or exc, exc
            except ModelError as exc:
                first_error, last_error = first_error or exc, exc
        assert first_error is not None
        raise first_error

    async def _stream(
        self,
        turn: Turn,
        agent: AgentSpec,
        model: Model,
        request: ModelRequest,
        parts: list[str],
        progress: _Progress | None,
        spec: ModelSpec | None = None,
    ) -> Completion:
        """Reads one reply; past `limits.reply_chars` it stops reading, keeps what came, and says so.

        It stops reading too once the room's time or cost budget runs out mid-reply (not in the
        conclusion, which must be whole): the words so far are kept, and the chair concludes next.
        """
        limits = self.room.limits
        cap = limits.reply_chars
        # the room's time or cost budget, looked at after every piece; a conclusion is never cut
        budgeted = turn.kind != "conclusion" and (
            limits.max_seconds is not None or (limits.max_cost_usd is not None and spec is not None)
        )
        turn_id, round_, speaker = turn.id, turn.round, agent.name
        kept = 0
        capped = False
        budget: str | None = None
        completion: Completion | None = None
        stream = model.stream(request)
        try:
            async for item in stream:
                if isinstance(item, str):
                    if kept + len(item) > cap:
                        item, capped = item[: cap - kept], True
                    if item:
                        if not parts and progress is not None:
                            await self._emit(progress.event(speaker, "streaming"))
                        parts.append(item)
                        kept += len(item)
                        # built as is: its fields are ours, checked where they were made
                        delta = turn_delta(turn_id, round_, speaker, item)
                        if not self._emit_now(delta):
                            await self._emit(delta)
                    if capped:
                        break
                    if budgeted and (budget := self._budget_spent(request, kept, spec)):
                        capped = True
                        break
                else:
                    completion = item
        finally:
            if isinstance(stream, AsyncGenerator):  # a paused turn frees its connection now, not at GC
                await stream.aclose()
        if capped or (completion is not None and len(completion.text) > cap):
            text = "".join(parts) if capped else completion.text[:cap] if completion else ""
            usage = completion.usage if completion is not None else estimate_usage(request, text)
            completion = Completion(text=text, usage=usage, finish_reason="length", model=model.label)
            if budget is not None:
                await self._emit(
                    RoomWarning(
                        code=budget,
                        message=f"the room's {budget.replace('_', ' ')} ran out while {agent.name} spoke; "
                        "what was said so far is kept, and the discussion concludes",
                    )
                )
            else:
                await self._emit(
                    RoomWarning(
                        code="reply_capped",
                        message=f"{agent.name}'s reply ran past {cap:,} characters; only the first {cap:,} "
                        "are kept (limits.reply_chars)",
                    )
                )
        if completion is None:
            raise TransientModelError(f"{model.label}: the stream ended without a result", model=model.label)
        return completion

    # ---- prompts and compression (B10) ------------------------------------------------------------------------

    async def _request_for(self, turn: Turn, agent: AgentSpec, spec: ModelSpec) -> ModelRequest:
        """The turn's request, its history fitted to the model's window (system prompt, task and instruction
        counted): compressed where it is too long, and the oldest entries left out where that is not enough."""
        visible = [e for e in self.transcript.before(turn.sees) if not e.failed]
        await self._learn_server_window(spec, agent)
        max_tokens = spec.max_tokens or self.room.limits.reply_tokens
        if self._protocol.structured(turn):
            max_tokens = self._structured_tokens(spec)

        asked = RequestContext(
            room=self.room, agent=agent, turn=turn, transcript=self.transcript, max_tokens=max_tokens,
            temperature=spec.temperature,
        )  # fmt: skip

        def build(entries: list[Entry], digest: Entry | None) -> ModelRequest:
            return self._protocol.request(replace(asked, visible=entries, digest=digest))

        task = [e for e in visible if e.kind == "task"]
        window = self._window(spec)
        budget = (
            int(window * self.room.limits.history_share) - max_tokens - _request_tokens(build(task, None))
        )
        body = [e for e in visible if e.kind != "task"]
        digest = await self._digest_for(body, budget)
        if digest is not None and digest.covers is not None:
            body = [e for e in body if e.key >= digest.covers]
        cost = sum(self._tokens(e) for e in body) + (estimate_tokens(digest.text) if digest else 0)
        dropped = 0
        while cost > budget and body:  # the last resort: leave the oldest out, and say so
            cost -= self._tokens(body.pop(0))
            dropped += 1
        if cost > budget and digest is not None:
            cost, digest, dropped = cost - estimate_tokens(digest.text), None, dropped + 1
        if dropped and spec.label not in self._truncated:
            self._truncated.add(spec.label)
            await self._emit(
                RoomWarning(
                    code="history_truncated",
                    message=f"the discussion does not fit {spec.label}'s context window ({window:,} tokens) "
                    f"even compressed: the oldest entries are left out of its prompts, {dropped} for "
                    f"{agent.name} now",
                )
            )
        return build(task + body, digest)

    def _structured_tokens(self, spec: ModelSpec) -> int:
        """A structured answer's own limit, within a third of the window: a speech's would cut it short."""
        return min(self.room.limits.structured_tokens, self._window(spec) // 3)

    def _tokens(self, entry: Entry) -> int:
        key = f"{entry.key}"
        cached = self._token_cache.get(key)
        if cached is None:
            cached = self._token_cache[key] = estimate_tokens(entry.text) + 4
        return cached

    async def _digest_for(self, body: list[Entry], budget: int) -> Entry | None:
        """A digest standing for the oldest entries when the history exceeds the budget; None if it fits."""
        if sum(self._tokens(e) for e in body) <= budget:
            return None
        keep_from = len(body)  # the newest entries that fill half the budget stay word for word
        kept = 0
        while keep_from > 0 and kept + self._tokens(body[keep_from - 1]) <= budget // 2:
            keep_from -= 1
            kept += self._tokens(body[keep_from])
        if keep_from == 0:
            return None
        boundary = body[keep_from].key if keep_from < len(body) else _after(body[-1].key)
        reusable = [d for d in self.transcript.digests if d.covers is not None and d.covers <= boundary]
        for digest in reversed(reusable):
            rest = sum(self._tokens(e) for e in body if digest.covers is not None and e.key >= digest.covers)
            if estimate_tokens(digest.text) + rest <= budget:
                return digest  # computed once, reused by every later turn that fits with it
        previous = reusable[-1] if reusable else None
        start = previous.covers if previous is not None and previous.covers is not None else (0, -1, 0, 0)
        stretch = [e for e in body[:keep_from] if e.key >= start]
        return await self._compress(stretch, previous, boundary, sum(self._tokens(e) for e in body))

    def _compressors(self) -> list[tuple[AgentSpec, ModelSpec]]:
        """Who may compress: the moderator's model first, then every other active agent's, each once."""
        moderator = self.room.moderator
        agents = [a for a in self.room.agents if a.active and a is not moderator]
        seen: set[tuple[object, ...]] = set()
        found = []
        for agent in [moderator, *agents] if moderator is not None else agents:
            spec = self.room.model_for(agent)
            if _spec_key(spec) not in seen:
                seen.add(_spec_key(spec))
                found.append((agent, spec))
        return found

    def _digest_request(self, spec: ModelSpec, stretch: list[Entry], previous: Entry | None) -> ModelRequest:
        reply = min(_DIGEST_TOKENS, self.room.limits.reply_tokens, self._window(spec) // 4)
        return digest_request(self.room, stretch, previous, max_tokens=reply)

    def _fits(self, spec: ModelSpec, request: ModelRequest) -> bool:
        return _request_tokens(request) + request.max_tokens <= self._window(spec)

    async def _compress(
        self, stretch: list[Entry], previous: Entry | None, boundary: Key, before: int
    ) -> Entry | None:
        """Digests a stretch with the first model whose window holds it (the moderator's first); with none,
        with the largest window, a part at a time, each digest carrying the one before (B10)."""
        compressors = self._compressors()
        if not compressors:
            return None
        fitting = [c for c in compressors if self._fits(c[1], self._digest_request(c[1], stretch, previous))]
        agent, spec = fitting[0] if fitting else max(compressors, key=lambda c: self._window(c[1]))
        digest = previous
        while stretch:
            take = len(stretch)
            while take > 0 and not self._fits(spec, self._digest_request(spec, stretch[:take], digest)):
                take -= 1
            if take == 0:
                await self._emit(
                    RoomWarning(
                        code="compression_failed",
                        message=f"an entry is too long for any model's context window to summarise "
                        f"({spec.label}: {self._window(spec):,} tokens); the oldest entries are left out instead",
                    )
                )
                return None
            end = stretch[take].key if take < len(stretch) else boundary
            digest = await self._compress_part(agent, spec, stretch[:take], digest, end, before)
            if digest is None:
                return None
            stretch = stretch[take:]
        return digest

    async def _compress_part(
        self,
        agent: AgentSpec,
        spec: ModelSpec,
        part: list[Entry],
        previous: Entry | None,
        end: Key,
        before: int,
    ) -> Entry | None:
        moderator = self.room.moderator
        assert moderator is not None
        try:
            completion = await complete(
                self._model(spec, agent), self._digest_request(spec, part, previous), spec
            )
        except Exception as exc:  # compression is best effort: the turn goes on without it
            if not isinstance(exc, MootError):
                log_failure(f"room {self.room_id}: compressing the history failed unexpectedly", exc)
            await self._emit(
                RoomWarning(
                    code="compression_failed",
                    message=f"the history could not be summarised ({public_error(exc)}); the oldest entries "
                    "are left out instead",
                )
            )
            return None
        digest = Entry(
            kind="digest", round=end[0], stage=end[1], speaker=moderator.name, text=completion.text,
            usage=priced(spec, completion.usage), model=spec.label, covers=end,
        )  # fmt: skip
        after = estimate_tokens(digest.text) + sum(
            self._tokens(e) for e in self.transcript if e.kind != "task" and e.key >= end
        )
        await self._commit(
            digest,
            HistoryCompressed(
                round=end[0],
                entries=len(part),
                tokens_before=before,
                tokens_after=after,
                model=spec.label,
                text=digest.text,
            ),
        )
        return digest

    # ---- the conclusion (B11, B12) ------------------------------------------------------------------------------

    async def _conclude(self, turn: Turn, agent: AgentSpec, spec: ModelSpec) -> None:
        request = await self._request_for(turn, agent, spec)
        completion, label = await self._speak(turn, agent, request)
        usage = completion.usage
        conclusion: Conclusion | None = None
        for retry in range(self.room.limits.conclusion_retries + 1):
            try:
                conclusion = parse_conclusion(completion.text)
                break
            except ConclusionInvalid as invalid:
                if retry == self.room.limits.conclusion_retries:
                    break
                await self._restart(turn, agent, spec, f"the conclusion was not valid: {invalid}")
                t = texts(self.room.language)
                request = replace(
                    request,
                    messages=(
                        *request.messages,
                        Message(role="assistant", content=completion.text),
                        Message(role="user", content=t.conclusion_retry.format(error=invalid)),
                    ),
                )
                completion, label = await self._speak(turn, agent, request)
                usage = usage + completion.usage
        fallback = conclusion is None
        if conclusion is None:  # B11: the raw answer becomes the summary
            conclusion = Conclusion(summary=completion.text.strip() or "-")
        if not conclusion.positions:
            conclusion = conclusion.model_copy(update={"positions": self._last_positions()})
        await self._store_conclusion(turn, conclusion, completion.text, usage, label, fallback)

    async def _fallback_conclusion(self, reason: str, turn: Turn | None = None) -> None:
        """B12: a conclusion from the truncated history when no model answers.

        Made for a failed conclusion turn, it is that turn's answer. Made because the room failed (no turn),
        it is provisional: a resumed discussion goes on past it, and its real conclusion replaces it.
        """
        moderator = self.room.moderator
        if moderator is None or self.transcript.concluded:
            return
        provisional = turn is None
        if turn is None:
            turn = self._protocol.conclusion_turn(self.room, self.transcript)
            if turn is None:
                return
        t = texts(self.room.language)
        said = [e for e in self.transcript if e.kind in ("speech", "summary") and not e.failed]
        points = " | ".join(f"{e.speaker}: {_short(e.text, 160)}" for e in said[-4:]) or "-"
        conclusion = Conclusion(
            summary=scrub(t.fallback_summary.format(reason=scrub(reason), points=points), limit=4000),
            decision_advice=t.fallback_advice,
            positions=self._last_positions(),
        )
        await self._store_conclusion(
            turn, conclusion, conclusion.summary, Usage(), "fallback", True, provisional=provisional
        )

    async def _store_conclusion(
        self,
        turn: Turn,
        conclusion: Conclusion,
        raw: str,
        usage: Usage,
        label: str,
        fallback: bool,
        *,
        provisional: bool = False,
    ) -> None:
        agent = self.room.agent(turn.speaker)
        entry = Entry(
            kind="conclusion", round=turn.round, stage=turn.stage, slot=turn.slot, speaker=agent.name, text=raw,
            usage=usage, model=label, colour=agent.colour, conclusion=conclusion, fallback=fallback,
            provisional=provisional,
        )  # fmt: skip
        await self._commit(
            entry,
            self._completed_event(turn, entry),
            RoomConcluded(
                round=turn.round,
                speaker=agent.name,
                fallback=fallback,
                provisional=provisional,
                number=len(self.transcript.conclusions()) + 1,
                **conclusion.model_dump(),
            ),
        )


def with_follow_ups(room: RoomSpec, transcript: Transcript) -> RoomSpec:
    """The room as it now runs: a follow-up question to a concluded room adds its rounds after it."""
    follow_up = transcript.follow_up
    if follow_up is None:
        return room
    rounds = int((follow_up.data or {}).get("rounds", room.follow_up_rounds))
    return room.model_copy(update={"max_rounds": follow_up.round + rounds})


def check_intervention(text: str) -> str:
    """The intervention's text, trimmed; a ValueError says what is wrong with it."""
    text = text.strip()
    if not text:
        raise ValueError("an intervention needs some text")
    if len(text) > MAX_INTERVENTION_CHARS:
        raise ValueError(f"an intervention holds at most {MAX_INTERVENTION_CHARS} characters")
    return text


def public_error(exc: BaseException) -> str:
    """What a room's participants may read about a failure: the one place an exception becomes their text.

    Moot's own errors say what happened and what to do, scrubbed of secrets; where an error has a `public`
    version (the store's, which leave out the server's files and hosts), that one. Anything else is a bug or
    a library's error whose words are for the operator: the room hears only its kind, the log has the rest.
    """
    if isinstance(exc, MootError):
        public = getattr(exc, "public", None)
        return scrub(public if isinstance(public, str) and public else str(exc) or type(exc).__name__)
    return f"an unexpected error ({type(exc).__name__}); the server log has the details"


def log_failure(what: str, exc: BaseException) -> None:
    """Logs a failure with its traceback, scrubbed: a provider's words in it may hold a key."""
    detail = "".join(traceback.format_exception(exc))
    log.error("%s: %s", what, scrub(detail, limit=20_000))


def _restart_reason(error: ModelError, spec: ModelSpec) -> str:
    if isinstance(error, TransientModelError) and error.model in ("", spec.label):
        return f"retrying after: {public_error(error)}"
    return f"{public_error(error)}; speaking with {spec.label} instead"


def _refit_reason(spec: ModelSpec, window: int) -> str:
    return f"{spec.label} reads at most {window:,} tokens: trying again with the discussion compressed to fit"


def _spec_key(spec: ModelSpec) -> tuple[object, ...]:
    """A model declaration by value: two agents naming `openai:gpt-4o` share one adapter and connection."""
    secret = spec.api_key.get_secret_value() if spec.api_key is not None else None
    return (spec.model_dump_json(), secret)  # the dump masks the key: it is compared apart


def _request_tokens(request: ModelRequest) -> int:
    return estimate_tokens(request.system) + sum(estimate_tokens(m.content) + 4 for m in request.messages)


def _after(key: Key) -> Key:
    return (*key[:3], key[3] + 1)


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run(
    room: RoomSpec,
    *,
    transcript: Transcript | None = None,
    room_id: str | None = None,
    models: Mapping[str, Model] | None = None,
) -> Run:
    """Starts a discussion: `async for event in moot.run(room)`; steer it with the returned Run's methods."""
    return Run(room, transcript=transcript, room_id=room_id, models=models)
