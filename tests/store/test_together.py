"""Saves and reads of people's words asked while another is in flight go together, and nothing is lost by it:
every room's entry, events, totals and partial text are as if each had been saved alone (L8, L10); a save
the database refuses fails alone, with its own error. PostgreSQL: a pooled connection the server closed is
replaced unseen."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from moot.conclusion import Conclusion
from moot.events import InterventionAdded
from moot.store import DuplicateTurn, RoomNotFound, Store, StoreError, _database
from moot.store._together import Together
from moot.transcript import USER, Entry

from .fixtures import Database
from .helpers import completed, room_spec, round_started, speech

ROOMS = 6


async def test_saves_asked_together_are_each_stored_whole_in_fewer_transactions(store: Store) -> None:
    rooms = [(await store.create_room(room_spec())).id for _ in range(ROOMS)]
    turns = {
        room: speech(1, "Alice", 0, f"Alice in {room}", tokens=(10 + i, i)) for i, room in enumerate(rooms)
    }
    await store.save_partials([(room, turn.turn_id, "Alice in", 7) for room, turn in turns.items()])
    before = store.writes

    await asyncio.gather(
        *(store.save_entry(room, turn, completed(turn, 10)) for room, turn in turns.items()),
        store.save_events(rooms[0], [round_started(30, 2)]),
    )

    assert store.writes - before < ROOMS + 1  # the first alone, those asked meanwhile together
    for i, room in enumerate(turns):
        assert [e.text for e in await store.load_transcript(room)] == [f"Alice in {room}"]
        assert [e.seq for e in await store.events_after(room, 0)] == ([10, 11, 30] if i == 0 else [10, 11])
        assert await store.partials(room) == {}  # the turn's text so far went with it
        record = await store.get_room(room)
        assert (record.round, record.usage.input_tokens, record.usage.output_tokens) == (1, 10 + i, i)


async def test_entries_of_every_kind_bring_their_room_along_when_saved_together(store: Store) -> None:
    room = (await store.create_room(room_spec())).id
    other = (await store.create_room(room_spec())).id
    ref = await store.add_intervention(room, "Mind the licence.")
    words = Entry(kind="intervention", round=1, slot=1000, speaker=USER, text="Mind the licence.", ref=ref)
    conclusion = Entry(
        kind="conclusion", round=3, speaker="Chair", text="{}", conclusion=Conclusion(summary="Open it.")
    )
    await store.save_entry(room, speech(2, "Bob", 1), [])  # the round is 2 now: a later entry keeps it

    await asyncio.gather(
        store.save_entry(room, speech(1, "Alice", 0), completed(speech(1, "Alice", 0), 1)),
        store.save_entry(room, words, [InterventionAdded(seq=3, round=1, author=USER, text=words.text)]),
        store.save_entry(room, conclusion, []),
        store.save_entry(other, speech(1, "Alice", 0), []),
    )

    record = await store.get_room(room)
    assert record.round == 2
    assert record.conclusion is not None and record.conclusion.summary == "Open it."
    assert record.usage.input_tokens == 20  # Bob's and Alice's speeches
    assert await store.pending_interventions(room) == []  # the words joined the transcript
    assert len((await store.load_transcript(room)).entries) == 4
    assert (await store.get_room(other)).round == 1


async def test_a_save_refused_among_others_fails_alone_with_its_own_error(store: Store) -> None:
    rooms = [(await store.create_room(room_spec())).id for _ in range(4)]
    stored = speech(1, "Alice", 0, "The first take.")
    await store.save_entry(rooms[0], stored, completed(stored, 1))
    await store.save_events(rooms[1], [round_started(5)])
    await store.delete_room(rooms[2])
    again = speech(1, "Alice", 0, "A second take.")
    fine = speech(1, "Alice", 0)

    outcomes = await asyncio.gather(
        store.save_entry(rooms[3], fine, completed(fine, 1)),  # written alone, first
        store.save_entry(rooms[0], again, completed(again, 3)),  # these four go together
        store.save_events(rooms[1], [round_started(5)]),
        store.save_entry(rooms[2], fine, []),
        store.save_entry(rooms[3], speech(1, "Bob", 1), completed(speech(1, "Bob", 1), 3)),
        return_exceptions=True,
    )

    assert outcomes[0] is None and outcomes[4] is None
    assert isinstance(outcomes[1], DuplicateTurn)
    assert isinstance(outcomes[2], StoreError) and "overlap events already stored" in str(outcomes[2])
    assert isinstance(outcomes[3], RoomNotFound)
    assert [e.text for e in await store.load_transcript(rooms[0])] == ["The first take."]
    assert await store.last_seq(rooms[0]) == 2  # the refused turn's events were not kept
    assert [e.speaker for e in await store.load_transcript(rooms[3])] == ["Alice", "Bob"]
    assert await store.last_seq(rooms[3]) == 4


async def test_reads_of_words_asked_together_each_get_their_rooms_words(store: Store) -> None:
    rooms = [(await store.create_room(room_spec())).id for _ in range(3)]
    refs = {room: [await store.add_intervention(room, f"{room} {n}") for n in range(2)] for room in rooms[:2]}

    found = await asyncio.gather(*(store.pending_interventions(room) for room in [*rooms, rooms[0]]))

    assert [[w.id for w in words] for words in found] == [refs[rooms[0]], refs[rooms[1]], [], refs[rooms[0]]]
    assert found[0] is not found[3]  # each caller's own list


@pytest.mark.parametrize("ping_after", [0.0, 1000.0], ids=["pinged", "its-closed-socket-seen"])
async def test_a_pooled_connection_the_database_closed_is_replaced_unseen(
    postgres_database: Database, monkeypatch: pytest.MonkeyPatch, ping_after: float
) -> None:
    name = f"moot_test_{secrets.token_hex(4)}"
    settings: dict[str, Any] = {**postgres_database.connect_args.get("server_settings", {})}
    args = {"server_settings": {**settings, "application_name": name}}
    async with Store.from_url(postgres_database.url, connect_args=args) as store:
        await store.ensure_schema()
        room = (await store.create_room(room_spec())).id
        await postgres_database.execute(
            f"SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = '{name}'"
        )
        # 0: every connection taken is pinged first; 1000: none is, and the end of its socket gives it away
        monkeypatch.setattr(_database, "PING_AFTER_IDLE", ping_after)

        assert (await store.get_room(room)).id == room


async def test_calls_asked_while_one_runs_go_together_and_a_caller_gone_before_is_left_out() -> None:
    runs: list[list[int]] = []
    began, go_on = asyncio.Event(), asyncio.Event()

    async def run(items: list[int]) -> list[int | BaseException]:
        runs.append(items)
        began.set()
        await go_on.wait()
        return [ValueError(f"no {item}") if item == 3 else item * 10 for item in items]

    together: Together[int, int] = Together(run, "test")
    first = asyncio.create_task(together(1))
    await began.wait()  # the first runs alone; the next ones wait for it
    later = [asyncio.create_task(together(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)  # each has asked
    later[2].cancel()
    go_on.set()

    assert await first == 10
    assert await later[0] == 20
    with pytest.raises(ValueError, match="no 3"):
        await later[1]
    with pytest.raises(asyncio.CancelledError):
        await later[2]
    assert runs == [[1], [2, 3]]
    await together.idle()
