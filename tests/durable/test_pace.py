"""Keeping pace: a turn's write never holds up the other speakers, and one task per process takes in the
words stored for all its rooms with one query."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from moot import durable as durable_module
from moot.durable import DurableRun
from moot.events import Event, InterventionAdded, RoomCompleted, TurnCompleted, TurnDelta, TurnStarted
from moot.models import Completion, Model, ModelRequest, Usage
from moot.spec import RoomSpec
from moot.store import Store, StoredIntervention
from moot.transcript import Entry

from ._support import HANG, HeldModel, Reader, chaired_by

PARALLEL = {
    "task": "Should our 40-person studio move to a four-day week?",
    "protocol": "parallel",
    "max_rounds": 1,
    "models": {"sim": {"provider": "simulated", "seed": 7, "tokens_per_second": 0}},
    "default_model": "sim",
    "agents": [
        {"name": "Ana", "persona": "a cautious engineer"},
        {"name": "Ben", "persona": "a product lead"},
    ],
}


class Tap(Model):
    """A model whose reply comes piece by piece as the test hands the pieces in; None ends it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.pieces: asyncio.Queue[str | None] = asyncio.Queue()

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
        said = []
        while (piece := await self.pieces.get()) is not None:
            said.append(piece)
            yield piece
        yield Completion(
            text="".join(said), usage=Usage(input_tokens=1, output_tokens=len(said)), model=self.label
        )


class GatedStore(Store):
    """A real store whose speeches' writes wait at a gate the test opens: a database that takes its time."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = asyncio.Event()
        self.writing = asyncio.Event()

    async def save_entry(self, room_id: str, entry: Entry, events: Sequence[Event]) -> None:
        if entry.kind == "speech":
            self.writing.set()
            await self.gate.wait()
        await super().save_entry(room_id, entry, events)


async def test_pace_a_turn_held_in_its_write_does_not_stop_another_speakers_deltas(db_url: str) -> None:
    store = GatedStore.from_url(db_url)
    assert isinstance(store, GatedStore)
    async with store:
        await store.ensure_schema()
        room = await store.create_room(RoomSpec.from_data(PARALLEL))
        ana, ben = Tap("ana"), Tap("ben")
        reader = Reader(DurableRun(store, room.id, models={"Ana": ana, "Ben": ben}))

        def delta(speaker: str, text: str) -> object:
            return lambda e: isinstance(e, TurnDelta) and e.speaker == speaker and e.text == text

        await reader.until(lambda e: isinstance(e, TurnStarted) and e.speaker == "Ben")
        await reader.until(lambda e: isinstance(e, TurnStarted) and e.speaker == "Ana")
        ben.pieces.put_nowait("We ")
        await reader.until(delta("Ben", "We "))  # type: ignore[arg-type]
        ana.pieces.put_nowait("Yes.")
        ana.pieces.put_nowait(None)  # Ana's turn ends: its write waits at the gate
        async with asyncio.timeout(HANG):
            await store.writing.wait()
        ben.pieces.put_nowait("should ")
        await reader.until(delta("Ben", "should "))  # type: ignore[arg-type]
        ben.pieces.put_nowait("wait.")
        await reader.until(delta("Ben", "wait."))  # type: ignore[arg-type]
        assert not any(isinstance(e, TurnCompleted) for e in reader.events)  # told only once it is kept
        store.gate.set()
        completed = await reader.until(lambda e: isinstance(e, TurnCompleted) and e.speaker == "Ana")
        ben.pieces.put_nowait(None)
        events = await reader.end()
        assert isinstance(events[-1], RoomCompleted)
        seqs = [e.seq for e in events]
        assert seqs == sorted(set(seqs))  # in seq order, though Ben's deltas passed Ana's write
        bens = [e for e in events if isinstance(e, TurnDelta) and e.speaker == "Ben"]
        assert all(e.seq < completed.seq for e in bens)
        stored = await store.events_after(room.id, 0)
        assert completed in stored
        said = {e.speaker: e.text for e in await store.load_transcript(room.id) if e.is_turn}
        assert said == {"Ana": "Yes.", "Ben": "We should wait."}


class Counting(Store):
    """A real store that notes each look for stored words: which rooms it covered, and what it found."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.looks: list[tuple[set[str], dict[str, list[str]]]] = []
        self.looked = asyncio.Condition()

    async def pending_interventions_for(self, room_ids: Sequence[str]) -> dict[str, list[StoredIntervention]]:
        found = await super().pending_interventions_for(room_ids)
        async with self.looked:
            self.looks.append((set(room_ids), {r: [w.text for w in ws] for r, ws in found.items()}))
            self.looked.notify_all()
        return found


async def test_pace_one_query_takes_the_words_another_process_stored_for_several_rooms(db_url: str) -> None:
    with HeldModel() as model:
        store = Counting.from_url(db_url)
        assert isinstance(store, Counting)
        async with store, Store.from_url(db_url) as elsewhere:
            await store.ensure_schema()
            rooms = [(await store.create_room(RoomSpec.from_data(chaired_by(model)))).id for _ in range(3)]
            readers = [Reader(DurableRun(store, room_id)) for room_id in rooms]
            for reader in readers:  # every chair's opening is in flight, held
                await reader.until(lambda e: isinstance(e, TurnStarted) and e.kind == "opening")
            for room_id in rooms:  # another process stores words for each
                await elsewhere.add_intervention(room_id, f"Mind the rota of {room_id}.")

            def all_found() -> bool:
                return any(all(found.get(r) for r in rooms) for _, found in store.looks)

            async with asyncio.timeout(HANG), store.looked:
                await store.looked.wait_for(all_found)
            covered, found = next((c, f) for c, f in store.looks if all(f.get(r) for r in rooms))
            assert covered == set(rooms)  # one query for the three rooms
            assert found == {r: [f"Mind the rota of {r}."] for r in rooms}
            model.release()
            for room_id, reader in zip(rooms, readers, strict=True):
                events = await reader.end()
                assert isinstance(events[-1], RoomCompleted)
                added = [e for e in events if isinstance(e, InterventionAdded)]
                assert [e.text for e in added] == [f"Mind the rota of {room_id}."]
                assert await store.pending_interventions(room_id) == []


async def test_pace_take_stored_words_hands_a_running_room_what_was_stored_for_it(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durable_module, "POLL_EVERY", HANG * 10)  # the process's watcher never looks here
    with HeldModel() as model:
        async with Store.from_url(db_url) as store, Store.from_url(db_url) as elsewhere:
            await store.ensure_schema()
            room = await store.create_room(RoomSpec.from_data(chaired_by(model)))
            durable = DurableRun(store, room.id)
            reader = Reader(durable)
            await reader.until(lambda e: isinstance(e, TurnStarted) and e.kind == "opening")
            ref = await elsewhere.add_intervention(room.id, "Mind the on-call rota.", author="Eve")
            await durable.take_stored_words()
            assert durable._fed == {ref}  # handed to the run now, though its turn is still in flight
            durable.feed(ref, "Eve", "Mind the on-call rota.")  # handed twice: taken once
            model.release()
            events = await reader.end()
            added = [e for e in events if isinstance(e, InterventionAdded)]
            assert [(e.author, e.text) for e in added] == [("Eve", "Mind the on-call rota.")]
            transcript = await store.load_transcript(room.id)
            assert [e.ref for e in transcript if e.kind == "intervention"] == [ref]


class Logged(Store):
    """A real store that notes, in order, each speech it writes and each read of one room's stored words."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.calls: list[tuple[str, str]] = []

    async def save_entry(self, room_id: str, entry: Entry, events: Sequence[Event]) -> None:
        await super().save_entry(room_id, entry, events)
        self.calls.append(("save", entry.speaker))

    async def pending_interventions(self, room_id: str) -> list[StoredIntervention]:
        found = await super().pending_interventions(room_id)
        self.calls.append(("read", "|".join(w.text for w in found)))
        return found


async def test_pace_one_words_read_per_step_by_its_last_turn(db_url: str) -> None:
    store = Logged.from_url(db_url)
    assert isinstance(store, Logged)
    async with store:
        await store.ensure_schema()
        room = await store.create_room(RoomSpec.from_data(PARALLEL))
        ana, ben = Tap("ana"), Tap("ben")
        reader = Reader(DurableRun(store, room.id, models={"Ana": ana, "Ben": ben}))
        await reader.until(lambda e: isinstance(e, TurnStarted) and e.speaker == "Ben")
        await reader.until(lambda e: isinstance(e, TurnStarted) and e.speaker == "Ana")
        ben.pieces.put_nowait("We ")
        await reader.until(lambda e: isinstance(e, TurnDelta) and e.speaker == "Ben")
        ana.pieces.put_nowait("Yes.")
        ana.pieces.put_nowait(None)  # Ana's turn ends while Ben streams: written, no read
        await reader.until(lambda e: isinstance(e, TurnCompleted) and e.speaker == "Ana")
        await store.add_intervention(room.id, "Mind the budget.", author="Dee")  # stored by another process
        ben.pieces.put_nowait("wait.")
        ben.pieces.put_nowait(None)  # the step's last turn: written, then the words read
        await reader.until(lambda e: isinstance(e, TurnCompleted) and e.speaker == "Ben")
        events = await reader.end()
        assert isinstance(events[-1], RoomCompleted)
        speeches = store.calls.index(("save", "Ana"))
        assert store.calls[speeches : speeches + 3] == [
            ("save", "Ana"),
            ("save", "Ben"),
            ("read", "Mind the budget."),
        ]
