"""A worker that loses its database lets its rooms go before their leases can run out, writes nothing more
for them once the database is back, and another worker takes them over. Real PostgreSQL and Redis; the
first worker reaches PostgreSQL through a TCP proxy the test cuts."""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import make_url

from moot.events import RoomCompleted, RoomFailed, RoomPaused
from moot.scale.bus import RunQueue
from moot.scale.leases import LetGo, WorkerStore
from moot.scale.worker import Worker
from moot.spec import RoomSpec
from moot.store import Store
from moot.testing.cluster import RedisServer, TcpProxy
from store.fixtures import Database

from ._cluster import board, eventually, running_worker

TAKEOVER = 5.0  # leases of 4 s


async def test_scale_a_worker_cut_from_its_database_lets_the_room_go_and_another_takes_it_over(
    postgres_database: Database, store: Store, redis_server: RedisServer
) -> None:
    url = make_url(postgres_database.url)
    async with (
        TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy,
        contextlib.AsyncExitStack() as closing,
    ):
        cut_off = WorkerStore.from_url(
            url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
            connect_args=postgres_database.connect_args,
            local_pids=False,
        )
        assert isinstance(cut_off, WorkerStore)
        closing.push_async_callback(cut_off.close)
        room = await store.create_room(RoomSpec.from_data(board(3, 20.0)))
        async with running_worker(cut_off, redis_server.url, TAKEOVER) as first:
            await RunQueue(first.redis).enqueue(room.id)
            await eventually("the room to run on the first worker", lambda: _running(first, room.id))
            await eventually("a turn to be stored", lambda: _stored(store, room.id))
            first.capacity = 0  # it takes no room again: the one that takes this room over is another

            await proxy.cut()
            await eventually("the first worker to let the room go", lambda: _let_go(cut_off, room.id))
            await proxy.mend()  # its database is back while the run it let go still ends
            await eventually("the run let go to end", lambda: _ended(first, room.id))

            stored = await store.get_room(room.id)
            assert stored.status == "running", "a room let go stays stored as running, for another worker"
            events = await store.events_after(room.id, 0)
            assert not [e for e in events if isinstance(e, RoomPaused | RoomFailed)], "nothing was written"
            with pytest.raises(LetGo):
                await cut_off.update_room(room.id, status="paused")

            second_store = WorkerStore.from_url(
                postgres_database.url, connect_args=postgres_database.connect_args, local_pids=False
            )
            closing.push_async_callback(second_store.close)
            async with running_worker(second_store, redis_server.url, TAKEOVER) as second:
                await eventually("the room to complete", lambda: _completed(store, room.id))
                assert second.manager.metrics.turns_completed > 0, "the second worker ran the rest"

    events = await store.events_after(room.id, 0)
    assert [type(e) for e in events if isinstance(e, RoomPaused | RoomFailed | RoomCompleted)] == [
        RoomCompleted
    ]
    assert proxy.connections > 0


async def _running(worker: Worker, room_id: str) -> bool:
    return worker.manager.is_running(room_id)


async def _ended(worker: Worker, room_id: str) -> bool:
    return not worker.manager.is_running(room_id)


async def _let_go(store: WorkerStore, room_id: str) -> bool:
    return store.is_let_go(room_id)


async def _stored(store: Store, room_id: str) -> bool:
    return await store.last_seq(room_id) > 0


async def _completed(store: Store, room_id: str) -> bool:
    return (await store.get_room(room_id)).status == "completed"
