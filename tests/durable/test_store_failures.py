"""A database that fails while a room runs: retried, then the room pauses; its end is always written.

The failures are real: another connection holds the database (SQLite) or the room's row (PostgreSQL) as a
long transaction would, or a table is renamed away. Each room's chair speaks through a model held in flight,
so the test steps in while a turn is running, at a point it chose, whatever the machine's pace.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from moot import durable
from moot.durable import STORE_RETRIES, DurableRun, _retrying
from moot.events import (
    Event,
    RoomCompleted,
    RoomConcluded,
    RoomFailed,
    RoomPaused,
    RoomStarted,
    TurnRestarted,
    TurnStarted,
)
from moot.scale.leases import LetGo
from moot.spec import RoomSpec
from moot.store import Store, StoreError

from ._support import HeldModel, Holder, Reader, Watched, board, chaired_by, execute

# A lease that cannot run out during a test, renewed often: what is tested is how failures are handled,
# never how long they last.
LEASE = {"lease_ttl": 600.0, "renew_every": 0.05}


def opening_in_flight(event: Event) -> bool:
    return isinstance(event, TurnStarted) and event.kind == "opening"


def no_secret_of(url: str, tmp_path: Path) -> Callable[[str], bool]:
    """True for a text that names neither the database's file nor its URL."""
    return lambda text: str(tmp_path) not in text and "moot.db" not in text and url not in text


async def test_hardening_7_renewals_go_on_after_the_database_was_busy_a_while(db_url: str) -> None:
    with HeldModel() as model:
        async with Watched.on(db_url) as store:
            await store.ensure_schema()
            room = await store.create_room(RoomSpec.from_data(chaired_by(model)))
            durable = DurableRun(store, room.id, **LEASE)
            reader = Reader(durable)
            await reader.until(opening_in_flight)
            holder = Holder(db_url, room.id)
            await holder.hold()
            try:
                await store.until(lambda seen: seen["renew"].count("failed") >= 2)
            finally:
                await holder.let_go()
            await store.until(lambda seen: "ok" in seen["renew"][seen["renew"].index("failed") :])
            lease = await store.lease(room.id)
            assert lease is not None
            assert lease.alive
            assert not any(isinstance(e, RoomPaused) for e in reader.events)
            model.release()
            events = await reader.end()
            assert isinstance(events[-1], RoomCompleted)
            assert (await store.get_room(room.id)).status == "completed"


async def test_hardening_7_a_lease_that_cannot_be_renewed_pauses_the_room(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with HeldModel() as model:
        async with Watched.on(db_url) as store:
            await store.ensure_schema()
            room = await store.create_room(RoomSpec.from_data(chaired_by(model)))
            reader = Reader(DurableRun(store, room.id, **LEASE))
            await reader.until(opening_in_flight)
            holder = Holder(db_url, room.id)
            await holder.hold()
            try:
                paused = await reader.until(lambda e: isinstance(e, RoomPaused))
            finally:
                await holder.let_go()
            events = await reader.end()
            assert events[-1] is paused
            assert isinstance(paused, RoomPaused)
            assert paused.reason.startswith("the database was busy; try again: this room's lease could not")
            assert no_secret_of(db_url, tmp_path)(paused.reason)
            assert store.outcomes["renew"].count("failed") == STORE_RETRIES + 1
            record = await store.get_room(room.id)
            assert record.status == "paused"  # not left "running": its end was written once it could be
            assert record.lease is None
            stored = await store.events_after(room.id, 0)
            assert stored[-1] == paused
    assert "lease could not be renewed" in caplog.text  # the server's log has the details


async def test_hardening_7_words_that_cannot_be_read_pause_the_room(db_url: str) -> None:
    with HeldModel() as model:
        async with Watched.on(db_url) as store:
            await store.ensure_schema()
            room = await store.create_room(RoomSpec.from_data(chaired_by(model)))
            reader = Reader(DurableRun(store, room.id, **LEASE))
            await reader.until(opening_in_flight)
            await execute(db_url, "ALTER TABLE interventions RENAME TO interventions_away")
            try:
                paused = await reader.until(lambda e: isinstance(e, RoomPaused))
            finally:
                await execute(db_url, "ALTER TABLE interventions_away RENAME TO interventions")
            await reader.end()
            assert isinstance(paused, RoomPaused)
            assert "words sent to this room could not be read" in paused.reason
            assert (await store.get_room(room.id)).status == "paused"
            # the room goes on once the database is back, and takes the words in
            model.release()
            resumed = DurableRun(store, room.id)
            await resumed.intervene("Mind the on-call rota.")
            assert (await resumed.wait()).status == "completed"
            assert (await store.pending_interventions(room.id)) == []


async def test_hardening_7_a_completed_room_is_stored_completed_when_its_first_final_save_fails(
    db_url: str,
) -> None:
    async with Watched.on(db_url) as store:
        await store.ensure_schema()
        room = await store.create_room(RoomSpec.from_data(board(0)))
        holder = Holder(db_url, room.id)

        async def let_go(call: str, failures: int) -> None:
            if call == "update_room":
                await holder.let_go()  # the database is back right after the first failure

        store.on_failure = let_go
        seen: list[Event] = []
        # closed on the way out, even when the test fails mid-run: no connection of the run's outlives the test
        try:
            async with contextlib.aclosing(aiter(DurableRun(store, room.id, **LEASE))) as run:
                async for event in run:
                    seen.append(event)
                    if isinstance(event, RoomCompleted):  # stored; its status is written after the last event
                        await holder.hold()
        finally:
            await holder.let_go()  # nothing left to let go of when the run went as it should
        assert isinstance(seen[-1], RoomCompleted)
        assert store.outcomes["update_room"][-2:] == ["failed", "ok"]
        record = await store.get_room(room.id)
        assert record.status == "completed"
        assert record.lease is None


async def test_hardening_3_a_database_failure_shows_participants_no_database_path(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="moot.durable")
    with HeldModel() as model:
        async with Watched.on(db_url) as store:
            await store.ensure_schema()
            room = await store.create_room(RoomSpec.from_data(chaired_by(model)))
            holder = Holder(db_url, room.id)

            async def back_after_the_last_try(call: str, failures: int) -> None:
                if call == "save_entry" and failures == STORE_RETRIES + 1:
                    await holder.let_go()  # back only once the run gave the turn up: the room fails

            store.on_failure = back_after_the_last_try
            durable = DurableRun(store, room.id, lease_ttl=600.0)  # no renewal while the database is held
            reader = Reader(durable)
            await reader.until(opening_in_flight)
            await holder.hold()
            model.release()
            events = await reader.end()
            failed = events[-1]
            assert isinstance(failed, RoomFailed)
            assert failed.error == "the database was busy; try again"
            [fallback] = [e for e in events if isinstance(e, RoomConcluded)]
            clean = no_secret_of(db_url, tmp_path)
            assert clean(fallback.summary)
            record = await store.get_room(room.id)
            assert (record.status, record.error) == ("error", "the database was busy; try again")
            assert durable.result is not None
            assert durable.result.error == "the database was busy; try again"
            assert all(clean(e.model_dump_json()) for e in await store.events_after(room.id, 0))
    assert store.url in caplog.text  # the details are in the server's log, for whoever runs it


async def test_hardening_9_a_turn_cut_by_a_crash_is_restarted_for_watchers_when_the_room_resumes(
    db_url: str,
) -> None:
    async with Store.from_url(db_url) as store:
        await store.ensure_schema()
        room = await store.create_room(RoomSpec.from_data(board(0)))
        # what a process killed mid-turn leaves: the room "running", the turn's text so far, stored
        await store.save_partial(room.id, "r0:opening:Chair", "Good morning, everyone. Today we", 7)
        await store.update_room(room.id, status="running")
        events = [e async for e in DurableRun(store, room.id)]
        assert isinstance(events[0], RoomStarted)
        restarted = events[1]
        assert isinstance(restarted, TurnRestarted)
        assert (restarted.turn_id, restarted.round, restarted.speaker) == ("r0:opening:Chair", 0, "Chair")
        assert restarted.discard
        assert restarted.seq > 7
        started = next(i for i, e in enumerate(events) if isinstance(e, TurnStarted))
        assert events[started].turn_id == "r0:opening:Chair"  # before the turn runs again
        assert restarted in await store.events_after(room.id, 0)  # a watcher who reconnects gets it too
        assert isinstance(events[-1], RoomCompleted)


async def test_a_write_refused_on_purpose_is_not_tried_again() -> None:
    """A worker that let a room go refuses its writes (LetGo): the run ends at once, not after backoff."""
    calls: list[int] = []

    async def refused() -> None:
        calls.append(1)
        raise LetGo("r1")

    with pytest.raises(LetGo):
        await _retrying("test", "saving a turn", refused)
    assert calls == [1]


async def test_before_the_stores_horizon_a_failed_call_is_tried_past_its_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker's store names until when its lease on a room surely holds: until then the run keeps trying
    (the database may be back, or the worker lets the room go); past it, or without one, the count decides."""
    monkeypatch.setattr(durable, "RETRY_FIRST", 0.001)
    monkeypatch.setattr(durable, "RETRY_WHILE_HELD", 0.001)

    def failing(times: int) -> Callable[[], Awaitable[str]]:
        calls: list[int] = []

        async def call() -> str:
            calls.append(1)
            if len(calls) <= times:
                raise StoreError("the database is away")
            return "saved"

        return call

    asked: list[float] = []

    def horizon() -> float:
        asked.append(1)
        return time.monotonic() + 600

    past_the_count = STORE_RETRIES + 3
    assert await _retrying("test", "saving a turn", failing(past_the_count), horizon=horizon) == "saved"
    assert len(asked) == 1, "the horizon is taken once, at the first failure"
    with pytest.raises(StoreError):
        await _retrying("test", "saving a turn", failing(past_the_count), horizon=lambda: None)
    with pytest.raises(StoreError):
        await _retrying("test", "saving a turn", failing(past_the_count), horizon=time.monotonic)
    assert await _retrying("test", "saving a turn", failing(STORE_RETRIES), horizon=lambda: None) == "saved"
    with pytest.raises(StoreError):  # no retries of its own: only the horizon's
        await _retrying("test", "storing the run's last events", failing(1), retries=0)
    assert await _retrying("test", "storing", failing(3), horizon=horizon, retries=0) == "saved"
    with pytest.raises(LetGo):  # refused on purpose: at once, horizon or not
        await _retrying("test", "saving a turn", _refused, horizon=horizon)


async def _refused() -> None:
    raise LetGo("r1")
