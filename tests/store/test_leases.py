"""Leases: a room is never run twice at once, and a dead runner's room can be taken over (L14)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

import pytest

from moot.store import RoomNotFound, Store

from .helpers import room_spec


async def test_one_owner_at_a_time(store: Store) -> None:  # covers: L14
    room = await store.create_room(room_spec())
    ann, ben = Store.new_owner(), Store.new_owner()
    assert await store.lease(room.id) is None
    assert await store.acquire(room.id, ann, 30)
    assert not await store.acquire(room.id, ben, 30)
    assert await store.acquire(room.id, ann, 30)  # taking it again is renewing it
    lease = await store.lease(room.id)
    assert lease is not None
    assert (lease.owner, lease.alive) == (ann, True)
    assert (await store.get_room(room.id)).lease == lease
    await store.release(room.id, ben)  # not ben's to give up
    assert not await store.acquire(room.id, ben, 30)
    await store.release(room.id, ann)
    assert await store.lease(room.id) is None
    assert await store.acquire(room.id, ben, 30)


async def test_an_expired_lease_is_taken_and_its_old_owner_cannot_renew(store: Store) -> None:  # covers: L14
    room = await store.create_room(room_spec())
    ann, ben = Store.new_owner(), Store.new_owner()
    assert await store.acquire(room.id, ann, 30)
    assert await store.renew(room.id, ann, -1)  # ann's renewals stopped a second ago: nothing waits for it
    lease = await store.lease(room.id)
    assert lease is not None
    assert not lease.alive
    assert await store.acquire(room.id, ben, 30)
    assert not await store.renew(room.id, ann, 30)
    lease = await store.lease(room.id)
    assert lease is not None
    assert lease.owner == ben


async def test_a_killed_process_on_this_host_loses_its_lease_at_once(store: Store) -> None:  # covers: L14
    room = await store.create_room(room_spec())
    runner = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    try:
        dead_soon = f"{socket.gethostname()}:{runner.pid}:cafe"
        assert await store.acquire(room.id, dead_soon, 3600)
        assert not await store.acquire(room.id, Store.new_owner(), 30)
    finally:
        runner.send_signal(signal.SIGKILL)
        await runner.wait()
    lease = await store.lease(room.id)
    assert lease is not None
    assert not lease.alive
    ben = Store.new_owner()
    assert await store.acquire(room.id, ben, 30)


async def test_leases_of_other_hosts_only_expire(store: Store) -> None:
    room = await store.create_room(room_spec())
    assert await store.acquire(room.id, f"elsewhere.example:{os.getpid() + 1}:beef", 3600)
    assert not await store.acquire(room.id, Store.new_owner(), 30)


async def test_two_stores_taking_one_room_at_once_one_wins(store_factory: Callable[[], Store]) -> None:
    ann_store, ben_store = store_factory(), store_factory()  # two processes, in effect
    await ann_store.ensure_schema()
    ann, ben = Store.new_owner(), Store.new_owner()
    for attempt in range(20):
        room = await ann_store.create_room(room_spec())
        if attempt % 2:  # half the time both take over an expired lease rather than a free room
            assert await ann_store.acquire(room.id, "gone.example:1:0", -1)
        won = await asyncio.gather(ann_store.acquire(room.id, ann, 30), ben_store.acquire(room.id, ben, 30))
        assert sorted(won) == [False, True], f"attempt {attempt}: {won}"
        lease = await ben_store.lease(room.id)
        assert lease is not None
        assert lease.owner == (ann if won[0] else ben)


async def test_new_owner_names_this_process(store: Store) -> None:
    host, pid, token = Store.new_owner().rsplit(":", 2)
    assert (host, int(pid), len(token)) == (socket.gethostname(), os.getpid(), 8)
    with pytest.raises(RoomNotFound):
        await store.acquire("nope", Store.new_owner(), 30)


@pytest.mark.parametrize("off_by", [3600.0, -3600.0])
async def test_hardening_7_a_host_whose_clock_is_off_reads_leases_by_the_database_clock(
    store: Store, monkeypatch: pytest.MonkeyPatch, off_by: float
) -> None:
    """Several machines share one database: each judges a lease by the database's clock, not its own."""
    room = await store.create_room(room_spec())
    ann, ben = Store.new_owner(), Store.new_owner()
    assert await store.acquire(room.id, ann, 30)  # taken on a host whose clock is right
    right = time.time
    monkeypatch.setattr(time, "time", lambda: right() + off_by)  # this host's clock is an hour off
    lease = await store.lease(room.id)
    assert lease is not None
    assert lease.alive
    assert 0 < lease.remaining <= 30
    assert not await store.acquire(room.id, ben, 30)  # a clock ahead does not see it expired
    assert await store.renew(room.id, ann, 30)  # renewed from the off host: still 30 s, not 30 s +- an hour
    lease = await store.lease(room.id)
    assert lease is not None
    assert 0 < lease.remaining <= 30
    monkeypatch.setattr(time, "time", right)
    assert not await store.acquire(room.id, ben, 30)
    assert await store.renew(room.id, ann, -1)  # ann's lease ran out
    monkeypatch.setattr(time, "time", lambda: right() - abs(off_by))  # a clock behind: still expired
    assert await store.acquire(room.id, ben, 30)
