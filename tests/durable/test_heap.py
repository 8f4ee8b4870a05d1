"""A finished room leaves nothing for the garbage collector: refcounting frees its run.

A server runs many rooms; what a finished room leaves in reference cycles waits for a full collection, which
pauses every other room's stream for as long as it walks them.
"""

from __future__ import annotations

import gc

from moot.durable import DurableRun
from moot.engine import Run
from moot.spec import RoomSpec
from moot.store import Store
from moot.transcript import Entry, Transcript

from ._support import board


async def test_a_finished_stored_run_is_freed_without_the_collector(db_url: str) -> None:
    async with Store.from_url(db_url) as store:
        await store.ensure_schema()
        room = await store.create_room(RoomSpec.from_data(board(speed=2000)))
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            events = [event async for event in DurableRun(store, room.id)]
            assert events[-1].type == "room_completed"
            del events
            gc.collect()
            left = {type(thing) for thing in gc.garbage}
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert not left & {DurableRun, Run, Transcript, Entry}
