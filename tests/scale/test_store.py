"""What the store gives the scaled-out mode: rooms to take over, by the database's clock, and public types."""

from __future__ import annotations

from collections.abc import Callable

import moot.store
from moot.spec import RoomSpec
from moot.store import RunStore, Store
from store.fixtures import Database
from store.helpers import dead_process, needs_proc, owner

from ._cluster import board


async def test_scale_store_rooms_to_take_over_are_running_rooms_whose_lease_ran_out(
    store_factory: Callable[[], Store],
) -> None:
    store = store_factory()
    await store.ensure_schema()
    spec = RoomSpec.from_data(board(1, 0))
    alive, expired, unleased, paused = [(await store.create_room(spec)).id for _ in range(4)]
    assert await store.acquire(alive, Store.new_owner(), 30)
    assert await store.acquire(expired, Store.new_owner(), -1)  # its renewals stopped a second ago
    for room_id in (alive, expired, unleased):
        await store.update_room(room_id, status="running")
    await store.update_room(paused, status="paused")
    assert sorted(await store.rooms_to_take_over()) == sorted([expired, unleased])
    assert len(await store.rooms_to_take_over(limit=1)) <= 1


@needs_proc
async def test_scale_store_without_local_pids_only_the_clock_ends_a_lease(database: Database) -> None:
    """Containers share host names and pids: a pid missing here may be a live process elsewhere."""
    shared = Store.from_url(database.url, connect_args=database.connect_args, local_pids=False)
    local = Store.from_url(database.url, connect_args=database.connect_args)
    try:
        await shared.ensure_schema()
        room = await shared.create_room(RoomSpec.from_data(board(1, 0)))
        gone_here = owner(*await dead_process())  # as a process of this machine names itself
        assert await shared.acquire(room.id, gone_here, 3600)
        await shared.update_room(room.id, status="running")
        lease = await shared.lease(room.id)
        assert lease is not None
        assert lease.alive  # judged by the database's clock only
        assert not await shared.acquire(room.id, Store.new_owner(), 30)
        assert room.id not in await shared.rooms_to_take_over()
        lease = await local.lease(room.id)  # the single-process mode's shortcut still applies there
        assert lease is not None
        assert not lease.alive
    finally:
        await shared.close()
        await local.close()


async def test_scale_store_exports_its_public_types_and_the_run_protocol() -> None:
    for name in ("UserRecord", "UserRole", "ProviderRecord", "AgentTemplateRecord", "NameTaken", "RunStore"):
        assert name in moot.store.__all__
    store = Store.from_url("sqlite+aiosqlite:///:memory:")
    runs: RunStore = store  # a Store is a RunStore (mypy checks it)
    assert callable(runs.rooms_to_take_over)
    await store.close()
