"""Rooms running inside the server process, each an asyncio task whose events go to the room's hub.

Every run is a `DurableRun`: each word is stored as it would be from the command line, under the room's lease,
so a room paused by a shutdown, or cut by a crash, is resumed by the next process's `start()`. Rooms keep
running when no client watches; clients come and go through the hub.

The scaled-out mode (decision 0010) uses the same manager twice. In `moot serve` it is given a `Cluster`:
it runs nothing, asks the workers through Redis to run, pause and take words, and feeds each watched room's
hub from the room's Redis stream. In `moot worker` it runs rooms and hands their events to `sink`, which
writes them to Redis instead of a hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from moot import tracing
from moot.durable import LEASE_TTL, DurableRun, RoomBusy, RoomFinished
from moot.engine import check_intervention
from moot.events import Event, RoomPaused, TurnCompleted, TurnDelta, TurnFailed, TurnStarted
from moot.exceptions import MootError
from moot.frames import FRAME_SECONDS
from moot.models import Model
from moot.prompts import is_stop_command
from moot.service.hub import GRACE_SECONDS, LOG_CAP, QUEUE_SIZE, RoomHub
from moot.service.metrics import Metrics
from moot.spec import RoomSpec
from moot.store import RoomRecord, Store
from moot.transcript import USER

if TYPE_CHECKING:
    from moot.scale.cluster import Cluster

logger = logging.getLogger(__name__)

SHUTDOWN_REASON = "server shutdown"
WHILE_RUNNING = ("pause", "stop", "intervene")
WHILE_STOPPED = ("run", "stop", "intervene")
_PAGE = 200

Resolve = Callable[[RoomRecord], Awaitable[RoomSpec]]
ModelsFor = Callable[[RoomSpec], Mapping[str, Model]]


class Sink(Protocol):
    """Where a run's events go: a hub in this process, or a worker's Redis stream."""

    def begin(self) -> None: ...

    def publish(self, event: Event) -> None: ...

    def close(self) -> None: ...


class Unavailable(MootError):
    """Something the request needs (Redis, in the scaled-out mode) cannot be reached now: try again."""


class Conflict(MootError):
    """The room is not in a state that allows this: `state` is where it stands, `allowed` what it takes."""

    def __init__(self, room_id: str, state: str, message: str, allowed: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.room_id = room_id
        self.state = state
        self.allowed = tuple(allowed)


def state_of(record: RoomRecord) -> str:
    """The room's status as a person should see it: "running" whose process is gone was interrupted."""
    if record.status == "running" and (record.lease is None or not record.lease.alive):
        return "interrupted"
    return record.status


@dataclass
class _Live:
    """A run of this process: the durable run to steer, the task that feeds its hub, the models it owns."""

    durable: DurableRun
    models: list[Model]
    task: asyncio.Task[None] = field(init=False)


@dataclass
class _Timing:
    """When each turn in flight started, and which have streamed their first text yet."""

    started: dict[str, float] = field(default_factory=dict)
    streaming: set[str] = field(default_factory=set)

    def end(self, turn_id: str) -> float | None:
        self.streaming.discard(turn_id)
        began = self.started.pop(turn_id, None)
        return None if began is None else time.monotonic() - began


class RoomManager:
    """Runs stored rooms in this process and keeps a hub per watched room.

    `resolve` turns a stored record into the spec to run (e.g. with the keys of stored providers filled
    in, in memory only); the run then speaks with models built from that spec. `models_for` gives the
    models per agent name instead (tests); the manager closes them after each run.
    """

    def __init__(
        self,
        store: Store,
        *,
        resolve: Resolve | None = None,
        models_for: ModelsFor | None = None,
        lease_ttl: float = LEASE_TTL,
        grace: float = GRACE_SECONDS,
        queue_size: int = QUEUE_SIZE,
        log_cap: int = LOG_CAP,
        frame: float = FRAME_SECONDS,
        cluster: Cluster | None = None,
        sink: Callable[[str], Sink] | None = None,
    ) -> None:
        """`cluster`: this is a `moot serve` of the scaled-out mode; `sink`: a worker's (room id -> sink)."""
        self.store = store
        self.cluster = cluster
        self._sink = sink
        self.metrics = Metrics()
        self._resolve = resolve
        self._models_for = models_for
        self._ttl = lease_ttl
        self._grace = grace
        self._queue_size = queue_size
        self._log_cap = log_cap
        self._frame = frame  # a turn's deltas are joined over this many seconds for stream clients
        self._runs: dict[str, _Live] = {}
        self._starting: set[str] = set()
        self._hubs: dict[str, RoomHub] = {}
        self._later: set[asyncio.Task[None]] = set()
        self._closing = False

    # ---- what runs ----------------------------------------------------------------------------------------

    def is_running(self, room_id: str) -> bool:
        return room_id in self._runs

    def running(self) -> list[str]:
        return list(self._runs)

    def hub(self, room_id: str) -> RoomHub:
        """The room's hub, made on first use; dropped again once it has no run, no log and no client."""
        hub = self._hubs.get(room_id)
        if hub is None:
            hub = self._hubs[room_id] = RoomHub(
                self.store,
                room_id,
                cap=self._log_cap,
                queue_size=self._queue_size,
                grace=self._grace,
                metrics=self.metrics,
                on_idle=self._forget_hub,
                frame=self._frame if self.cluster is None else 0.0,  # a worker joined them already
            )
            if self.cluster is not None:
                self.cluster.watch(hub)
        return hub

    def _forget_hub(self, hub: RoomHub) -> None:
        if self._hubs.get(hub.room_id) is hub and hub.idle:
            del self._hubs[hub.room_id]
            if self.cluster is not None:
                self.cluster.unwatch(hub.room_id)

    # ---- starting and ending the process --------------------------------------------------------------------

    async def start(self) -> list[str]:
        """Resumes the rooms a previous process left running (killed) or paused by its shutdown.

        A running room whose lease still looks alive (a restarted container reuses its pid) is tried again
        when that lease runs out: if nobody renewed it by then, its process is gone. In the scaled-out
        mode `moot serve` resumes nothing: the workers do.
        """
        if self.cluster is not None:
            return []
        found: list[RoomRecord] = []
        offset = 0
        while True:
            page = await self.store.list_rooms(limit=_PAGE, offset=offset)
            found.extend(page)
            if len(page) < _PAGE:
                break
            offset += _PAGE
        resumed: list[str] = []
        for record in found:
            if record.status == "running" and record.lease is not None and record.lease.alive:
                self._resume_later(record.id, record.lease.remaining + 0.5)
            elif await self._left_by_previous_process(record) and await self._resume(record.id):
                resumed.append(record.id)
        return resumed

    async def _left_by_previous_process(self, record: RoomRecord) -> bool:
        if state_of(record) == "interrupted":
            return True
        if record.status != "paused":
            return False
        last = await self.store.events_after(record.id, await self.store.last_seq(record.id) - 1)
        return bool(last) and isinstance(last[-1], RoomPaused) and last[-1].reason == SHUTDOWN_REASON

    async def _resume(self, room_id: str) -> bool:
        try:
            await self.run(room_id)
        except MootError as exc:
            logger.warning("room %s was not resumed: %s", room_id, exc)
            return False
        logger.info("room %s resumed", room_id)
        return True

    def _resume_later(self, room_id: str, delay: float) -> None:
        async def later() -> None:
            await asyncio.sleep(max(0.0, delay))
            try:
                record = await self.store.get_room(room_id)
            except MootError as exc:
                logger.warning("room %s was not resumed: %s", room_id, exc)
                return
            if state_of(record) == "interrupted":
                await self._resume(room_id)

        task = asyncio.create_task(later(), name=f"moot-resume-{room_id}")
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def shutdown(self) -> None:
        """Pauses every room with reason "server shutdown" and returns once each pause is stored."""
        self._closing = True
        for task in list(self._later):
            task.cancel()
        live = list(self._runs.values())
        for run in live:
            run.durable.pause(SHUTDOWN_REASON)
        await asyncio.gather(*(run.task for run in live), *self._later, return_exceptions=True)
        for hub in list(self._hubs.values()):
            hub.dispose()
        self._hubs.clear()
        if self.cluster is not None:
            await self.cluster.close()

    # ---- steering -----------------------------------------------------------------------------------------

    async def run(self, room_id: str) -> None:
        """Starts or resumes the room here; returns once it runs (its status is "running").

        Conflict when it already runs, here or in another process, or is completed.
        """
        if room_id in self._runs or room_id in self._starting:
            raise _running_conflict(room_id, "here")
        if self._closing:
            raise _closing_conflict(room_id)
        if self.cluster is not None:
            await self._run_elsewhere(room_id)
            return
        self._starting.add(room_id)
        try:
            record = await self.store.get_room(room_id)
            if record.status == "completed":
                raise _completed_conflict(room_id)
            if state_of(record) == "running":
                raise _running_conflict(room_id, "in another process")
            spec = await self._resolve(record) if self._resolve is not None else None
            models = dict(self._models_for(spec or record.spec)) if self._models_for is not None else None
        finally:
            self._starting.discard(room_id)
        owned = list({id(model): model for model in models.values()}.values()) if models else []
        if self._closing:  # it began while this room was being prepared
            for model in owned:
                await model.aclose()
            raise _closing_conflict(room_id)
        live = self._runs[room_id] = _Live(
            # the spec just read goes with it: the start reads the room again, and need not parse it again
            DurableRun(self.store, room_id, spec=spec or record.spec, models=models, lease_ttl=self._ttl),
            owned,
        )
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        started.add_done_callback(_retrieved)  # a caller that went away leaves no unretrieved error behind
        live.task = asyncio.create_task(self._drive(room_id, live, started), name=f"moot-room-{room_id}")
        await asyncio.shield(started)  # a caller that goes away does not stop the room

    async def pause(self, room_id: str, reason: str = "paused") -> None:
        """Pauses a room running here; returns once the pause is stored. Conflict when it is not running."""
        live = self._runs.get(room_id)
        if live is None:
            record = await self.store.get_room(room_id)
            state = state_of(record)
            if state == "running" and self.cluster is not None:
                await self._unavailable_as_such(self.cluster.pause(room_id, reason))
                await self._until(room_id, lambda now: state_of(now) != "running")
                return
            if state == "running":
                raise Conflict(
                    room_id,
                    state,
                    f"room {room_id} runs in another process; pause it there, or stop it or intervene from here",
                    ("stop", "intervene"),
                )
            raise _not_running_conflict(room_id, state)
        live.durable.pause(reason)
        await asyncio.shield(live.task)

    async def stop(self, room_id: str) -> None:
        """Ends the discussion early with a conclusion, wherever it stands (B9).

        Running here: the run takes the stop in at its next step. Running elsewhere: the stop is stored and
        that process takes it in. Paused or interrupted: the stop is stored and the room runs to conclude.
        """
        live = self._runs.get(room_id)
        if live is not None:
            await live.durable.stop()
            return
        await self._store_words(room_id, "/stop", USER)
        if self.cluster is not None:
            await self.cluster.words(room_id)

    async def intervene(self, room_id: str, text: str, author: str = USER) -> str:
        """Stores a person's words at once and returns their id; they join at the room's next step (B9).

        A stop command stops the room as `stop` does. ValueError for an empty or too long text.
        """
        text = check_intervention(text)
        live = self._runs.get(room_id)
        if live is not None:
            return await live.durable.intervene(text, author=author)
        ref = await self._store_words(room_id, text, author)
        if self.cluster is not None:
            await self.cluster.words(room_id)
        return ref

    async def take_words(self, room_id: str) -> None:
        """A worker was told of new words for a room: the run takes them in now, if it runs here."""
        live = self._runs.get(room_id)
        if live is not None:
            await live.durable.take_stored_words()

    # ---- the scaled-out mode's `moot serve` --------------------------------------------------------------

    async def _run_elsewhere(self, room_id: str) -> None:
        """Asks the workers to run the room; returns once one runs it, or the takeover time passed."""
        assert self.cluster is not None
        record = await self.store.get_room(room_id)
        if record.status == "completed":
            raise _completed_conflict(room_id)
        if state_of(record) == "running":
            raise _running_conflict(room_id, "in another process")
        await self._unavailable_as_such(self.cluster.enqueue(room_id, tracing.carrier()))
        await self._until(
            room_id,
            lambda now: (
                now.status in ("completed", "error")
                or (state_of(now) == "running" and now.updated_at > record.updated_at)
            ),
        )

    async def _until(self, room_id: str, done: Callable[[RoomRecord], bool]) -> None:
        """Waits (at most the takeover time) until the stored room is `done`: a worker acted on a request."""
        assert self.cluster is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cluster.takeover
        delay = 0.02
        while loop.time() < deadline:
            if done(await self.store.get_room(room_id)):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        logger.warning("room %s: no worker acted on the request yet; it will when one is free", room_id)

    @staticmethod
    async def _unavailable_as_such(call: Awaitable[None]) -> None:
        from moot.scale.bus import BusUnavailable

        try:
            await call
        except BusUnavailable as exc:
            raise Unavailable(str(exc)) from exc

    async def _store_words(self, room_id: str, text: str, author: str) -> str:
        """Words for a room not running here: stored; a stop command runs it so that it concludes."""
        record = await self.store.get_room(room_id)
        if record.status == "completed":
            raise _completed_conflict(room_id)
        ref = await self.store.add_intervention(room_id, text, author=author)
        if is_stop_command(text) and state_of(record) != "running":
            with contextlib.suppress(Conflict):  # it started meanwhile: that run takes the stop in
                await self.run(room_id)
        return ref

    # ---- the run --------------------------------------------------------------------------------------------

    async def _drive(self, room_id: str, live: _Live, started: asyncio.Future[None]) -> None:
        """Reads the run and publishes each event; the first one tells `run()` the room is running."""
        hub: Sink = self._sink(room_id) if self._sink is not None else self.hub(room_id)
        begun = self._sink is None  # a hub goes live at once; a worker's stream shows only runs that began
        if begun:
            hub.begin()
        timing = _Timing()

        def deliver(delta: TurnDelta) -> None:  # what the loop below does with a delta, once it has begun
            self._count(delta, timing)
            hub.publish(delta)

        live.durable.deliver = deliver
        try:
            async for event in live.durable:
                if not begun:
                    hub.begin()
                    begun = True
                if not started.done():
                    started.set_result(None)
                self._count(event, timing)
                hub.publish(event)
        except (RoomBusy, RoomFinished) as exc:
            if not started.done():
                started.set_exception(
                    _completed_conflict(room_id)
                    if isinstance(exc, RoomFinished)
                    else _running_conflict(room_id, "in another process")
                )
        except Exception as exc:
            if not started.done():
                started.set_exception(exc)
            elif isinstance(exc, MootError):  # a failure it foresaw says what it is: no traceback
                logger.warning("room %s: the run ended: %s", room_id, exc)
            else:
                logger.exception("room %s: the run ended with an error", room_id)
        finally:
            if begun:
                hub.close()
            if self._runs.get(room_id) is live:
                del self._runs[room_id]
            for model in live.models:
                with contextlib.suppress(Exception):
                    await model.aclose()
            if not started.done():
                started.cancel()

    def _count(self, event: Event, timing: _Timing) -> None:
        """Turns, tokens and model latency for /metrics, timed on this process's monotonic clock."""
        m = self.metrics
        if isinstance(event, TurnStarted):
            timing.started[event.turn_id] = time.monotonic()
        elif isinstance(event, TurnDelta):
            began = timing.started.get(event.turn_id)
            if began is not None and event.turn_id not in timing.streaming:
                timing.streaming.add(event.turn_id)
                m.first_token_seconds.observe(time.monotonic() - began)
        elif isinstance(event, TurnCompleted):
            m.turns_completed += 1
            m.input_tokens += event.usage.input_tokens
            m.output_tokens += event.usage.output_tokens
            m.cost_usd += event.usage.cost_usd
            took = timing.end(event.turn_id)
            if took is not None:
                m.turn_seconds.observe(took)
        elif isinstance(event, TurnFailed):
            m.turns_failed += 1
            timing.end(event.turn_id)


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _closing_conflict(room_id: str) -> Conflict:
    return Conflict(room_id, "shutting down", "the server is shutting down; run the room once it is back")


def _running_conflict(room_id: str, where: str) -> Conflict:
    return Conflict(
        room_id,
        "running",
        f"room {room_id} is already running {where}; you can pause it, stop it or intervene while it runs",
        WHILE_RUNNING,
    )


def _completed_conflict(room_id: str) -> Conflict:
    return Conflict(
        room_id,
        "completed",
        f"room {room_id} is completed; nothing is left to run: read its events or export its transcript",
    )


def _not_running_conflict(room_id: str, state: str) -> Conflict:
    if state == "completed":
        return Conflict(
            room_id, state, f"room {room_id} is completed, not running; there is nothing to pause"
        )
    return Conflict(
        room_id,
        state,
        f"room {room_id} is {state}, not running; you can run it, stop it (it concludes) or intervene",
        WHILE_STOPPED,
    )
