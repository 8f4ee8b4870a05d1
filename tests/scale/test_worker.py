"""A worker in this process, on PostgreSQL and the test's Redis: control words reach the run it holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from moot import durable, tracing
from moot.durable import DurableRun
from moot.scale.bus import WORKERS_SEEN, RunQueue, room_key, send_control
from moot.scale.worker import Worker
from moot.spec import RoomSpec
from moot.store import Store
from moot.testing.cluster import RedisServer
from tracing.spans import Spans

from ._cluster import board, eventually, running_worker


@pytest.fixture
async def worker(store: Store, redis_server: RedisServer) -> AsyncIterator[Worker]:
    async with running_worker(store, redis_server.url) as running:
        yield running


async def test_scale_words_and_pause_reach_the_worker_through_the_control_channel(
    worker: Worker, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durable, "POLL_EVERY", 3600.0)  # no polling: only the control channel can tell
    fed: list[str] = []
    feed = DurableRun.feed

    def spy(self: DurableRun, ref: str, author: str, text: str) -> None:
        fed.append(text)
        feed(self, ref, author, text)

    monkeypatch.setattr(DurableRun, "feed", spy)
    room = await store.create_room(RoomSpec.from_data(board(1, 2.0)))  # slow: the opening takes many seconds
    await RunQueue(worker.redis).enqueue(room.id)
    await eventually("the room to run", lambda: _running_here(worker, room.id))
    await store.add_intervention(room.id, "Keep it under a page.", author="Eve")
    await send_control(worker.redis, room.id, "words")
    await eventually("the words to be fed", lambda: _has(fed, "Keep it under a page."))
    await send_control(worker.redis, room.id, "pause", "lunch")
    await eventually("the room to pause", lambda: _status(store, room.id, "paused"))
    assert not worker.manager.is_running(room.id)
    kinds = [fields.get("k") for _, fields in await worker.redis.xrange(room_key(room.id))]
    assert kinds[0] == "begin"
    assert kinds[-1] == "end"  # the stream says the run ended: API processes close the room's hub


async def test_scale_a_stopping_worker_hands_its_rooms_on(worker: Worker, store: Store) -> None:
    room = await store.create_room(RoomSpec.from_data(board(2, 5.0)))
    await RunQueue(worker.redis).enqueue(room.id)
    await eventually("the room to run", lambda: _running_here(worker, room.id))
    worker.stop()
    await eventually("the room to pause", lambda: _status(store, room.id, "paused"))
    requests = await worker.redis.xrange("moot:runs")
    assert [fields["room"] for _, fields in requests][-1] == room.id  # asked for again, for another worker


async def test_scale_a_queued_run_continues_the_trace_of_the_request_that_asked(
    worker: Worker, store: Store, spans: Spans
) -> None:
    room = await store.create_room(RoomSpec.from_data(board(1, 0.0)))
    tracer = spans.provider.get_tracer("test")
    with tracer.start_as_current_span("POST run") as asking:
        await RunQueue(worker.redis).enqueue(room.id, tracing.carrier())
    await eventually("the room to complete", lambda: _status(store, room.id, "completed"))
    await asyncio.to_thread(spans.run_ended.wait, 60)
    [run] = spans.named("invoke_workflow")
    assert run.parent is not None
    assert run.parent.span_id == asking.get_span_context().span_id
    assert run.context is not None and run.context.trace_id == asking.get_span_context().trace_id
    assert spans.children(run, "invoke_agent"), "the run's turns are its children on the worker"


async def test_scale_a_busier_worker_leaves_the_next_rooms_to_a_less_busy_one(
    store: Store, redis_server: RedisServer
) -> None:
    rooms = [(await store.create_room(RoomSpec.from_data(board(seed, 2.0)))).id for seed in range(8)]
    async with running_worker(store, redis_server.url) as first:
        queue = RunQueue(first.redis)
        for room_id in rooms[:4]:  # slow rooms: each still runs at the end of the test
            await queue.enqueue(room_id)
        await eventually("four rooms to run on the first worker", lambda: _runs(first, 4))
        async with running_worker(store, redis_server.url) as second:
            await eventually("the second worker to say how busy it is", lambda: _seen(first, second.name))
            heard_at = await first.redis.zscore(WORKERS_SEEN, second.name)
            assert heard_at is not None

            async def first_heard_of_it() -> bool:  # from then on the first worker reads no request
                seen = await first.redis.zscore(WORKERS_SEEN, first.name)
                return seen is not None and seen > heard_at

            await eventually("the first worker to hear of the second", first_heard_of_it)
            for room_id in rooms[4:]:
                await queue.enqueue(room_id)
            await eventually("the second worker to run four rooms", lambda: _runs(second, 4))
            # taking turns instead, the first, already running four, would have taken two of them
            assert sorted(first.manager.running()) == sorted(rooms[:4])


async def _runs(worker: Worker, rooms: int) -> bool:
    return len(worker.manager.running()) == rooms


async def _seen(worker: Worker, name: str) -> bool:
    return await worker.redis.zscore(WORKERS_SEEN, name) is not None


async def _running_here(worker: Worker, room_id: str) -> bool:
    return worker.manager.is_running(room_id)


async def _has(fed: list[str], text: str) -> bool:
    return text in fed


async def _status(store: Store, room_id: str, status: str) -> bool:
    return (await store.get_room(room_id)).status == status


def test_scale_moot_worker_runs_rooms_on_the_loop_moot_serve_runs_on() -> None:
    """uvicorn's "auto" (uvloop where installed) for `moot serve`; the same for `moot worker`."""
    from uvicorn import Config

    from moot.cli._worker import loop_factory

    served_factory, worker_factory = Config(app="moot", loop="auto").get_loop_factory(), loop_factory()
    assert served_factory is not None and worker_factory is not None
    served, worked = served_factory(), worker_factory()
    try:
        assert type(worked) is type(served)
        assert type(worked).__module__.startswith("uvloop")  # installed with the server extra
    finally:
        served.close()
        worked.close()
