"""Databases a subprocess reaches by URL alone, and the rooms the durable tests run.

The store's own fixtures keep PostgreSQL tests apart by schema (a driver argument); a `moot` subprocess only
reads MOOT_DATABASE_URL, so here PostgreSQL gets a database of its own for the session, emptied before each
test. When PostgreSQL cannot be reached its tests skip, or fail where CI=true (the store's rule).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import yaml
from sqlalchemy import make_url

from moot.engine import Run
from moot.spec import RoomSpec
from moot.store import RoomRecord, Store
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
