"""Rooms: created idle, read back with the spec they were given, listed newest first, updated, deleted."""

from __future__ import annotations

import itertools
import re
import time

import pytest

from moot.conclusion import Conclusion
from moot.models import Usage
from moot.store import RoomNotFound, Store, StoreError

from .fixtures import Database
from .helpers import room_spec, speech, task


async def test_create_and_get(store: Store) -> None:
    spec = room_spec()
    created = await store.create_room(spec)
    assert re.fullmatch(r"[0-9a-f]{12}", created.id)
    room = await store.get_room(created.id)
    assert room == created
    assert (room.status, room.round, room.usage, room.conclusion, room.error, room.lease) == (
        "idle",
        0,
        Usage(),
        None,
        None,
        None,
    )
    assert room.spec == spec
    assert room.title == "Should we open-source our engine?"  # the task's first line
    assert (room.task, room.protocol) == (spec.task, "board")
    assert room.created_at == room.updated_at > 0


async def test_create_with_a_given_id_refuses_it_twice(store: Store) -> None:
    await store.create_room(room_spec(), room_id="board-1")
    with pytest.raises(StoreError, match="room board-1 already exists"):
        await store.create_room(room_spec(), room_id="board-1")
    with pytest.raises(ValueError, match="room id"):
        await store.create_room(room_spec(), room_id="no spaces please")


async def test_title_is_the_spec_title_or_a_shortened_first_line(store: Store) -> None:
    titled = await store.create_room(room_spec(title="Open source?"))
    long = await store.create_room(room_spec(task="word " * 100))
    assert titled.title == "Open source?"
    assert len(long.title) == 80
    assert long.title.endswith("…")


async def test_the_spec_round_trips_with_a_literal_api_key(store: Store) -> None:
    spec = room_spec(
        title="Local models",
        language="zh",
        models={
            "local": {
                "provider": "openai",
                "model": "qwen2.5:7b",
                "base_url": "http://127.0.0.1:11434/v1",
                "api_key": "sk-local-0123456789",
                "temperature": 0.3,
            }
        },
        default_model="local",
        agents=[{"name": "甲", "color": "#123456", "model": {"provider": "anthropic", "model": "claude-x"}}],
        limits={"max_total_tokens": 5000, "fallback_models": False},
    )
    room = await store.get_room((await store.create_room(spec)).id)
    assert room.spec == spec
    assert room.spec.model_dump(mode="json") == spec.model_dump(mode="json")
    key = room.spec.models["local"].api_key
    assert key is not None
    assert key.get_secret_value() == "sk-local-0123456789"


async def test_list_rooms_newest_activity_first(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    start, ticks = time.time(), itertools.count()
    monkeypatch.setattr(time, "time", lambda: start + next(ticks))  # each change a second after the last
    first = await store.create_room(room_spec(), room_id="first")
    await store.create_room(room_spec(), room_id="second")
    await store.create_room(room_spec(), room_id="third")
    assert [r.id for r in await store.list_rooms()] == ["third", "second", "first"]
    await store.save_entry(first.id, task(), [])  # activity brings a room to the top
    assert [r.id for r in await store.list_rooms()] == ["first", "third", "second"]
    assert [r.id for r in await store.list_rooms(limit=2, offset=1)] == ["third", "second"]


async def test_list_rooms_of_one_owner(store: Store, database: Database) -> None:
    await database.execute(
        "INSERT INTO users (id, name, role, created_at) VALUES (71, 'ann', 'member', 0)",
        "INSERT INTO users (id, name, role, created_at) VALUES (72, 'ben', 'admin', 0)",
    )
    await store.create_room(room_spec(), room_id="anns", owner_id=71)
    await store.create_room(room_spec(), room_id="bens", owner_id=72)
    await store.create_room(room_spec(), room_id="nobodys")
    assert [r.id for r in await store.list_rooms(owner_id=71)] == ["anns"]
    assert (await store.get_room("anns")).owner_id == 71
    assert len(await store.list_rooms()) == 3
    with pytest.raises(StoreError, match="no user 73"):
        await store.create_room(room_spec(), owner_id=73)


async def test_update_room_status_and_error(store: Store) -> None:
    room = await store.create_room(room_spec())
    await store.update_room(room.id, status="running")
    running = await store.get_room(room.id)
    assert running.status == "running"
    assert running.updated_at > room.updated_at
    await store.update_room(room.id, status="error", error="the model server went away")
    failed = await store.get_room(room.id)
    assert (failed.status, failed.error) == ("error", "the model server went away")  # B16
    await store.update_room(room.id, status="paused")
    assert ((await store.get_room(room.id)).status, (await store.get_room(room.id)).error) == ("paused", None)
    with pytest.raises(ValueError, match="status 'sleeping'"):
        await store.update_room(room.id, status="sleeping")  # type: ignore[arg-type]
    with pytest.raises(RoomNotFound):
        await store.update_room("nope", status="running")


async def test_delete_room_takes_everything_of_it(store: Store) -> None:
    room = await store.create_room(room_spec())
    entry = speech(1, "Alice", 0)
    await store.save_entry(room.id, entry, [])
    await store.save_events(room.id, [])
    await store.save_partial(room.id, "r1:speech:Bob", "half", 3)
    await store.add_intervention(room.id, "hello")
    await store.delete_room(room.id)
    with pytest.raises(RoomNotFound):
        await store.get_room(room.id)
    assert len(await store.load_transcript(room.id)) == 0
    assert await store.partials(room.id) == {}
    assert await store.pending_interventions(room.id) == []
    with pytest.raises(RoomNotFound):
        await store.delete_room(room.id)


async def test_room_not_found_says_how_to_list_rooms(store: Store) -> None:
    with pytest.raises(RoomNotFound, match="no room 'missing'; `moot rooms` lists") as caught:
        await store.get_room("missing")
    assert caught.value.room_id == "missing"


async def test_usage_round_and_conclusion_follow_the_entries(store: Store) -> None:  # covers: B16
    room = await store.create_room(room_spec())
    await store.save_entry(room.id, speech(1, "Alice", 0, tokens=(100, 20)), [])
    await store.save_entry(room.id, speech(2, "Alice", 0, tokens=(200, 30)), [])
    await store.save_entry(room.id, speech(1, "Bob", 1, tokens=(150, 25)), [])  # a late round-1 speech
    conclusion = Conclusion(
        summary="Open the core.",
        decision_advice="Keep the hosted service paid.",
        consensus_points=["the core is not the moat"],
        dissent_points=["Bob: licence risk"],
    )
    await store.save_entry(
        room.id,
        speech(2, "Chair", 0, tokens=(300, 40)).model_copy(
            update={"kind": "conclusion", "round": 3, "conclusion": conclusion}
        ),
        [],
    )
    stored = await store.get_room(room.id)
    assert stored.round == 2  # the highest round of a speech or summary; a conclusion is no round
    assert stored.usage == Usage(input_tokens=750, output_tokens=115)
    assert stored.conclusion == conclusion
