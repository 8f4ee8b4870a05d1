"""The terminal's driver on a stored run, in process: Ctrl-C that comes before the run has begun."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys

import pytest
from rich.console import Console

from moot.cli._drive import EXIT_INTERRUPTED, RichSink, steer
from moot.durable import DurableRun
from moot.events import Event
from moot.spec import RoomSpec
from moot.store import Store

from ._support import board


class Kept(RichSink):
    """The terminal view, keeping the events it was given."""

    def __init__(self) -> None:
        super().__init__(Console(file=io.StringIO()))
        self.events: list[Event] = []

    def handle(self, event: Event) -> None:
        self.events.append(event)
        super().handle(event)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_ctrl_c_while_a_stored_room_loads_pauses_it_once_it_begins(db_url: str) -> None:
    # covers: L11
    async with Store.from_url(db_url) as store:
        await store.ensure_schema()
        record = await store.create_room(RoomSpec.from_data(board(0)))
        sink = Kept()
        driving = asyncio.create_task(steer(DurableRun(store, record.id), sink))
        await asyncio.sleep(0)  # the driver has wired Ctrl-C and is reading the store
        os.kill(os.getpid(), signal.SIGINT)
        assert await asyncio.wait_for(driving, 10) == EXIT_INTERRUPTED
        assert [e.type for e in sink.events] == ["room_started", "room_paused"]
        assert (await store.get_room(record.id)).status == "paused"
