"""What the store gives the scaled-out mode: rooms to take over, by the database's clock, and public types."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import moot.store
from moot.scale.leases import LetGo, WorkerStore
from moot.spec import RoomSpec
from moot.store import RunStore, Store
from store.fixtures import Database
from store.helpers import completed, dead_process, needs_proc, owner, speech

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


async def test_scale_store_a_room_let_go_while_its_save_waits_its_turn_gets_nothing_written(
    database: Database,
) -> None:
    """The let-go check runs again when the save's transaction is made, not only when it was asked for."""
    store = WorkerStore.from_url(database.url, connect_args=database.connect_args)
    try:
        await store.ensure_schema()
        kept, dropped = [(await store.create_room(RoomSpec.from_data(board(1, 0)))).id for _ in range(2)]
        turns = {room: speech(1, "Ana", 0, f"Ana in {room}") for room in (kept, dropped)}
        saves = [
            asyncio.create_task(store.save_entry(room, turn, completed(turn, 5)))
            for room, turn in turns.items()
        ]
        await asyncio.sleep(0)  # both passed the check on asking and wait for the transaction to be made
        store.let_go(dropped)
        await saves[0]
        with pytest.raises(LetGo):
            await saves[1]
        assert [e.text for e in (await store.load_transcript(kept)).entries] == [f"Ana in {kept}"]
        assert (await store.load_transcript(dropped)).entries == []
        assert await store.last_seq(dropped) == 0
    finally:
        await store.close()
