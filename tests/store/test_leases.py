"""Leases: a room is never run twice at once, and a dead runner's room can be taken over (L14)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest

from moot.store import RoomNotFound, Store

from .helpers import dead_process, needs_proc, owner, room_spec, started, this_kernel


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


async def test_renewals_asked_together_are_written_together_each_with_its_own_answer(
    store: Store,
) -> None:  # covers: L14
    rooms = [(await store.create_room(room_spec())).id for _ in range(6)]
    ann, ben = Store.new_owner(), Store.new_owner()
    for room_id in rooms:
        assert await store.acquire(room_id, ann, 30)
    lost = rooms[2]
    assert await store.renew(lost, ann, -1)  # ann stopped renewing it a second ago...
    assert await store.acquire(lost, ben, 30)  # ...and ben took it over
    before = store.writes

    renewed = await asyncio.gather(
        *(store.renew(room_id, ann, 60) for room_id in rooms), store.renew(lost, ben, 45)
    )

    assert renewed == [room_id != lost for room_id in rooms] + [True]
    assert store.writes - before < len(rooms) + 1  # the first alone, those asked meanwhile together
    for room_id in rooms:
        lease = await store.lease(room_id)
        assert lease is not None and lease.alive
        assert lease.owner == (ben if room_id == lost else ann)


@needs_proc
async def test_a_killed_process_on_this_machine_loses_its_lease_at_once(store: Store) -> None:  # covers: L14
    room = await store.create_room(room_spec())
    runner = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    try:
        dead_soon = owner(runner.pid, started(runner.pid))
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


@needs_proc
async def test_a_process_that_exited_but_is_not_yet_reaped_has_lost_its_lease(store: Store) -> None:
    room = await store.create_room(room_spec())
    # a plain child, not asyncio's: no watcher reaps it behind our back
    runner = await asyncio.to_thread(subprocess.Popen, [sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert await store.acquire(room.id, owner(runner.pid, started(runner.pid)), 3600)
        assert not await store.acquire(room.id, Store.new_owner(), 30)
        runner.kill()
        exited = os.WEXITED | os.WNOWAIT  # waits until it exited, and leaves it unreaped
        await asyncio.to_thread(os.waitid, os.P_PID, runner.pid, exited)
        lease = await store.lease(room.id)
        assert lease is not None
        assert not lease.alive  # a zombie: its pid is still there, the process is not
    finally:
        runner.kill()
        await asyncio.to_thread(runner.wait)


@needs_proc
@pytest.mark.parametrize("where", ["here", "another pid namespace", "another boot"])
async def test_a_dead_pid_is_judged_only_in_our_pid_namespace_of_this_boot(store: Store, where: str) -> None:
    """Containers repeat host names and pids: only where boot id and pid namespace are ours does a pid
    missing here mean the owner is gone. Elsewhere it may be a live process, and only the clock decides."""
    room = await store.create_room(room_spec())
    pid, start = await dead_process()
    namespace = this_kernel()[1]
    claimed = {
        "here": owner(pid, start),
        "another pid namespace": owner(pid, start, namespace=namespace + 1),
        "another boot": owner(pid, start, boot=str(uuid.uuid4())),
    }[where]
    assert await store.acquire(room.id, claimed, 3600)
    lease = await store.lease(room.id)
    assert lease is not None
    assert lease.alive == (where != "here")
    assert await store.acquire(room.id, Store.new_owner(), 30) == (where == "here")
    if where != "here":
        assert await store.renew(room.id, claimed, -1)  # its renewals stopped: now the clock ends it
        assert await store.acquire(room.id, Store.new_owner(), 30)


@needs_proc
async def test_our_pid_with_another_start_time_names_a_process_gone_before_us(store: Store) -> None:
    room = await store.create_room(room_spec())
    pid = os.getpid()
    twin = owner(pid, started(pid))  # this very process, under another owner's name
    assert await store.acquire(room.id, twin, 3600)
    assert not await store.acquire(room.id, Store.new_owner(), 30)
    await store.release(room.id, twin)
    before_us = owner(pid, started(pid) - 1)  # the process that had our pid before us
    assert await store.acquire(room.id, before_us, 3600)
    lease = await store.lease(room.id)
    assert lease is not None
    assert not lease.alive
    assert await store.acquire(room.id, Store.new_owner(), 30)


async def test_an_owner_named_the_old_way_is_left_to_the_clock(store: Store) -> None:
    """Owners stored before names carried boot id, pid namespace and start time (`host:pid:random`) say
    nothing that tells this process from one in another container: the clock alone ends their leases."""
    room = await store.create_room(room_spec())
    gone = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await gone.wait()
    old = f"{socket.gethostname()}:{gone.pid}:cafe"
    assert await store.acquire(room.id, old, 3600)
    lease = await store.lease(room.id)
    assert lease is not None
    assert lease.alive
    assert not await store.acquire(room.id, Store.new_owner(), 30)
    assert await store.renew(room.id, old, -1)
    assert await store.acquire(room.id, Store.new_owner(), 30)


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
    host, pid, token = Store.new_owner().split(":")[:3]
    assert (host, int(pid), len(token)) == (socket.gethostname(), os.getpid(), 8)
    assert Store.new_owner() != Store.new_owner()
    with pytest.raises(RoomNotFound):
        await store.acquire("nope", Store.new_owner(), 30)


@needs_proc
def test_new_owner_names_this_process_by_boot_pid_namespace_and_start_time() -> None:
    boot, namespace = this_kernel()
    name = Store.new_owner()
    assert name.split(":")[3:] == [boot, str(namespace), str(started(os.getpid()))]
    assert len(name) <= 255  # the column's width


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
