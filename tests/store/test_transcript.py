"""The transcript and its events: one transaction per entry, canonical order, a turn never stored twice."""

from __future__ import annotations

import random

import pytest

from moot.events import InterventionAdded, RoundCompleted
from moot.models import Usage
from moot.store import DuplicateTurn, RoomNotFound, Store, StoreError
from moot.transcript import USER, Entry

from .helpers import completed, room_spec, round_started, speech, task


def discussion() -> list[Entry]:
    """A board meeting's entries, digests and people's words included, in canonical order."""
    opening = Entry(kind="opening", round=0, speaker="Chair", text="Welcome.", usage=Usage(input_tokens=5))
    return [
        task(),
        opening,
        speech(1, "Alice", 0),
        speech(1, "Bob", 1),
        Entry(
            kind="intervention",
            round=1,
            slot=1000,
            arrival=1,
            speaker=USER,
            text="Mind the licence.",
            ref="x",
        ),
        Entry(kind="summary", round=1, stage=1, speaker="Chair", text="Round one, summed up."),
        speech(2, "Alice", 0),
        speech(2, "Bob", 1, "我同意。"),
        Entry(kind="conclusion", round=3, speaker="Chair", text="{}", fallback=True),
    ]


async def test_entries_come_back_in_canonical_order(store: Store) -> None:  # covers: L8
    room = await store.create_room(room_spec())
    entries = discussion()
    digests = [
        Entry(kind="digest", round=2, speaker="Chair", text="Later.", covers=(2, 0, 0, 0)),
        Entry(kind="digest", round=1, speaker="Chair", text="Earlier.", covers=(1, 1, 0, 0)),
    ]
    shuffled = entries + digests
    random.Random(7).shuffle(shuffled)
    for entry in shuffled:
        await store.save_entry(room.id, entry, [])
    transcript = await store.load_transcript(room.id)
    assert transcript.entries == entries  # every field, the speaker's colour, usage and time included
    assert [d.text for d in transcript.digests] == ["Earlier.", "Later."]
    assert transcript.task == entries[0]  # covers: L4 (the task is round 0's first entry)


async def test_a_turn_is_stored_once_and_a_refused_one_leaves_nothing(store: Store) -> None:  # covers: L10
    room = await store.create_room(room_spec())
    first = speech(1, "Alice", 0, "The first take.")
    await store.save_entry(room.id, first, completed(first, 1))
    before = await store.get_room(room.id)
    writes = store.writes
    again = speech(1, "Alice", 0, "A second take after a crash.")
    with pytest.raises(DuplicateTurn, match="turn r1:speech:Alice is already stored") as caught:
        await store.save_entry(room.id, again, completed(again, 3))
    assert (caught.value.room_id, caught.value.turn_id) == (room.id, "r1:speech:Alice")
    assert [e.text for e in await store.load_transcript(room.id)] == ["The first take."]
    assert await store.last_seq(room.id) == 2  # the refused turn's events were not kept either
    after = await store.get_room(room.id)
    assert (after.usage, after.updated_at) == (before.usage, before.updated_at)
    assert store.writes == writes


async def test_entries_that_are_not_turns_never_collide(store: Store) -> None:
    room = await store.create_room(room_spec())
    for arrival, text in ((2, "two"), (1, "one")):
        entry = Entry(kind="intervention", round=1, slot=1000, arrival=arrival, speaker=USER, text=text)
        await store.save_entry(room.id, entry, [])
    digest = Entry(kind="digest", round=1, speaker="Chair", text="So far.", covers=(1, 0, 0, 0))
    await store.save_entry(room.id, digest, [])
    await store.save_entry(room.id, digest.model_copy(update={"covers": (1, 1000, 0, 0)}), [])
    transcript = await store.load_transcript(room.id)
    assert [e.text for e in transcript] == ["one", "two"]
    assert len(transcript.digests) == 2


async def test_events_after_and_last_seq(store: Store) -> None:
    room = await store.create_room(room_spec())
    assert await store.last_seq(room.id) == 0
    entry = speech(1, "Alice", 0)
    await store.save_events(room.id, [round_started(1)])
    await store.save_entry(room.id, entry, completed(entry, 2))
    await store.save_events(room.id, [RoundCompleted(seq=4, round=1, continues=False)])
    assert await store.last_seq(room.id) == 4
    assert await store.events_after(room.id, 0) == [
        round_started(1),
        *completed(entry, 2),
        RoundCompleted(seq=4, round=1, continues=False),
    ]
    assert [e.seq for e in await store.events_after(room.id, 1, limit=2)] == [2, 3]
    assert await store.events_after(room.id, 4) == []
    with pytest.raises(StoreError, match="overlap events already stored"):
        await store.save_events(room.id, [round_started(4, round_=2)])
    with pytest.raises(RoomNotFound):
        await store.save_events("nope", [round_started(1)])


@pytest.mark.parametrize(
    "after", [2**31 - 1, 2**31, 2**63, 2**64, 10**4000], ids=["2^31-1", "2^31", "2^63", "2^64", "4000 digits"]
)
async def test_hardening_9_replay_after_a_number_past_any_stored_is_empty_not_an_error(
    store: Store, after: int
) -> None:
    room = await store.create_room(room_spec())
    await store.save_events(room.id, [round_started(1)])
    assert await store.events_after(room.id, after) == []
    assert await store.events_after(room.id, -after) == [round_started(1)]


async def test_hardening_9_ids_past_a_column_s_range_name_no_row(store: Store) -> None:
    huge = 2**63
    assert await store.get_user(huge) is None
    assert await store.update_user(huge, role="admin") is None
    assert not await store.delete_user(huge)
    assert await store.get_provider(huge, owner_id=1) is None
    assert await store.get_template(1, owner_id=-huge) is None
    assert await store.update_template(huge, owner_id=1, name="x") is None
    assert not await store.delete_provider(huge, owner_id=1)
    assert not await store.delete_template(1, owner_id=huge)


async def test_save_entry_needs_the_room(store: Store) -> None:
    with pytest.raises(RoomNotFound):
        await store.save_entry("nope", task(), [])


async def test_partials_are_upserted_and_go_when_their_turn_is_stored(store: Store) -> None:
    room = await store.create_room(room_spec())
    await store.save_partial(room.id, "r1:speech:Alice", "Hel", 3)
    await store.save_partial(room.id, "r1:speech:Alice", "Hello, wor", 5)
    await store.save_partial(room.id, "r1:speech:Bob", "I", 4)
    assert await store.partials(room.id) == {"r1:speech:Alice": ("Hello, wor", 5), "r1:speech:Bob": ("I", 4)}
    alice = speech(1, "Alice", 0, "Hello, world.")
    await store.save_entry(room.id, alice, completed(alice, 6))
    assert await store.partials(room.id) == {"r1:speech:Bob": ("I", 4)}
    await store.clear_partials(room.id)
    assert await store.partials(room.id) == {}
    with pytest.raises(RoomNotFound):
        await store.save_partial("nope", "r1:speech:Alice", "x", 1)


async def test_interventions_wait_until_their_entry_takes_them(store: Store) -> None:
    room = await store.create_room(room_spec())
    first = await store.add_intervention(room.id, "Mind the licence.")
    second = await store.add_intervention(room.id, "And the support costs.", author="ann")
    pending = await store.pending_interventions(room.id)
    assert [(p.id, p.author, p.text) for p in pending] == [
        (first, "user", "Mind the licence."),
        (second, "ann", "And the support costs."),
    ]
    assert first.isdecimal()
    assert pending[0].created_at <= pending[1].created_at
    entry = Entry(kind="intervention", round=1, slot=1000, speaker=USER, text="Mind the licence.", ref=first)
    event = InterventionAdded(seq=1, round=1, author="user", text=entry.text)
    await store.save_entry(room.id, entry, [event])
    assert [p.id for p in await store.pending_interventions(room.id)] == [second]
    assert (await store.load_transcript(room.id)).entries[0].ref == first
    with pytest.raises(RoomNotFound):
        await store.add_intervention("nope", "hello")


async def test_writes_count_one_transaction_per_entry(store: Store) -> None:
    room = await store.create_room(room_spec())
    before = store.writes
    for slot, name in enumerate(("Alice", "Bob")):
        entry = speech(1, name, slot)
        await store.save_entry(room.id, entry, completed(entry, 1 + 2 * slot))
    assert store.writes - before == 2
