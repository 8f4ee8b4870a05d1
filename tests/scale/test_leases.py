"""A worker that loses its database lets its rooms go before their leases can run out, writes and publishes
nothing more for them, and another worker takes them over; a database away for less than that only holds
its rooms up. Real PostgreSQL and Redis; the worker reaches PostgreSQL through a TCP proxy the test cuts."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from sqlalchemy import make_url

from durable._support import HeldModel, chaired_by
from moot.durable import CUT_BY_CRASH, STORE_RETRIES
from moot.engine import Run
from moot.events import (
    Event,
    RoomCompleted,
    RoomFailed,
    RoomPaused,
    TurnCompleted,
    TurnDelta,
    TurnRestarted,
    TurnStarted,
)
from moot.scale.bus import RunQueue, connect
from moot.scale.cluster import Cluster
from moot.scale.leases import LetGo, WorkerStore
from moot.scale.worker import Worker
from moot.service.hub import Subscription
from moot.service.runtime import RoomManager
from moot.spec import RoomSpec
from moot.store import Store
from moot.testing.cluster import RedisServer, TcpProxy
from store.fixtures import Database

from ._cluster import board, eventually, running_worker

TAKEOVER = 5.0  # leases of 4 s
# Leases of 48 s, renewed every 16 s: the worker lets a room go no sooner than 20 s after its database went,
# far later than the run's own retries (about 3 s) would have given up.
PATIENT_TAKEOVER = 60.0
END_OF_RUN = (RoomPaused, RoomFailed, RoomCompleted)


class HubWatcher:
    """A client of an API process of the scaled-out mode: the room's hub, fed from its Redis stream.

    It follows the room until room_completed, reconnecting when told to from the last seq it received (as
    `Last-Event-ID` does). `texts` is each turn's text as the page shows it (see `moot.testing.Watcher`).
    """

    def __init__(self, api: RoomManager, room_id: str) -> None:
        self.api = api
        self.room_id = room_id
        self.events: list[Event] = []
        self.texts: dict[str, list[str]] = {}
        self.last_seq = 0
        self._sub: Subscription = api.hub(room_id).subscribe(0, follow=True)
        self._task = asyncio.create_task(self._follow(self._sub))

    async def reconnect(self) -> None:
        """Leaves the hub and subscribes again after the last seq received."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._sub.close()
        self._sub = self.api.hub(self.room_id).subscribe(self.last_seq, follow=True)
        self._task = asyncio.create_task(self._follow(self._sub))

    async def end(self) -> list[Event]:
        await asyncio.wait_for(self._task, 120)
        return self.events

    async def _follow(self, sub: Subscription) -> None:
        async with sub:
            async for event in sub:
                assert event.seq > self.last_seq, f"seq {event.seq} after {self.last_seq}"
                self.last_seq = event.seq
                self.events.append(event)
                if isinstance(event, TurnStarted):
                    self.texts[event.turn_id] = []
                elif isinstance(event, TurnDelta):
                    self.texts.setdefault(event.turn_id, []).append(event.text)
                elif isinstance(event, TurnRestarted) and event.discard:
                    self.texts.pop(event.turn_id, None)
                elif isinstance(event, RoomCompleted):
                    return
        raise AssertionError(f"room {self.room_id}: the subscription ended: {sub.reason}")


async def test_scale_a_worker_cut_from_its_database_lets_the_room_go_and_another_takes_it_over(
    postgres_database: Database, store: Store, redis_server: RedisServer
) -> None:
    """Its watchers get only what is stored: the let-go run's pause is stored nowhere, so it is not sent;
    a watcher who reconnects after the let-go ends with exactly the stored events and text."""
    url = make_url(postgres_database.url)
    async with (
        TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy,
        contextlib.AsyncExitStack() as closing,
    ):
        api = RoomManager(store, cluster=Cluster(connect(redis_server.url), store, takeover=TAKEOVER))
        closing.push_async_callback(api.shutdown)
        cut_off = _behind(proxy, postgres_database, closing)
        room = await store.create_room(RoomSpec.from_data(board(3, 20.0)))
        watcher = HubWatcher(api, room.id)
        async with running_worker(cut_off, redis_server.url, TAKEOVER) as first:
            await RunQueue(first.redis).enqueue(room.id)
            await eventually("the room to run on the first worker", lambda: _running(first, room.id))
            await eventually("a turn to be stored", lambda: _stored(store, room.id))
            first.capacity = 0  # it takes no room again: the one that takes this room over is another

            await proxy.cut()
            await eventually("the first worker to let the room go", lambda: _let_go(cut_off, room.id))
            await proxy.mend()  # its database is back while the run it let go still ends
            await eventually("the run let go to end", lambda: _ended(first, room.id))
            await watcher.reconnect()  # as a client would whose connection dropped: from the last seq it has

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
                seen = await watcher.end()

    events = await store.events_after(room.id, 0)
    assert [type(e) for e in events if isinstance(e, END_OF_RUN)] == [RoomCompleted]
    assert proxy.connections > 0

    stored = {e.seq: e for e in events}
    got = {e.seq: e for e in seen if not isinstance(e, TurnDelta)}
    assert set(stored) <= set(got), "the watcher missed stored events"
    for seq, event in got.items():
        if seq in stored:
            assert event == stored[seq], f"seq {seq} was sent as one event and stored as another"
        else:  # sent by the run let go, to be stored with its next write: never the end of a run
            assert not isinstance(event, END_OF_RUN), f"{event.type} at seq {seq} was sent, never stored"
    transcript = await store.load_transcript(room.id)
    turns = [entry for entry in transcript if entry.is_turn]
    assert turns
    for entry in turns:
        assert "".join(watcher.texts[entry.turn_id]) == entry.text, entry.turn_id


async def test_scale_a_database_away_for_longer_than_the_runs_retries_only_holds_the_room_up(
    postgres_database: Database, store: Store, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Away for less than the worker's margin, the database holds the room up: the room goes on once it is
    back, nothing paused, failed, lost or said twice. The chair's opening ends while it is away."""
    caplog.set_level(logging.WARNING, logger="moot.durable")
    url = make_url(postgres_database.url)
    with HeldModel() as model:
        data = chaired_by(model)
        async with (
            TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy,
            contextlib.AsyncExitStack() as closing,
        ):
            held = _behind(proxy, postgres_database, closing)
            room = await store.create_room(RoomSpec.from_data(data))
            async with running_worker(held, redis_server.url, PATIENT_TAKEOVER) as worker:
                await RunQueue(worker.redis).enqueue(room.id)
                await eventually("the chair's opening to be asked of its model", lambda: _asked(model))

                await proxy.cut()
                model.release()  # the opening ends while the database is away: saving it fails, again

                async def tried_past_the_count() -> bool:
                    saves = [
                        r for r in caplog.records if f"room {room.id}: saving a turn failed" in r.message
                    ]
                    assert not [r for r in saves if r.levelno >= logging.ERROR], "the run gave up the save"
                    assert worker.manager.is_running(room.id), "the room stopped while the database was away"
                    return len(saves) > STORE_RETRIES

                await eventually(
                    "the run to try saving the turn past its count of retries", tried_past_the_count
                )
                await proxy.mend()
                await eventually("the room to complete", lambda: _completed(store, room.id))
                assert not held.is_let_go(room.id)
                ran_here = worker.manager.metrics.turns_completed

        reference = Run(RoomSpec.from_data(data))  # the same room, never held up
        assert (await reference.wait()).status == "completed"

    events = await store.events_after(room.id, 0)
    assert [type(e) for e in events if isinstance(e, END_OF_RUN)] == [RoomCompleted]
    assert not [e for e in events if isinstance(e, TurnRestarted) and e.reason == CUT_BY_CRASH]
    turns = [(e.turn_id, e.text) for e in await store.load_transcript(room.id) if e.is_turn]
    assert turns == [(e.turn_id, e.text) for e in reference.transcript if e.is_turn]
    completed = [e.turn_id for e in events if isinstance(e, TurnCompleted)]
    assert completed == [turn for turn, _ in turns], "each turn stored once, in order"
    assert ran_here == len(turns), "each turn ran once, on this worker"
    assert proxy.connections > 0


def _behind(proxy: TcpProxy, database: Database, closing: contextlib.AsyncExitStack) -> WorkerStore:
    """A worker's store on the test's database through `proxy` (so the test can cut it), closed by `closing`."""
    url = make_url(database.url).set(host="127.0.0.1", port=proxy.port)
    store = WorkerStore.from_url(
        url.render_as_string(hide_password=False), connect_args=database.connect_args, local_pids=False
    )
    assert isinstance(store, WorkerStore)
    closing.push_async_callback(store.close)
    return store


async def _asked(model: HeldModel) -> bool:
    return bool(model.bodies)


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
