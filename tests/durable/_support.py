"""Databases a subprocess reaches by URL alone, and the rooms the durable tests run.

The store's own fixtures keep PostgreSQL tests apart by schema (a driver argument); a `moot` subprocess only
reads MOOT_DATABASE_URL, so here PostgreSQL gets a database of its own for the session, emptied before each
test. When PostgreSQL cannot be reached its tests skip, or fail where CI=true (the store's rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import threading
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import yaml
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import make_url

from moot.engine import Run
from moot.events import Event
from moot.spec import RoomSpec
from moot.store import RoomRecord, Store, StoredIntervention, StoreError
from moot.testing.servers import FakeLLMServer
from moot.transcript import Entry
from store.fixtures import POSTGRES_URL, Database, _postgres_missing

T = TypeVar("T")

# A board meeting small enough to run in seconds: the moderator opens, two members speak at once in each of
# two rounds, the moderator sums up each round and concludes.
BOARD = {
    "task": "Should our 40-person studio move to a four-day week?",
    "protocol": "board",
    "max_rounds": 2,
    "models": {"sim": {"provider": "simulated", "seed": 7, "tokens_per_second": 200}},
    "default_model": "sim",
    "agents": [
        {"name": "Chair", "role": "moderator", "persona": "a neutral chair"},
        {"name": "Ana", "persona": "a cautious engineer"},
        {"name": "Ben", "persona": "an ambitious product lead"},
    ],
}


def board(speed: float = 200, **changes: Any) -> dict[str, Any]:
    """The board meeting at `speed` simulated tokens per second, with top-level fields replaced."""
    sim = {**BOARD["models"]["sim"], "tokens_per_second": speed}
    return {**BOARD, "models": {"sim": sim}, **changes}


def room_file(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / "room.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def reference_turns(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(turn id, text) of every turn of an uninterrupted run of the same room, in process, at full speed."""
    models = {name: {**spec, "tokens_per_second": 0} for name, spec in data["models"].items()}
    run = Run(RoomSpec.from_data({**data, "models": models}))
    result = asyncio.run(run.wait())
    assert result.status == "completed"
    return [(e.turn_id, e.text) for e in run.transcript if e.is_turn]


def read(url: str, query: Callable[[Store], Awaitable[T]]) -> T:
    """What the store holds, read the way another process would: a Store of its own, closed after."""

    async def go() -> T:
        async with Store.from_url(url) as store:
            return await query(store)

    return asyncio.run(go())


def room(url: str, room_id: str) -> RoomRecord:
    return read(url, lambda store: store.get_room(room_id))


def stored_turns(url: str, room_id: str) -> list[tuple[str, str]]:
    """(turn id, text) of every turn the store holds for the room, in transcript order."""
    transcript = read(url, lambda store: store.load_transcript(room_id))
    return [(e.turn_id, e.text) for e in transcript if e.is_turn]


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated PostgreSQL database of this session's own, dropped at the end."""
    name = f"moot_cli_{os.getpid()}_{secrets.token_hex(4)}"
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(_plain(POSTGRES_URL))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    async def migrate() -> None:
        async with Store.from_url(url) as store:
            await store.upgrade()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        _postgres_missing(exc)
    try:
        asyncio.run(migrate())
        yield url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty database on each backend, named in MOOT_DATABASE_URL for every `moot` subprocess."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'moot.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        asyncio.run(Database(url).clear())
    monkeypatch.setenv("MOOT_DATABASE_URL", url)
    monkeypatch.setenv("MOOT_DATA_DIR", str(tmp_path / "data"))  # never the user's own data directory
    return url


# ---- models held in flight, and a database that fails for real ---------------------------------------------

HANG = 120  # seconds after which a wait that never ends fails the test; never a pace the test relies on
# How long the tests' own SQLite connections wait for the database's lock (the store's wait is `Watched`'s).
LOCK_WAIT = HANG


class HeldModel:
    """An OpenAI-compatible model server whose replies wait until the test lets them go.

    A turn asked of it stays in flight (started, not a word streamed) for as long as the test needs, so a
    test steps in at a point it chose rather than racing the room's pace. `reply` makes the text from the
    request; `requests` keeps every request's JSON body.
    """

    def __init__(self, reply: Callable[[dict[str, Any]], str] | None = None) -> None:
        self.released = threading.Event()
        self._reply = reply or (lambda _body: "We should try it for one quarter and measure what changes.")
        self.server = FakeLLMServer(reply=self._held, reply_tokens=12)

    def _held(self, body: dict[str, Any]) -> str:
        if not self.released.wait(timeout=300):
            raise AssertionError("the test never released the model")
        return self._reply(body)

    @property
    def spec(self) -> dict[str, Any]:
        """The model as a room file declares it."""
        return {
            "provider": "openai",
            "model": "fake-model",
            "base_url": f"{self.server.url}/v1",
            "api_key": "sk-held-0123456789",
        }

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.server.requests if r.path == "/v1/chat/completions"]

    def release(self) -> None:
        self.released.set()

    def __enter__(self) -> HeldModel:
        self.server.start_in_thread()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()
        self.server.stop()


def chaired_by(model: HeldModel, **changes: Any) -> dict[str, Any]:
    """The board meeting with its chair speaking through `model`; the members are simulated."""
    data = board(0, **changes)
    data["models"] = {**data["models"], "held": model.spec}
    data["agents"] = [{**a, "model": "held"} if a.get("role") == "moderator" else a for a in data["agents"]]
    return data


def impatient(url: str) -> dict[str, Any]:
    """Driver arguments so that a PostgreSQL statement waits at most 0.1 s for a lock (SQLite: see below)."""
    return {"server_settings": {"lock_timeout": "100"}} if url.startswith("postgres") else {}


class Watched(Store):
    """A store on a real database that also notes how some of its calls went, for a test to wait on.

    It fakes nothing: each call runs as usual; `outcomes[name]` gets "ok" or "failed" after it. SQLite
    connections wait 0.05 s for a lock (PostgreSQL: `impatient`), so a held database fails calls at once.
    `on_failure` runs after a failed call, before its error goes on.
    """

    WATCHED = ("renew", "update_room", "save_entry", "pending_interventions", "release")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, list[str]] = {name: [] for name in self.WATCHED}
        self.on_failure: Callable[[str, int], Awaitable[None]] | None = None
        self._changed = asyncio.Condition()
        if self._engine.dialect.name == "sqlite":
            sqlalchemy_event.listen(self._engine.sync_engine, "connect", _short_busy_wait)

    @classmethod
    def on(cls, url: str) -> Watched:
        store = cls.from_url(url, connect_args=impatient(url))
        assert isinstance(store, Watched)
        return store

    async def until(self, check: Callable[[dict[str, list[str]]], bool]) -> None:
        """Waits until `check(outcomes)` holds (HANG only turns a hang into a failure)."""
        async with asyncio.timeout(HANG), self._changed:
            await self._changed.wait_for(lambda: check(self.outcomes))

    async def _note(self, name: str, call: Awaitable[T]) -> T:
        try:
            result = await call
        except StoreError:
            self.outcomes[name].append("failed")
            if self.on_failure is not None:
                await self.on_failure(name, self.outcomes[name].count("failed"))
            raise
        finally:
            async with self._changed:
                self._changed.notify_all()
        self.outcomes[name].append("ok")
        async with self._changed:
            self._changed.notify_all()
        return result

    async def renew(self, room_id: str, owner: str, ttl: float) -> bool:
        return await self._note("renew", super().renew(room_id, owner, ttl))

    async def update_room(self, room_id: str, **changes: Any) -> None:
        await self._note("update_room", super().update_room(room_id, **changes))

    async def save_entry(self, room_id: str, entry: Entry, events: Sequence[Event]) -> None:
        await self._note("save_entry", super().save_entry(room_id, entry, events))

    async def pending_interventions(self, room_id: str) -> list[StoredIntervention]:
        return await self._note("pending_interventions", super().pending_interventions(room_id))

    async def release(self, room_id: str, owner: str) -> None:
        await self._note("release", super().release(room_id, owner))


def _short_busy_wait(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=50")
    cursor.close()


class Holder:
    """Another process's long transaction: on SQLite it holds the database's write lock, on PostgreSQL the
    room's row. The store's writes to the room then fail as they would on a busy server."""

    def __init__(self, url: str, room_id: str) -> None:
        self.url = url
        self.room_id = room_id
        self._sqlite: sqlite3.Connection | None = None
        self._postgres: asyncpg.Connection | None = None

    async def hold(self) -> None:
        if self.url.startswith("postgres"):
            self._postgres = await asyncpg.connect(_plain(self.url))
            await self._postgres.execute("BEGIN")
            await self._postgres.execute("SELECT id FROM rooms WHERE id = $1 FOR UPDATE", self.room_id)
        else:
            # The lock may be taken for a moment by the run's own write: wait for it, however slow the machine,
            # and off the event loop, since that write needs the loop to finish and let go of it.
            self._sqlite = await asyncio.to_thread(_hold_sqlite, make_url(self.url).database or "")

    async def let_go(self) -> None:
        if self._postgres is not None:
            await self._postgres.execute("ROLLBACK")
            await self._postgres.close()
            self._postgres = None
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
            self._sqlite = None


async def execute(url: str, statement: str) -> None:
    """Runs one statement on the database from a connection of its own, as an administrator would."""
    if url.startswith("postgres"):
        connection = await asyncpg.connect(_plain(url))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()
    else:
        await asyncio.to_thread(_execute_sqlite, make_url(url).database or "", statement)


def _hold_sqlite(path: str) -> sqlite3.Connection:
    lite = sqlite3.connect(path, timeout=LOCK_WAIT, isolation_level=None, check_same_thread=False)
    try:
        lite.execute("BEGIN IMMEDIATE")
    except BaseException:
        lite.close()
        raise
    return lite


def _execute_sqlite(path: str, statement: str) -> None:
    with contextlib.closing(sqlite3.connect(path, timeout=LOCK_WAIT)) as lite:
        lite.execute(statement)
        lite.commit()


class Reader:
    """Reads a run's events in a task of its own, so that a test can wait for one while it does other things."""

    def __init__(self, run: AsyncIterable[Event]) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        self.task = asyncio.create_task(self._read(run))

    async def _read(self, run: AsyncIterable[Event]) -> None:
        try:
            async for event in run:
                self.events.append(event)
                async with self._changed:
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def until(self, check: Callable[[Event], bool]) -> Event:
        """The first event for which `check` holds, once it has come (HANG only turns a hang into a failure)."""

        def found() -> bool:
            return self.task.done() or any(check(e) for e in self.events)

        async with asyncio.timeout(HANG), self._changed:
            await self._changed.wait_for(found)
        for seen in self.events:
            if check(seen):
                return seen
        raise AssertionError(f"the run ended first: {[e.type for e in self.events][-5:]}")

    async def end(self) -> list[Event]:
        async with asyncio.timeout(HANG):
            await self.task
        return self.events
