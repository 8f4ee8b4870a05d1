"""The Redis pieces on a redis-server of the test's own: run requests, control words, rooms' event streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from moot.events import Event, RoomPaused, TurnDelta, TurnStarted
from moot.scale.bus import (
    CONTROL,
    RUNS,
    EventPublisher,
    EventReader,
    RunQueue,
    WorkerLoads,
    connect,
    listen_control,
    room_key,
    send_control,
)
from moot.testing.cluster import RedisServer


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = connect(redis_server.url)
    yield client
    await client.aclose()


def delta(seq: int, text: str = "x") -> TurnDelta:
    return TurnDelta(seq=seq, turn_id="r1:speech:Ana", round=1, speaker="Ana", text=text)


class Recorder:
    """A hub's side of a reader: what it was told, in order."""

    def __init__(self) -> None:
        self.calls: list[str | int] = []
        self.changed = asyncio.Event()

    def begin(self) -> None:
        self.calls.append("begin")
        self.changed.set()

    def publish(self, event: Event) -> None:
        self.calls.append(event.seq)
        self.changed.set()

    def close(self) -> None:
        self.calls.append("end")
        self.changed.set()

    async def until(self, last: str | int) -> None:
        async with asyncio.timeout(30):
            while not self.calls or self.calls[-1] != last:
                self.changed.clear()
                await self.changed.wait()


async def test_scale_queue_a_request_goes_to_one_worker_and_a_dead_ones_is_reclaimed(redis: Redis) -> None:
    ann, ben = RunQueue(redis, "ann"), RunQueue(redis, "ben")
    await ann.ensure_group()
    await ben.ensure_group()  # a second worker finds the group made
    await RunQueue(redis).enqueue("room-1", {"traceparent": "00-abc-def-01"})
    taken = await ann.take(10, 100)
    assert [(r.room_id, r.trace) for r in taken] == [("room-1", {"traceparent": "00-abc-def-01"})]
    assert await ben.take(10, 100) == []  # one consumer group: each request goes to one worker
    # ann died before acknowledging: once idle long enough, ben claims it
    reclaimed = await ben.reclaim(0)
    assert [r.room_id for r in reclaimed] == ["room-1"]
    await ben.done(reclaimed[0])
    assert await ben.reclaim(0) == []


async def test_scale_queue_ignores_requests_that_name_no_room(redis: Redis) -> None:
    queue = RunQueue(redis, "ann")
    await queue.ensure_group()
    await redis.xadd(RUNS, {"room": "../../etc/passwd", "trace": "{"})
    await redis.xadd(RUNS, {"room": "ok-room", "trace": json.dumps({"a": 1, "b": "2"})})
    taken = await queue.take(10, 100)
    assert [(r.room_id, r.trace) for r in taken] == [("", {}), ("ok-room", {"b": "2"})]
    for request in taken:  # the bad one is acknowledged too, so it never comes back
        await queue.done(request)
    assert await queue.reclaim(0) == []


async def test_scale_queue_makes_its_group_again_after_redis_lost_it(
    redis: Redis, redis_server: RedisServer
) -> None:
    queue = RunQueue(redis, "ann")
    await queue.ensure_group()
    redis_server.kill()
    await asyncio.to_thread(redis_server.start)  # empty: no stream, no group
    assert await queue.take(10, 100) == []  # NOGROUP: made again
    await queue.enqueue("room-2")
    assert [r.room_id for r in await queue.take(10, 100)] == ["room-2"]


async def test_scale_control_reaches_every_listener_and_junk_is_ignored(redis: Redis) -> None:
    heard: list[tuple[str, str, str]] = []
    got = asyncio.Event()

    async def handle(room_id: str, op: str, reason: str) -> None:
        heard.append((room_id, op, reason))
        got.set()

    ready = asyncio.Event()
    listener = asyncio.create_task(listen_control(redis, handle, ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        await redis.publish(CONTROL, "not json")
        await redis.publish(CONTROL, json.dumps({"room": "r 1", "op": "pause"}))
        await redis.publish(CONTROL, json.dumps({"room": "r1", "op": "delete"}))
        await send_control(redis, "r1", "pause", "lunch")
        await send_control(redis, "r1", "words")
        async with asyncio.timeout(30):
            while len(heard) < 2:
                got.clear()
                await got.wait()
        assert heard == [("r1", "pause", "lunch"), ("r1", "words", "paused")]
    finally:
        listener.cancel()


async def test_scale_events_are_batched_per_write_and_read_in_order(redis: Redis) -> None:
    publisher = EventPublisher(redis, maxlen=1000, frame=0)  # every delta as it comes: batching alone
    sink = publisher.sink("r1")
    sink.begin()
    for seq in range(1, 51):
        sink.publish(delta(seq))
    sink.close()
    await asyncio.wait_for(publisher.flush(), 30)
    entries = await redis.xrange(room_key("r1"))
    assert len(entries) < 52  # the events that piled up went as one entry
    assert entries[0][1]["k"] == "begin"
    recorder = Recorder()
    reader = EventReader(redis)
    caught_up = reader.watch("r1", recorder)
    await asyncio.wait_for(caught_up.wait(), 30)
    assert recorder.calls == ["begin", *range(1, 51)]  # the end of a run read while catching up: no close
    assert not reader.is_open("r1")
    sink.begin()
    sink.publish(
        TurnStarted(seq=60, turn_id="r1:speech:Ana", round=1, kind="speech", speaker="Ana", model="m")
    )
    sink.close()
    await recorder.until("end")  # live: begin, the event, end
    assert recorder.calls[-3:] == ["begin", 60, "end"]
    await reader.close()
    await publisher.close()


async def test_scale_the_worker_joins_frames_once_so_every_api_process_relays_the_same(redis: Redis) -> None:
    publisher = EventPublisher(redis, maxlen=1000, frame=3600)  # no timer fires: the next event flushes
    sink = publisher.sink("r4")
    sink.begin()
    for seq in range(1, 51):
        sink.publish(delta(seq, f"{seq} "))
    sink.publish(RoomPaused(seq=51, round=1, reason="lunch"))
    sink.close()
    await asyncio.wait_for(publisher.flush(), 30)
    seen: list[list[tuple[int, str]]] = []
    for _ in range(2):  # two API processes, each with its own reader
        texts: list[tuple[int, str]] = []
        recorder = Recorder()
        recorder.publish = lambda event, texts=texts: texts.append(  # type: ignore[method-assign]
            (event.seq, event.text if isinstance(event, TurnDelta) else "")
        )
        reader = EventReader(redis)
        await asyncio.wait_for(reader.watch("r4", recorder).wait(), 30)
        seen.append(texts)
        await reader.close()
    first, second = seen
    assert first == second  # the same frames, whichever process a client reads them through
    assert first == [(1, "1 "), (50, "".join(f"{n} " for n in range(2, 51))), (51, "")]
    await publisher.close()


async def test_scale_events_wait_for_redis_and_go_once_it_is_back(
    redis: Redis, redis_server: RedisServer
) -> None:
    publisher = EventPublisher(redis, maxlen=1000)
    redis_server.kill()
    sink = publisher.sink("r2")
    sink.begin()
    sink.publish(delta(1, "kept "))
    sink.publish(RoomPaused(seq=2, round=1, reason="lunch"))
    await asyncio.wait_for(publisher.failed.wait(), 30)  # it tried, failed, and kept them
    await asyncio.to_thread(redis_server.start)
    await asyncio.wait_for(publisher.flush(), 60)
    entries = await redis.xrange(room_key("r2"))
    lines = [line for _, fields in entries if fields["k"] == "events" for line in fields["d"].split("\n")]
    assert [json.loads(line)["seq"] for line in lines] == [1, 2]
    await publisher.close()


async def test_scale_reader_ignores_entries_that_are_not_events(redis: Redis) -> None:
    await redis.xadd(room_key("r3"), {"k": "begin"})
    await redis.xadd(room_key("r3"), {"k": "events", "d": '{"type": "nope"}\n' + delta(5).model_dump_json()})
    await redis.xadd(room_key("r3"), {"k": "shrug"})
    recorder = Recorder()
    reader = EventReader(redis)
    await asyncio.wait_for(reader.watch("r3", recorder).wait(), 30)
    assert recorder.calls == ["begin", 5]
    assert reader.is_open("r3")
    await reader.close()


async def test_scale_a_room_let_go_publishes_nothing_more_until_its_next_run(redis: Redis) -> None:
    """What a run sends once its worker let it go (its pause) is stored nowhere: it never reaches Redis, nor
    does the end of that run; the room's next run here publishes as usual."""
    let_go: set[str] = set()
    publisher = EventPublisher(redis, maxlen=1000, frame=0)
    publisher.withhold(let_go.__contains__)
    sink = publisher.sink("r5")
    sink.begin()
    sink.publish(delta(1))
    let_go.add("r5")
    sink.publish(RoomPaused(seq=2, round=1, reason="this worker lost the database"))
    sink.close()
    publisher.sink("r6").begin()  # another room goes on
    let_go.discard("r5")  # the lease taken again here: a new run
    again = publisher.sink("r5")
    again.begin()
    again.publish(delta(100_003))
    again.close()
    await asyncio.wait_for(publisher.flush(), 30)
    recorder = Recorder()
    reader = EventReader(redis)
    await asyncio.wait_for(reader.watch("r5", recorder).wait(), 30)
    assert recorder.calls == ["begin", 1, "begin", 100_003]  # no pause, no end between the runs
    assert [fields["k"] for _, fields in await redis.xrange(room_key("r6"))] == ["begin"]
    await reader.close()
    await publisher.close()


async def test_scale_worker_loads_answer_the_fewest_rooms_of_the_other_live_workers(redis: Redis) -> None:
    first = WorkerLoads(redis, "first", capacity=3, forget_after=60)
    second = WorkerLoads(redis, "second", capacity=3, forget_after=60)
    third = WorkerLoads(redis, "third", capacity=3, forget_after=60)
    assert await first.report(2) == -1  # alone
    assert await second.report(1) == 2
    assert await first.report(2) == 1
    assert await third.report(3) == 1  # full itself: still told the others' fewest
    assert await second.report(1) == 2  # the full worker counts for nothing: it takes no more
    await second.leave()
    assert await first.report(2) == -1  # the others left, or are full


async def test_scale_worker_loads_forget_a_worker_not_heard_from(redis: Redis) -> None:
    quick = WorkerLoads(redis, "quick", capacity=10, forget_after=0.001)
    assert await WorkerLoads(redis, "silent", capacity=10, forget_after=60).report(0) == -1
    await asyncio.sleep(0.01)  # longer than `quick` remembers anyone, by Redis's clock
    assert await quick.report(5) == -1  # the silent worker is taken for dead
    assert "silent" not in await redis.hgetall("moot:workers:load")
