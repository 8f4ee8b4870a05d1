"""`moot worker`: runs rooms for the `moot serve` processes of the scaled-out mode.

A worker takes run requests from the Redis stream `moot:runs` through the consumer group "workers", runs
each room as a `DurableRun` under the room's lease in PostgreSQL (the database's clock; renewed while it
runs), and writes the room's events to its Redis stream. It listens once, for the whole process, on the
control channel for pauses and new words. Every `takeover / 5` seconds it looks in the database for rooms
stored as running whose lease ran out (their worker died) and resumes them at their next turn, and it
claims run requests another worker took but never handled. A lease lasts `takeover * 0.8` seconds, so a
killed worker's rooms run again within `takeover` seconds (default 15).

A worker that cannot renew a room's lease (its database is gone) lets the room go a quarter of a lease
before the lease may run out (`moot.scale.leases`): the run ends at once, writes nothing more and publishes
nothing more (its pause would be stored nowhere), the room stays stored as running, and whichever worker
finds it once the database is back resumes it. Until then the run's calls wait for the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import time

from redis.exceptions import RedisError

from moot import tracing
from moot.exceptions import MootError
from moot.scale.bus import EventPublisher, RunQueue, RunRequest, WorkerLoads, connect, listen_control
from moot.scale.leases import WorkerStore
from moot.service.runtime import Conflict, RoomManager, state_of
from moot.settings import Settings
from moot.store import Store

logger = logging.getLogger(__name__)

TAKE_BLOCK_MS = 1000
BALANCE_WAIT = 0.1  # how soon a worker that left a request to a less busy one looks again
LET_GO_REASON = "this worker lost the database; another worker takes the room over once it is back"


class Worker:
    """One worker process: the room manager, the queue it takes from, and the loops that feed it."""

    def __init__(
        self, settings: Settings, store: Store, manager: RoomManager, publisher: EventPublisher
    ) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.store = store
        self.manager = manager
        self.publisher = publisher
        self.redis = publisher.redis
        self.name = f"{socket.gethostname()}-{secrets.token_hex(6)}"
        self.queue = RunQueue(self.redis, self.name)
        self.capacity = settings.worker_rooms
        self.loads = WorkerLoads(self.redis, self.name, self.capacity, forget_after=settings.takeover_seconds)
        self.takeover = settings.takeover_seconds
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._letting_go: dict[str, asyncio.Task[None]] = {}
        if isinstance(store, WorkerStore):  # a room let go ends unseen: watchers see what the store keeps
            publisher.withhold(store.is_let_go)

    @property
    def lease_ttl(self) -> float:
        return self.takeover * 0.8

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Works until `stop()`; then pauses its rooms, asks for them to run elsewhere, and returns."""
        listening = asyncio.Event()
        loops = [
            asyncio.create_task(listen_control(self.redis, self._control, listening), name="moot-control"),
            asyncio.create_task(self._take_loop(), name="moot-take"),
            asyncio.create_task(self._takeover_loop(), name="moot-takeover"),
        ]
        leases = None
        if isinstance(self.store, WorkerStore):  # a store that keeps account of its leases
            leases = asyncio.create_task(self._lease_loop(), name="moot-leases")
            loops.append(leases)
        try:
            await self.manager.start()  # rooms paused by a shutdown, or left by a killed process
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listening.wait(), self.takeover)
            self.ready.set()
            logger.info("worker %s ready (at most %d rooms)", self.name, self.capacity)
            stopping = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait([stopping, *loops], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopping and task.exception() is not None:
                    logger.error("worker %s: a loop failed: %r", self.name, task.exception())
            stopping.cancel()
        finally:
            others = [task for task in loops if task is not leases]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            rooms = [room for room in self.manager.running() if room not in self._letting_go]
            # the rooms' pauses wait for the database; a room whose lease may run out meanwhile is let go
            await self.manager.shutdown()
            if leases is not None:
                leases.cancel()
                await asyncio.gather(leases, return_exceptions=True)
            await asyncio.gather(*self._letting_go.values(), return_exceptions=True)
            for room_id in rooms:  # paused for the shutdown: another worker takes them on
                with contextlib.suppress(MootError):
                    await self.queue.enqueue(room_id)
            await self.publisher.flush()

    def _room_for_more(self) -> int:
        return max(0, self.capacity - len(self.manager.running()))

    async def _take_loop(self) -> None:
        """Takes run requests one at a time while there is room for more, each started beside the others.

        One at a time, and only while no other live worker with room for more runs fewer rooms (it is left
        the next request; `WorkerLoads`), so that rooms asked for together spread evenly over the workers.
        (Taking every request there was at once left one worker with nine rooms of ten; taking one at a time
        without the loads, eight of ten.) Each request is acknowledged once handled; one this worker never
        handled is taken over by another (`_takeover_loop`).
        """
        delay = 0.2
        handling: dict[asyncio.Task[None], str] = {}
        try:
            while True:
                # the rooms it runs and starts, each once: a room starting may already count as running
                busy = len(set(self.manager.running()).union(handling.values()))
                if busy >= self.capacity:
                    await asyncio.sleep(0.5)
                    continue
                try:
                    if busy > await self.loads.report(busy) >= 0:
                        await asyncio.sleep(BALANCE_WAIT)  # a less busy worker takes the next one
                        continue
                    requests = await self.queue.take(1, TAKE_BLOCK_MS)  # makes the group when it is missing
                    delay = 0.2
                except (RedisError, OSError) as exc:  # Redis away: try again with backoff
                    logger.warning("worker %s: taking run requests failed, trying again: %s", self.name, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                for request in requests:
                    task = asyncio.create_task(self._handle(request), name=f"moot-start-{request.room_id}")
                    handling[task] = request.room_id
                    task.add_done_callback(lambda done: handling.pop(done, None))
        finally:
            for task in handling:
                task.cancel()
            await asyncio.gather(*handling, return_exceptions=True)
            with contextlib.suppress(RedisError, OSError):
                await self.loads.leave()

    async def _handle(self, request: RunRequest) -> None:
        if request.room_id:
            with tracing.attached(request.trace):  # the run continues the trace of the request that asked
                await self._start(request.room_id)
        await self.queue.done(request)

    async def _start(self, room_id: str) -> bool:
        """Runs the room here unless it runs already, somewhere, or is completed."""
        if self.manager.is_running(room_id):
            return False
        try:
            record = await self.store.get_room(room_id)
            if record.status == "completed" or state_of(record) == "running":
                return False
            await self.manager.run(room_id)
        except Conflict:
            return False
        except MootError as exc:
            logger.warning("worker %s: room %s did not start: %s", self.name, room_id, exc)
            return False
        logger.info("worker %s: room %s runs here", self.name, room_id)
        return True

    async def _takeover_loop(self) -> None:
        """Resumes rooms whose worker died, and claims requests a dead worker took but never handled."""
        every = self.takeover / 5
        while True:
            await asyncio.sleep(every)
            try:
                free = self._room_for_more()
                if free:
                    await asyncio.gather(*map(self._start, await self.store.rooms_to_take_over(limit=free)))
                await asyncio.gather(*map(self._handle, await self.queue.reclaim(int(self.takeover * 1000))))
            except (MootError, RedisError, OSError) as exc:  # the next round tries again
                logger.warning("worker %s: looking for rooms to take over failed: %s", self.name, exc)

    async def _lease_loop(self) -> None:
        """Lets go of each room whose lease may run out before a renewal works: the database is gone."""
        every = self.lease_ttl / 8
        while True:
            await asyncio.sleep(every)
            for room_id in self.expiring():
                self._letting_go[room_id] = asyncio.create_task(
                    self._let_go(room_id), name=f"moot-let-go-{room_id}"
                )

    def expiring(self) -> list[str]:
        """Rooms running here whose lease, last renewed by this process, may run out within a quarter of
        its time: renewing it has not worked since (or has not answered)."""
        if not isinstance(self.store, WorkerStore):
            return []
        now, margin = time.monotonic(), self.lease_ttl / 4
        return [
            room_id
            for room_id in self.manager.running()
            if room_id not in self._letting_go
            and (until := self.store.held_until(room_id)) is not None
            and now >= until - margin
        ]

    async def _let_go(self, room_id: str) -> None:
        """Ends the room's run here without writing anything more for it: it stays stored as running, and
        its lease runs out, so another worker resumes it once the database is back."""
        assert isinstance(self.store, WorkerStore)
        self.store.let_go(room_id)
        logger.error(
            "worker %s: room %s: its lease could not be renewed in time; letting it go for another worker",
            self.name,
            room_id,
        )
        try:
            await self.manager.pause(room_id, LET_GO_REASON)  # its writes are refused: nothing is stored
        except MootError as exc:
            logger.info("worker %s: room %s ended while it was let go: %s", self.name, room_id, exc)
        finally:
            self._letting_go.pop(room_id, None)

    async def _control(self, room_id: str, op: str, reason: str) -> None:
        if not self.manager.is_running(room_id):
            return
        try:
            if op == "pause":
                await self.manager.pause(room_id, reason)
            else:
                await self.manager.take_words(room_id)
        except MootError as exc:
            logger.warning("worker %s: room %s: %s failed: %s", self.name, room_id, op, exc)


async def serve_worker(settings: Settings, *, store: Store | None = None) -> None:
    """Runs one worker until SIGTERM or SIGINT; /metrics on `worker_metrics_port` when set."""
    from moot.service.crypto import Cipher
    from moot.service.heap import settle_heap
    from moot.service.providers import ProviderResolver

    if settings.redis_url is None:
        raise MootError("moot worker needs MOOT_REDIS_URL (and a PostgreSQL MOOT_DATABASE_URL)")
    tracing.setup(settings.tracing)
    opened = store or WorkerStore.from_url(settings.resolved_database_url, local_pids=False)
    redis = connect(settings.redis_url.get_secret_value())
    publisher = EventPublisher(redis, maxlen=settings.stream_maxlen, frame=settings.stream_frame_ms / 1000)
    try:
        await opened.ensure_schema()
        resolver = ProviderResolver(opened, Cipher.from_settings(settings), settings)
        manager = RoomManager(
            opened,
            resolve=resolver.resolve,
            models_for=resolver.models_for,
            lease_ttl=settings.takeover_seconds * 0.8,
            sink=publisher.sink,
        )
        worker = Worker(settings, opened, manager, publisher)
        if settings.worker_metrics_port is not None:
            _serve_metrics(manager, settings.worker_metrics_port, settings.host)
        settle_heap()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # Windows
                loop.add_signal_handler(signum, worker.stop)
        await worker.run()
    finally:
        await publisher.close()
        await redis.aclose()
        await opened.close()


def _serve_metrics(manager: RoomManager, port: int, host: str) -> None:
    """The worker's /metrics, as `moot serve` reports them, on a small HTTP server of its own."""
    from prometheus_client import CollectorRegistry, start_http_server

    from moot.service.metrics import MetricsCollector

    registry = CollectorRegistry()
    registry.register(MetricsCollector(manager.metrics, running=lambda: len(manager.running())))
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MootError(f"the worker's /metrics cannot listen on {host}:{port}: {exc.strerror}") from None
    logger.info("worker metrics on http://%s:%d/metrics", host, port)
