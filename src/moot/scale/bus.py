"""What travels through Redis in the scaled-out mode: run requests, control words, and rooms' events.

    moot:runs            a stream read by the consumer group "workers": one entry per room to run
    moot:control         a pub/sub channel every worker listens on once: pause a room, take its new words
    moot:workers:*       each live worker's rooms and room for more, so that the least busy takes the next
    moot:room:<id>       a stream per room: its events, one entry per batch, trimmed to `maxlen` entries

Redis keeps nothing the rooms cannot do without: the database holds every turn, every person's words and
every lease. Redis lost (restarted empty) costs only events not yet stored, which the publisher keeps in
memory and sends again once it is back, and run requests, which the workers recover from the database.
Everything read from Redis is checked before use: a room id must look like one, an event must parse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from moot.events import Event, event_json, parse_event
from moot.exceptions import MootError
from moot.frames import FRAME_SECONDS, Frames
from moot.scrub import scrub

logger = logging.getLogger(__name__)

RUNS = "moot:runs"
GROUP = "workers"
CONTROL = "moot:control"
RUNS_MAXLEN = 10_000
ROOM_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
RETRY_FIRST = 0.2
RETRY_LONGEST = 5.0
PENDING_CAP = 200_000  # events a publisher keeps for Redis while it is away; past it the oldest go
READ_BLOCK_MS = 250
READ_COUNT = 1000  # how long one process-wide read of the rooms' streams waits for news
ControlOp = Literal["pause", "words"]


class BusUnavailable(MootError):
    """Redis could not be reached for something that cannot wait (a run request, a pause)."""


def connect(url: str) -> Redis:
    """A client on `url` (redis://host:port/db) that answers strings."""
    client: Redis = Redis.from_url(url, decode_responses=True, health_check_interval=10)
    return client


def room_key(room_id: str) -> str:
    return f"moot:room:{room_id}"


def valid_room(value: object) -> str | None:
    """The room id when `value` is one, else None: what came from Redis is not trusted."""
    return value if isinstance(value, str) and ROOM_ID.fullmatch(value) else None


def _unreachable(what: str, exc: RedisError) -> BusUnavailable:
    logger.warning("redis: %s failed: %s", what, scrub(str(exc)))
    return BusUnavailable(f"the queue (Redis) was unavailable while {what}; try again once it is back")


async def _backoff(delay: float) -> float:
    await asyncio.sleep(delay)
    return min(delay * 2, RETRY_LONGEST)


# ---- run requests -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A room to run, and the trace context of the request that asked for it (empty when not traced)."""

    id: str
    room_id: str
    trace: dict[str, str] = field(default_factory=dict)


class RunQueue:
    """The run requests: API processes add, workers take them through one consumer group."""

    def __init__(self, redis: Redis, consumer: str = "") -> None:
        self.redis = redis
        self.consumer = consumer

    async def enqueue(self, room_id: str, trace: Mapping[str, str] | None = None) -> None:
        fields = {"room": room_id, "trace": json.dumps(dict(trace or {}))}
        try:
            await self.redis.xadd(RUNS, fields, maxlen=RUNS_MAXLEN, approximate=True)  # type: ignore[arg-type]
        except RedisError as exc:
            raise _unreachable("asking for the room to run", exc) from exc

    async def ensure_group(self) -> None:
        """The workers' group, made on first use (and again after Redis lost it); from the stream's start."""
        try:
            await self.redis.xgroup_create(RUNS, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def take(self, count: int, block_ms: int) -> list[RunRequest]:
        """New requests for this consumer; each must be acknowledged with `done` once handled."""
        try:
            reply = await self.redis.xreadgroup(
                GROUP, self.consumer, {RUNS: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        return [req for _, entries in reply or [] for req in map(_request, entries) if req is not None]

    async def reclaim(self, idle_ms: int, count: int = 50) -> list[RunRequest]:
        """Requests a consumer took and never acknowledged (it died) for `idle_ms`: now this consumer's."""
        try:
            reply = await self.redis.xautoclaim(RUNS, GROUP, self.consumer, idle_ms, "0-0", count=count)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        return [req for req in map(_request, reply[1]) if req is not None]

    async def done(self, request: RunRequest) -> None:
        with contextlib.suppress(RedisError):  # unacknowledged, it is reclaimed and found handled
            await self.redis.xack(RUNS, GROUP, request.id)


def _request(entry: Any) -> RunRequest | None:
    """A run request from a stream entry, or None (logged) when it is not one."""
    entry_id, fields = entry
    room_id = valid_room(fields.get("room")) if isinstance(fields, dict) else None
    if room_id is None:
        logger.warning("redis: a run request %s names no room; ignored", entry_id)
        return RunRequest(entry_id, "") if isinstance(entry_id, str) else None
    try:
        raw = json.loads(fields.get("trace") or "{}")
    except ValueError:
        raw = {}
    trace = (
        {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(raw, dict)
        else {}
    )
    return RunRequest(entry_id, room_id, trace)


# ---- the workers' loads -----------------------------------------------------------------------------------

WORKERS_SEEN = (
    "moot:workers:seen"  # sorted set: worker -> when it last said how busy it is (Redis's clock, ms)
)
WORKERS_LOAD = "moot:workers:load"  # hash: worker -> "rooms/capacity"

# Notes this worker's load and when (Redis's own clock: one clock for every host), forgets workers not heard
# from for ARGV[3] ms, and answers the fewest rooms among the other workers with room for more (-1: none).
_REPORT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '/' .. ARGV[4])
redis.call('ZADD', KEYS[1], now, ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
for _, name in ipairs(gone) do
  redis.call('ZREM', KEYS[1], name)
  redis.call('HDEL', KEYS[2], name)
end
local least = -1
for _, name in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if name ~= ARGV[1] then
    local rooms, capacity = string.match(redis.call('HGET', KEYS[2], name) or '', '^(%d+)/(%d+)$')
    rooms, capacity = tonumber(rooms), tonumber(capacity)
    if rooms and capacity and rooms < capacity and (least < 0 or rooms < least) then
      least = rooms
    end
  end
end
return least
"""


class WorkerLoads:
    """How many rooms each live worker runs, so that a worker running more than another leaves the next
    request to it: rooms asked for together spread evenly, whatever order the workers read in."""

    def __init__(self, redis: Redis, name: str, capacity: int, *, forget_after: float) -> None:
        """`forget_after`: seconds after which a worker not heard from counts no more (it died)."""
        self.redis = redis
        self.name = name
        self.capacity = capacity
        self._forget_ms = max(1, round(forget_after * 1000))
        self._script = redis.register_script(_REPORT)

    async def report(self, rooms: int) -> int:
        """Says this worker runs `rooms`; returns the fewest rooms another live worker with room for more
        runs, or -1 when there is none (alone, or the others are full)."""
        least = await self._script(
            keys=[WORKERS_SEEN, WORKERS_LOAD], args=[self.name, rooms, self._forget_ms, self.capacity]
        )
        return int(least)

    async def leave(self) -> None:
        """This worker stops: the others no longer wait for it to take its share."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(WORKERS_SEEN, self.name)
            pipe.hdel(WORKERS_LOAD, self.name)
            await pipe.execute()


# ---- control ---------------------------------------------------------------------------------------------


async def send_control(redis: Redis, room_id: str, op: ControlOp, reason: str = "") -> None:
    """Tells every worker; the one running the room acts. Redis down: pause fails, words wait in the store."""
    try:
        await redis.publish(CONTROL, json.dumps({"room": room_id, "op": op, "reason": reason[:500]}))
    except RedisError as exc:
        if op == "pause":
            raise _unreachable("pausing the room", exc) from exc
        logger.warning(
            "redis: telling the worker of new words failed (it reads them at its next step): %s", exc
        )


async def listen_control(
    redis: Redis, handle: Callable[[str, ControlOp, str], Awaitable[None]], ready: asyncio.Event | None = None
) -> None:
    """Listens on the control channel for as long as it runs, subscribing again after Redis comes back."""
    delay = RETRY_FIRST
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(CONTROL)
            if ready is not None:
                ready.set()
            delay = RETRY_FIRST
            async for message in pubsub.listen():
                parsed = _control(message.get("data"))
                if parsed is not None:
                    await handle(*parsed)
        except (RedisError, OSError) as exc:
            logger.warning("redis: the control channel was lost, listening again: %s", scrub(str(exc)))
            delay = await _backoff(delay)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


def _control(data: object) -> tuple[str, ControlOp, str] | None:
    try:
        message = json.loads(data) if isinstance(data, str) else None
    except ValueError:
        message = None
    if not isinstance(message, dict):
        return None
    room_id, op, reason = valid_room(message.get("room")), message.get("op"), message.get("reason", "")
    if room_id is None or op not in ("pause", "words") or not isinstance(reason, str):
        logger.warning("redis: a control message that is not one was ignored")
        return None
    return room_id, op, reason[:500] or "paused"


# ---- events: the worker's side ----------------------------------------------------------------------------


class RoomSink:
    """One room's run as the worker publishes it: `begin`, `publish` each event, `close`; never waits.

    Nothing more goes once the worker let the room go (`EventPublisher.withhold`): what the run sends then
    (its pause, its failure) is stored nowhere, and the stream shows the run as it shows a killed worker's,
    begun and never ended, until the next worker's run begins.
    """

    def __init__(self, publisher: EventPublisher, room_id: str) -> None:
        self._publisher = publisher
        self.room_id = room_id
        # joined here, once: every API process then relays the same frames, so a client that reconnects to
        # another one ends with exactly the text of one that did not
        self._frames = Frames(self._put, publisher.frame)

    def begin(self) -> None:
        self._frames.reset()
        self._put({"k": "begin"})

    def publish(self, event: Event) -> None:
        self._frames.publish(event)

    def close(self) -> None:
        self._frames.flush()
        self._put({"k": "end"})

    def _put(self, item: Event | dict[str, str]) -> None:
        if not self._publisher.withheld(self.room_id):
            self._publisher.put(self.room_id, item)


class EventPublisher:
    """Writes every room's events to their streams from one task: what piled up goes as one entry per room.

    Events wait here while Redis is away and go once it is back, so watchers miss none; past `PENDING_CAP`
    the oldest go (watchers then replay the stored ones from the database).
    """

    def __init__(self, redis: Redis, *, maxlen: int, frame: float = FRAME_SECONDS) -> None:
        """`frame`: seconds over which a turn's deltas are joined before they go (MOOT_STREAM_FRAME_MS)."""
        self.redis = redis
        self.maxlen = maxlen
        self.frame = frame
        self._pending: dict[str, list[Event | dict[str, str]]] = {}
        self._count = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self.failed = asyncio.Event()  # set once a write failed (Redis away)
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.withheld: Callable[[str], bool] = lambda _room_id: False

    def sink(self, room_id: str) -> RoomSink:
        return RoomSink(self, room_id)

    def withhold(self, let_go: Callable[[str], bool]) -> None:
        """`let_go(room_id)`: whether the worker let the room go; its sink sends nothing more while so."""
        self.withheld = let_go

    def put(self, room_id: str, item: Event | dict[str, str]) -> None:
        self._pending.setdefault(room_id, []).append(item)
        self._count += 1
        self._idle.clear()
        if self._count > PENDING_CAP:
            self._drop_oldest()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="moot-event-publisher")

    def _drop_oldest(self) -> None:
        room = max(self._pending, key=lambda key: len(self._pending[key]))
        dropped = self._pending[room][: len(self._pending[room]) // 2]
        del self._pending[room][: len(dropped)]
        self._count -= len(dropped)
        logger.warning("redis: %d events of room %s were dropped while Redis was away", len(dropped), room)

    async def flush(self) -> None:
        """Returns once everything put so far was written (or dropped): for a worker that stops."""
        if self._count and self._task is not None and not self._task.done():
            await self._idle.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            if not self._count:
                self._wake.clear()
                await self._wake.wait()
            batch, self._pending, sent = self._pending, {}, self._count
            self._count = 0
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for room_id, items in batch.items():
                        for fields in _entries(items):
                            pipe.xadd(room_key(room_id), fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
                    await pipe.execute()
                self.batches += 1
                delay = RETRY_FIRST
                if not self._count:
                    self._idle.set()
            except (RedisError, OSError) as exc:
                for room_id, items in batch.items():  # back in front, in order, for the next try
                    self._pending[room_id] = [*items, *self._pending.get(room_id, [])]
                self._count += sent
                self.failed.set()
                logger.warning("redis: publishing events failed, trying again: %s", scrub(str(exc)))
                delay = await _backoff(delay)


def _entries(items: list[Event | dict[str, str]]) -> list[dict[str, str]]:
    """Stream entries for one room's items: markers alone, the events between them joined in one."""
    entries: list[dict[str, str]] = []
    events: list[str] = []
    for item in items:
        if isinstance(item, dict):
            if events:
                entries.append({"k": "events", "d": "\n".join(events)})
                events = []
            entries.append(item)
        else:
            events.append(event_json(item))
    if events:
        entries.append({"k": "events", "d": "\n".join(events)})
    return entries


# ---- events: the API's side -------------------------------------------------------------------------------


@dataclass
class _Watched:
    feed: Any
    last_id: str = "0-0"
    last_seq: int = 0  # the highest seq handed to the feed
    open: bool = False  # the stream shows a run that began and has not ended
    first_read: asyncio.Event = field(default_factory=asyncio.Event)  # set once caught up with the stream


class EventReader:
    """Reads the streams of the rooms this process watches, all in one blocking read at a time."""

    def __init__(
        self, redis: Redis, missed: Callable[[str, int], Awaitable[list[Event]]] | None = None
    ) -> None:
        """`missed(room_id, after)`: stored events past `after`, asked for when a new run of a room begins
        (a killed worker may have stored events it never got to publish)."""
        self.redis = redis
        self._missed = missed
        self._rooms: dict[str, _Watched] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def watch(self, room_id: str, feed: Any) -> asyncio.Event:
        """Feeds the room's stream, from its start, to `feed`; the event returned is set once first read."""
        watched = self._rooms.get(room_id)
        if watched is None or watched.feed is not feed:
            watched = self._rooms[room_id] = _Watched(feed)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="moot-event-reader")
        return watched.first_read

    def unwatch(self, room_id: str) -> None:
        self._rooms.pop(room_id, None)

    def is_open(self, room_id: str) -> bool:
        """Whether the room's stream shows a run that began and has not ended (once first read)."""
        watched = self._rooms.get(room_id)
        return watched is not None and watched.open

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            if not self._rooms:
                self._wake.clear()
                await self._wake.wait()
                continue
            rooms = dict(self._rooms)
            catching_up = any(not watched.first_read.is_set() for watched in rooms.values())
            try:
                reply = await self.redis.xread(
                    {room_key(room_id): watched.last_id for room_id, watched in rooms.items()},
                    count=READ_COUNT,
                    block=None if catching_up else READ_BLOCK_MS,
                )
                delay = RETRY_FIRST
            except (RedisError, OSError) as exc:
                logger.warning("redis: reading rooms' events failed, trying again: %s", scrub(str(exc)))
                delay = await _backoff(delay)
                continue
            full: set[str] = set()
            for key, entries in reply or []:
                room_id = key.removeprefix("moot:room:")
                watched = self._rooms.get(room_id)
                if watched is not None and watched is rooms.get(room_id):
                    await self._apply(room_id, watched, entries)
                    if len(entries) >= READ_COUNT:
                        full.add(room_id)
            for room_id, watched in rooms.items():
                if room_id not in full:
                    watched.first_read.set()

    async def _apply(self, room_id: str, watched: _Watched, entries: list[Any]) -> None:
        for entry_id, fields in entries:
            watched.last_id = entry_id
            kind = fields.get("k") if isinstance(fields, dict) else None
            if kind == "begin":
                if watched.last_seq and self._missed is not None:
                    try:
                        for event in await self._missed(room_id, watched.last_seq):
                            self._publish(watched, event)
                    except MootError as exc:
                        logger.warning("room %s: stored events could not be read: %s", room_id, exc)
                watched.open = True
                watched.feed.begin()
            elif kind == "end":
                watched.open = False
                if watched.first_read.is_set():  # while catching up, a later run may follow in the stream
                    watched.feed.close()
            elif kind == "events" and isinstance(fields.get("d"), str):
                if watched.open is not True:  # the begin was trimmed away, or lost with Redis
                    watched.open = True
                    watched.feed.begin()
                for line in fields["d"].split("\n"):
                    try:
                        self._publish(watched, parse_event(line))
                    except ValidationError:
                        logger.warning("redis: room %s: an event that is not one was ignored", room_id)
            else:
                logger.warning("redis: room %s: an entry of unknown kind was ignored", room_id)

    @staticmethod
    def _publish(watched: _Watched, event: Event) -> None:
        watched.last_seq = max(watched.last_seq, event.seq)
        watched.feed.publish(event)
