"""Batched writes of many rooms lock their rows in one order, so two of them never wait on each other.

A process writes its rooms' rows in batches: the saves of turns that end together, the renewals of the leases
of every room it runs (each run has an owner of its own), the text so far of turns in flight. On PostgreSQL
these run at once on different connections; two that took the same rows in different orders would deadlock,
and the database would fail one of them. Seen at 240 rooms on `moot serve`: hundreds of saves failed with
"deadlock detected" against a transaction of renewals, and rooms fell behind while they were retried (L8, L14).
"""

from __future__ import annotations

import asyncio

from moot.store import Store

from .helpers import room_spec, round_started

ROOMS = 40
ROUNDS = 6


async def test_saves_renewals_and_partials_of_many_rooms_at_once_never_deadlock_L8_L14(store: Store) -> None:
    rooms = [(await store.create_room(room_spec())).id for _ in range(ROOMS)]
    owners = {room: Store.new_owner() for room in rooms}  # as every durable run has
    for room in rooms:
        assert await store.acquire(room, owners[room], 30)
    backwards = rooms[::-1]

    for round_ in range(1, ROUNDS + 1):
        # Each kind of batch asks for the rooms in its own order, as rooms' turns and timers fall.
        renewed, *_ = await asyncio.gather(
            asyncio.gather(*(store.renew(room, owners[room], 30) for room in rooms)),
            *(store.save_events(room, [round_started(round_, round_)]) for room in backwards),
            store.save_partials([(room, f"t{round_}", "so far", round_) for room in rooms[1::2]]),
            store.save_partials([(room, f"t{round_}", "so far", round_) for room in backwards[1::2]]),
        )
        assert renewed == [True] * ROOMS

    for room in rooms:
        assert await store.last_seq(room) == ROUNDS
        lease = await store.lease(room)
        assert lease is not None and lease.owner == owners[room]
