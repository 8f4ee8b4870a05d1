"""What a stored run's start asks of the store in one transaction (`claim`): the room read, its lease taken,
what the run starts from read, and the room marked running (as `mark_running` does alone)."""

from __future__ import annotations

import asyncio

import pytest

from moot.store import RoomNotFound, Store

from .helpers import room_spec, task


async def test_claim_reads_the_room_and_takes_its_lease_as_acquire_does(store: Store) -> None:  # covers: L14
    room = await store.create_room(room_spec())
    ann, ben = Store.new_owner(), Store.new_owner()
    record, state = await store.claim(room.id, ann, 30)
    assert state is not None and record.id == room.id and record.status == "idle"
    lease = await store.lease(room.id)
    assert lease is not None and lease.owner == ann
    record, state = await store.claim(room.id, ben, 30)
    assert state is None
    assert record.lease is not None and record.lease.owner == ann  # the holder, for the refusal to name
    assert (await store.lease(room.id)) == lease
    record, state = await store.claim(room.id, ann, 30)  # its own lease: taken again
    assert state is not None
    with pytest.raises(RoomNotFound):
        await store.claim("nosuchroom", ann, 30)


async def test_claim_takes_no_lease_on_a_completed_room(store: Store) -> None:
    room = await store.create_room(room_spec())
    await store.update_room(room.id, status="completed")
    record, state = await store.claim(room.id, Store.new_owner(), 30)
    assert (record.status, state) == ("completed", None)
    assert await store.lease(room.id) is None


async def test_claim_gives_the_spec_it_is_given_instead_of_the_stored_one(store: Store) -> None:
    room = await store.create_room(room_spec())
    instead = room_spec(max_rounds=5)
    record, _ = await store.claim(room.id, Store.new_owner(), 30, spec=instead)
    assert record.spec is instead
    assert (await store.get_room(room.id)).spec.max_rounds == 2


async def test_claim_reads_what_the_four_reads_give_then_marks_the_room_running_as_mark_running_does(
    store: Store,
) -> None:
    room = await store.create_room(room_spec())
    await store.save_entry(room.id, task(), [])
    await store.save_partial(room.id, "r1:Alice", "So far", 7)
    first = await store.add_intervention(room.id, "Mind the budget.", author="Dee")
    await store.update_room(room.id, status="error", error="it broke")
    record, state = await store.claim(room.id, Store.new_owner(), 30)
    assert state is not None
    assert (record.status, record.error) == ("error", "it broke")  # as read, before it was marked running
    assert list(state.transcript) == list(await store.load_transcript(room.id))
    assert len(list(state.transcript)) == 1
    assert state.partials == {"r1:Alice": ("So far", 7)}  # read before they were dropped
    assert state.last_seq == await store.last_seq(room.id)
    assert state.pending == await store.pending_interventions(room.id)
    assert [w.id for w in state.pending] == [first]
    marked = await store.get_room(room.id)
    assert (marked.status, marked.error) == ("running", None)
    assert await store.partials(room.id) == {}
    await store.save_partial(room.id, "r1:Alice", "So far", 7)

    await store.update_room(room.id, status="error", error="it broke")
    await store.mark_running(room.id)
    record = await store.get_room(room.id)
    assert (record.status, record.error) == ("running", None)
    assert await store.partials(room.id) == {}
    with pytest.raises(RoomNotFound):
        await store.mark_running("nosuchroom")


async def test_two_starts_at_once_one_takes_the_room_the_other_is_told_who_holds_it(
    store: Store,
) -> None:  # covers: L14
    rooms = [(await store.create_room(room_spec())).id for _ in range(8)]
    for room_id in rooms:
        await store.save_partial(room_id, "r1:Alice", "So far", 3)  # a cut turn: the start drops it
        ann, ben = Store.new_owner(), Store.new_owner()

        (a_record, a_state), (b_record, b_state) = await asyncio.gather(
            store.claim(room_id, ann, 30), store.claim(room_id, ben, 30)
        )

        assert [a_state is None, b_state is None].count(True) == 1
        winner = ann if a_state is not None else ben
        loser_record = b_record if a_state is not None else a_record
        lease = await store.lease(room_id)
        assert lease is not None and lease.owner == winner
        assert loser_record.lease is not None and loser_record.lease.owner == winner
        assert (await store.get_room(room_id)).status == "running"
        assert await store.partials(room_id) == {}
