"""Runs a room: asks the protocol for the next step, runs its turns, and streams typed events.

The run is a task feeding a bounded queue; whoever iterates the `Run` only reads that queue, so pausing is
cancelling the task, and continuing is a new `Run` over the same transcript. The engine knows nothing of
databases or transports: it declares what it needs (`on_entry`) and takes interventions by method call.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from moot.conclusion import Conclusion, ConclusionInvalid, parse_conclusion
from moot.events import (
    AgentInfo,
    AgentState,
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
)
from moot.exceptions import ModelError, RunError, TransientModelError
from moot.models import Completion, Message, Model, ModelRequest, Usage, build_model, estimate_tokens
from moot.models.retry import complete, retrying
from moot.prompts import build_request, digest_request, is_stop_command, texts
from moot.protocols import Finish, Step, Turn, get_protocol
from moot.spec import AgentSpec, ModelSpec, RoomSpec
from moot.transcript import USER, Entry, Transcript

RunStatus = Literal["idle", "running", "paused", "completed", "error"]
EntryHook = Callable[[Entry, "list[Event]"], Awaitable[None]]

MAX_INTERVENTION_CHARS = 8000
_AFTER_STEP = 1000  # interventions sort after every turn of the step before them
_QUEUE_SIZE = 512
_RUNNING: set[str] = set()  # rooms running in this process (L14); the store guards across processes


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


class _Done:
    """Marks the end of the event queue."""


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


class Run:
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
    ) -> None:
        self.room = room
        self.room_id = room_id or uuid.uuid4().hex[:12]
        self.transcript = transcript if transcript is not None else Transcript()
        self.status: RunStatus = "idle"
        self.result: RunResult | None = None
        self._resumed = len(self.transcript) > 0
        self._protocol = get_protocol(room.protocol)
        self._given_models = dict(models or {})
        self._models: dict[int, Model] = {}
        self._seq = start_seq
        self._on_entry = on_entry
        self._queue: asyncio.Queue[Event | _Done] = asyncio.Queue(_QUEUE_SIZE)
        self._order = asyncio.Lock()  # events are numbered and queued under it: seq order is stream order
        self._pending: list[tuple[str, str, str | None]] = []
        self._driver: asyncio.Task[None] | None = None
        self._pause_reason: str | None = None
        self._open_round: int | None = None
        self._partial: dict[str, list[str]] = {}
        self._token_cache: dict[str, int] = {}
        self._reader_gone = False
        self._driving = False

    # ---- steering -------------------------------------------------------------------------------------

    def intervene(self, text: str, *, author: str = USER, ref: str | None = None) -> None:
        """A person's words; they join the transcript before the next step (B9). Stop commands stop.

        `ref` is the id under which a store kept the intervention on arrival; it comes back on the entry.
        """
        self._pending.append((author, check_intervention(text), ref))

    def stop(self) -> None:
        """Ends the discussion early, with a conclusion where the room has a moderator."""
        self._pending.append((USER, "/stop", None))

    def pause(self, reason: str = "paused") -> None:
        """Stops now; the turn in flight is dropped and runs again from its start on resume (L10, L11)."""
        if self._driver is not None and self._driver.done():
            return
        self._pause_reason = reason
        if self._driving:  # before its first step a task would die without running its handlers: it checks
            assert self._driver is not None
            self._driver.cancel()

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
            while True:
                item = await self._queue.get()
                if isinstance(item, _Done):
                    return
                yield item
        finally:
            if self._driver is not None and not self._driver.done():
                self._reader_gone = True
                self.pause("the reader went away")
                with contextlib.suppress(asyncio.CancelledError):
                    await self._driver

    async def wait(self) -> RunResult:
        """Runs to the end without reading events; returns the result."""
        async for _ in self:
            pass
        assert self.result is not None
        return self.result

    # ---- the run ----------------------------------------------------------------------------------------

    async def _emit(self, *events: Event) -> None:
        async with self._order:
            for event in events:
                self._seq += 1
                event.seq = self._seq
                if not self._reader_gone:
                    await self._queue.put(event)

    async def _commit(self, entry: Entry, *events: Event) -> None:
        """Adds an entry and emits its events as one step that a pause cannot cut in half."""
        task = asyncio.ensure_future(self._commit_now(entry, list(events)))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise

    async def _commit_now(self, entry: Entry, events: list[Event]) -> None:
        async with self._order:  # a concurrent turn's deltas wait for the save, not overtake its events
            self.transcript.add(entry)
            for event in events:
                self._seq += 1
                event.seq = self._seq
            if self._on_entry is not None:
                await self._on_entry(entry, events)
            for event in events:
                if not self._reader_gone:
                    await self._queue.put(event)

    async def _drive(self) -> None:
        self._driving = True
        try:
            if self._pause_reason is not None:
                raise asyncio.CancelledError  # paused before it began: still end with room_paused
            await self._emit(self._started_event())
            await self._run_steps()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self.status = "paused"
            self._partial.clear()
            await self._emit(
                RoomPaused(round=self._current_round(), reason=self._pause_reason or "cancelled")
            )
            self._finish(None)
        except Exception as exc:  # a room-level failure: report it, keep what was said (L12, B12)
            self.status = "error"
            await self._fallback_conclusion(f"{type(exc).__name__}: {exc}")
            await self._emit(
                RoomFailed(
                    round=self.transcript.last_round,
                    error=str(exc) or type(exc).__name__,
                    error_type=type(exc).__name__,
                )
            )
            self._finish(None, error=str(exc) or type(exc).__name__)
        finally:
            _RUNNING.discard(self.room_id)
            for model in self._models.values():
                with contextlib.suppress(Exception):
                    await model.aclose()
            if not self._reader_gone:
                await self._queue.put(_Done())

    def _current_round(self) -> int:
        return self._open_round if self._open_round is not None else self.transcript.last_round

    def _finish(self, stop_reason: StopReason | None, error: str | None = None) -> None:
        entry = self.transcript.conclusion
        self.result = RunResult(
            status=self.status,
            rounds_run=self.transcript.last_round,
            stop_reason=stop_reason,
            conclusion=entry.conclusion if entry else None,
            conclusion_is_fallback=entry.fallback if entry else False,
            error=error,
            usage=self.transcript.usage(),
            usage_by_agent=self.transcript.usage_by_speaker(),
        )

    def _started_event(self) -> RoomStarted:
        room = self.room
        moderator = room.moderator if (room.protocol == "board" or room.has_moderator) else None
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
        if room.protocol == "board" and not room.declared_moderator_usable:
            await self._emit(
                RoomWarning(
                    code="moderator_substituted",
                    message=f"no active moderator; {room.moderator.name} chairs the meeting instead",
                )
            )
        if not room.members:
            raise RunError("no active member to speak: add an active agent that is not the moderator")
        if self.transcript.task is None:
            await self._commit(Entry(kind="task", round=0, stage=-1, speaker=USER, text=room.task))  # L4
        while True:
            await self._take_interventions()
            step = self._protocol.next_step(room, self.transcript)
            if isinstance(step, Finish):
                await self._close_round(continues=False)
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
                    )
                )
                return
            await self._enter_round(step)
            if step.concurrent and len(step.turns) > 1:
                await self._run_together(step)
            else:
                for turn in step.turns:
                    await self._run_turn(turn)

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
            entry = Entry(
                kind="intervention",
                round=last[0],
                stage=last[1],
                slot=_AFTER_STEP,
                speaker=USER,
                text=text,
                command="stop" if stop else None,
                ref=ref,
            )
            await self._commit(
                entry, InterventionAdded(round=entry.round, author=author, text=text, stop=stop)
            )

    # ---- turns --------------------------------------------------------------------------------------------

    async def _run_together(self, step: Step) -> None:
        """Runs a step's turns at once; their deltas interleave in the one event stream (L6)."""
        progress = _Progress(step)
        await self._emit(progress.event())
        async with asyncio.TaskGroup() as group:
            for turn in step.turns:
                group.create_task(self._run_turn(turn, progress), name=f"moot-turn-{turn.id}")

    async def _run_turn(self, turn: Turn, progress: _Progress | None = None) -> None:
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
                request = await self._request_for(turn, agent, spec)
                if turn.kind == "conclusion":
                    await self._conclude(turn, agent, request)
                    return
                completion, label = await self._speak(turn, agent, request, progress)
        except (ModelError, TimeoutError) as exc:
            message = (
                str(exc)
                if isinstance(exc, ModelError)
                else (f"the turn took longer than {self.room.limits.turn_timeout:g} s")
            )
            if turn.kind == "conclusion":
                await self._fallback_conclusion(message, turn)
                return
            await self._commit(
                Entry(
                    kind=turn.kind,
                    round=turn.round,
                    stage=turn.stage,
                    slot=turn.slot,
                    speaker=agent.name,
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
        entry = Entry(
            kind=turn.kind, round=turn.round, stage=turn.stage, slot=turn.slot, speaker=agent.name,
            text=completion.text, usage=completion.usage, model=label, colour=agent.colour,
            finish_reason=completion.finish_reason,
        )  # fmt: skip
        await self._commit(
            entry,
            self._completed_event(turn, entry),
            *([progress.event(agent.name, "completed")] if progress else []),
        )

    def _completed_event(self, turn: Turn, entry: Entry) -> TurnCompleted:
        return TurnCompleted(
            turn_id=turn.id, round=turn.round, kind=turn.kind, speaker=entry.speaker, colour=entry.colour,
            text=entry.text, usage=entry.usage or Usage(), finish_reason=entry.finish_reason or "stop",
            model=entry.model or "", created_at=entry.created_at,
        )  # fmt: skip

    def _candidates(self, agent: AgentSpec) -> list[ModelSpec]:
        """The agent's own model, then other active agents' models where the room allows it (B13)."""
        own = self.room.model_for(agent)
        allowed = self.room.limits.fallback_models
        if not (allowed if allowed is not None else self.room.protocol == "board"):
            return [own]
        seen = {(own.label, own.base_url)}
        candidates = [own]
        for other in self.room.agents:
            spec = self.room.model_for(other)
            if other.active and (spec.label, spec.base_url) not in seen:
                seen.add((spec.label, spec.base_url))
                candidates.append(spec)
        return candidates

    def _model(self, spec: ModelSpec, agent: AgentSpec | None) -> Model:
        if agent is not None and agent.name in self._given_models:
            return self._given_models[agent.name]
        model = self._models.get(id(spec))
        if model is None:
            model = self._models[id(spec)] = build_model(spec)
        return model

    async def _speak(
        self,
        turn: Turn,
        agent: AgentSpec,
        request: ModelRequest,
        progress: _Progress | None = None,
    ) -> tuple[Completion, str]:
        """Streams one reply, retrying transient failures and trying fallback models; deltas become events."""
        attempt = 0
        last_error: ModelError | None = None
        parts = self._partial.setdefault(turn.id, [])
        for index, spec in enumerate(self._candidates(agent)):
            try:
                model = self._model(spec, agent if index == 0 else None)
                async for retry in retrying(spec):
                    with retry:
                        attempt += 1
                        if last_error is not None:
                            await self._emit(
                                TurnRestarted(
                                    turn_id=turn.id,
                                    round=turn.round,
                                    speaker=agent.name,
                                    attempt=attempt,
                                    reason=_restart_reason(last_error, spec),
                                    model=spec.label,
                                    discard=bool(parts),
                                )
                            )
                            parts.clear()
                        try:
                            completion = await self._stream(turn, agent, model, request, parts, progress)
                        except ModelError as exc:
                            last_error = exc
                            raise
                        return completion, spec.label
            except ModelError as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def _stream(
        self,
        turn: Turn,
        agent: AgentSpec,
        model: Model,
        request: ModelRequest,
        parts: list[str],
        progress: _Progress | None,
    ) -> Completion:
        completion: Completion | None = None
        stream = model.stream(request)
        try:
            async for item in stream:
                if isinstance(item, str):
                    if item:
                        if not parts and progress is not None:
                            await self._emit(progress.event(agent.name, "streaming"))
                        parts.append(item)
                        await self._emit(
                            TurnDelta(turn_id=turn.id, round=turn.round, speaker=agent.name, text=item)
                        )
                else:
                    completion = item
        finally:
            if isinstance(stream, AsyncGenerator):  # a paused turn frees its connection now, not at GC
                await stream.aclose()
        if completion is None:
            raise TransientModelError(f"{model.label}: the stream ended without a result", model=model.label)
        return completion

    # ---- prompts and compression (B10) ------------------------------------------------------------------------

    async def _request_for(self, turn: Turn, agent: AgentSpec, spec: ModelSpec) -> ModelRequest:
        visible = [e for e in self.transcript.before(turn.sees) if not e.failed]
        max_tokens = spec.max_tokens or self.room.limits.reply_tokens
        digest = await self._digest_for(visible, spec, max_tokens)
        return build_request(
            self.room, agent, kind=turn.kind, round_=turn.round, visible=visible, digest=digest,
            max_tokens=max_tokens, temperature=spec.temperature,
        )  # fmt: skip

    def _tokens(self, entry: Entry) -> int:
        key = f"{entry.key}"
        cached = self._token_cache.get(key)
        if cached is None:
            cached = self._token_cache[key] = estimate_tokens(entry.text) + 4
        return cached

    async def _digest_for(self, visible: list[Entry], spec: ModelSpec, reply_tokens: int) -> Entry | None:
        """A digest standing for the oldest entries when the history exceeds this model's budget."""
        budget = int(spec.window * self.room.limits.history_share) - reply_tokens
        body = [e for e in visible if e.kind != "task"]
        if sum(self._tokens(e) for e in body) <= budget:
            return None
        keep_from = len(body)  # the newest entries that fill half the budget stay word for word
        kept = 0
        while keep_from > 0 and kept + self._tokens(body[keep_from - 1]) <= budget // 2:
            keep_from -= 1
            kept += self._tokens(body[keep_from])
        if keep_from == 0:
            return None
        boundary = body[keep_from].key if keep_from < len(body) else (*body[-1].key[:3], body[-1].key[3] + 1)
        reusable = [d for d in self.transcript.digests if d.covers is not None and d.covers <= boundary]
        for digest in reversed(reusable):
            rest = sum(self._tokens(e) for e in body if digest.covers is not None and e.key >= digest.covers)
            if estimate_tokens(digest.text) + rest <= budget:
                return digest  # computed once, reused by every later turn that fits with it
        previous = reusable[-1] if reusable else None
        start = previous.covers if previous is not None and previous.covers is not None else (0, -1, 0, 0)
        stretch = [e for e in body[:keep_from] if e.key >= start]
        return await self._compress(stretch, previous, boundary, sum(self._tokens(e) for e in body))

    async def _compress(
        self, stretch: list[Entry], previous: Entry | None, boundary: tuple[int, int, int, int], before: int
    ) -> Entry | None:
        moderator = self.room.moderator
        assert moderator is not None
        spec = self.room.model_for(moderator)
        request = digest_request(
            self.room, stretch, previous, max_tokens=min(800, self.room.limits.reply_tokens)
        )
        try:
            completion = await complete(self._model(spec, moderator), request, spec)
        except ModelError as exc:
            await self._emit(RoomWarning(code="compression_failed", message=f"history kept whole: {exc}"))
            return None
        digest = Entry(
            kind="digest", round=boundary[0], stage=boundary[1], speaker=moderator.name, text=completion.text,
            usage=completion.usage, model=spec.label, covers=boundary,
        )  # fmt: skip
        after = estimate_tokens(digest.text) + sum(
            self._tokens(e) for e in self.transcript if e.kind != "task" and e.key >= boundary
        )
        await self._commit(
            digest,
            HistoryCompressed(
                round=boundary[0],
                entries=len(stretch),
                tokens_before=before,
                tokens_after=after,
                model=spec.label,
                text=digest.text,
            ),
        )
        return digest

    # ---- the conclusion (B11, B12) ------------------------------------------------------------------------------

    async def _conclude(self, turn: Turn, agent: AgentSpec, request: ModelRequest) -> None:
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
                await self._emit(
                    TurnRestarted(
                        turn_id=turn.id,
                        round=turn.round,
                        speaker=agent.name,
                        attempt=retry + 2,
                        reason=f"the conclusion was not valid: {invalid}",
                        model=label,
                    )
                )
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
        await self._store_conclusion(turn, conclusion, completion.text, usage, label, fallback)

    async def _fallback_conclusion(self, reason: str, turn: Turn | None = None) -> None:
        """B12: a conclusion from the truncated history when no model answers."""
        moderator = self.room.moderator
        if moderator is None or self.transcript.conclusion is not None:
            return
        if turn is None:
            if not (self.room.protocol == "board" or self.room.has_moderator):
                return
            turn = Turn(
                "conclusion",
                moderator.name,
                self.transcript.last_round,
                9,
                1,
                (self.transcript.last_round, 9, 1, 0),
            )
        t = texts(self.room.language)
        said = [e for e in self.transcript if e.kind in ("speech", "summary") and not e.failed]
        points = " | ".join(f"{e.speaker}: {_short(e.text, 160)}" for e in said[-4:]) or "-"
        conclusion = Conclusion(
            summary=t.fallback_summary.format(reason=reason, points=points),
            decision_advice=t.fallback_advice,
        )
        await self._store_conclusion(turn, conclusion, conclusion.summary, Usage(), "fallback", True)

    async def _store_conclusion(
        self, turn: Turn, conclusion: Conclusion, raw: str, usage: Usage, label: str, fallback: bool
    ) -> None:
        agent = self.room.agent(turn.speaker)
        entry = Entry(
            kind="conclusion", round=turn.round, stage=turn.stage, slot=turn.slot, speaker=agent.name, text=raw,
            usage=usage, model=label, colour=agent.colour, conclusion=conclusion, fallback=fallback,
        )  # fmt: skip
        await self._commit(
            entry,
            self._completed_event(turn, entry),
            RoomConcluded(round=turn.round, speaker=agent.name, fallback=fallback, **conclusion.model_dump()),
        )


def check_intervention(text: str) -> str:
    """The intervention's text, trimmed; a ValueError says what is wrong with it."""
    text = text.strip()
    if not text:
        raise ValueError("an intervention needs some text")
    if len(text) > MAX_INTERVENTION_CHARS:
        raise ValueError(f"an intervention holds at most {MAX_INTERVENTION_CHARS} characters")
    return text


def _restart_reason(error: ModelError, spec: ModelSpec) -> str:
    if isinstance(error, TransientModelError) and error.model in ("", spec.label):
        return f"retrying after: {error}"
    return f"{error}; speaking with {spec.label} instead"


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
