"""SQLite has one writer at a time: a process's write transactions take turns in the process, so a burst of
them (many rooms starting at once, their saves, people's words) never meets SQLite's busy timeout. Seen before:
280 rooms started together on `moot serve` had runs fail with "database is locked" (L8)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from moot.store import Store, _database

from .helpers import completed, room_spec, speech

ROOMS = 24


async def test_a_burst_of_writes_from_one_process_never_waits_on_sqlites_lock_L8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No busy wait at all: any two of this process's write transactions that overlapped would fail at once.
    pragmas = tuple(p for p in _database.SQLITE_PRAGMAS if not p.startswith("busy_timeout"))
    monkeypatch.setattr(_database, "SQLITE_PRAGMAS", (*pragmas, "busy_timeout=0"))
    async with Store.from_url(f"sqlite:///{tmp_path / 'moot.db'}") as store:
        await store.ensure_schema()
        rooms = [(await store.create_room(room_spec())).id for _ in range(ROOMS)]
        owner = Store.new_owner()

        async def start_and_speak(room: str, index: int) -> None:
            record, state = await store.claim(room, owner, 30.0)
            assert state is not None, record
            await store.mark_running(room)
            turn = speech(1, "Alice", 0, f"Alice in room {index}")
            await asyncio.gather(
                store.save_entry(room, turn, completed(turn, 1)),
                store.add_intervention(room, f"a word for room {index}"),
                store.save_partials([(room, "t-next", "so far", 2)]),
                store.renew(room, owner, 30.0),
            )
            await store.update_room(room, status="completed")

        await asyncio.gather(*(start_and_speak(room, i) for i, room in enumerate(rooms)))

        for index, room in enumerate(rooms):
            assert (await store.get_room(room)).status == "completed"
            transcript = await store.load_transcript(room)
            assert [e.text for e in transcript.entries] == [f"Alice in room {index}"]
            assert [w.text for w in await store.pending_interventions(room)] == [f"a word for room {index}"]
