"""Stores for tests, on SQLite and on PostgreSQL: import these fixtures into any conftest to reuse them.

    from store.fixtures import database, postgres_database, store, store_factory  # noqa: F401

`store` is a migrated Store, once per backend (test ids end in [sqlite] / [postgresql]); `store_factory()`
makes more Stores on the same database (another process, in effect); all are closed after the test.
PostgreSQL: MOOT_TEST_POSTGRES_URL (default below), one fresh schema per test session, tables emptied
before each test. When it cannot be reached the PostgreSQL tests skip, or fail where CI=true.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from moot.store import Store
from moot.store.tables import Base

POSTGRES_URL = os.environ.get("MOOT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Database:
    """Where a test's stores live: a URL, and the driver arguments that keep it apart (a schema)."""

    url: str
    connect_args: dict[str, Any] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return "postgresql" if self.url.startswith("postgres") else "sqlite"

    def store(self) -> Store:
        return Store.from_url(self.url, connect_args=self.connect_args)

    async def execute(self, *statements: str) -> None:
        """Runs SQL beside the store (test set-up), in one transaction."""
        engine = create_async_engine(self.url, connect_args=self.connect_args, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                for statement in statements:
                    await conn.execute(text(statement))
        finally:
            await engine.dispose()

    async def clear(self) -> None:
        await self.execute(*(f"DELETE FROM {table.name}" for table in reversed(Base.metadata.sorted_tables)))


def sqlite_database(folder: Path) -> Database:
    return Database(f"sqlite+aiosqlite:///{folder / 'moot.db'}")


async def new_schema(prefix: str = "moot_test") -> tuple[Database, Callable[[], Any]]:
    """A PostgreSQL schema of its own, and the coroutine function that drops it."""
    schema = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    admin = Database(POSTGRES_URL)
    await admin.execute(f'CREATE SCHEMA "{schema}"')

    async def drop() -> None:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')

    return Database(POSTGRES_URL, {"server_settings": {"search_path": schema}}), drop


def _postgres_missing(exc: BaseException) -> NoReturn:
    url = make_url(POSTGRES_URL).render_as_string(hide_password=True)
    reason = f"PostgreSQL at {url} cannot be reached ({type(exc).__name__}: {exc})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; PostgreSQL is required in CI: start it or set MOOT_TEST_POSTGRES_URL")
    pytest.skip(f"{reason}; start it or set MOOT_TEST_POSTGRES_URL to run the PostgreSQL tests")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[Database]:
    """One migrated schema for the whole session; skips (fails in CI) without a PostgreSQL server."""

    async def create() -> tuple[Database, Callable[[], Any]]:
        database, drop = await new_schema()
        async with database.store() as store:
            await store.upgrade()
        return database, drop

    try:
        database, drop = asyncio.run(create())
    except (OSError, DBAPIError) as exc:
        _postgres_missing(exc)
    yield database
    asyncio.run(drop())


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """The database of one test: a SQLite file of its own, or the session's PostgreSQL schema."""
    if request.param == "sqlite":
        return sqlite_database(tmp_path)
    postgres: Database = request.getfixturevalue("postgres_database")
    return postgres


@pytest.fixture
async def fresh_database(database: Database, tmp_path: Path) -> AsyncIterator[Database]:
    """A database no migration has touched yet, on the test's backend; dropped after the test."""
    if database.backend == "sqlite":
        yield sqlite_database(tmp_path / "fresh")
        return
    fresh, drop = await new_schema("moot_fresh")
    yield fresh
    await drop()


@pytest.fixture
async def store_factory(database: Database) -> AsyncIterator[Callable[[], Store]]:
    """Makes Stores on the test's (emptied) database; every one is closed after the test."""
    if database.backend == "postgresql":
        await database.clear()
    stores: list[Store] = []

    def make() -> Store:
        stores.append(database.store())
        return stores[-1]

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def store(store_factory: Callable[[], Store]) -> Store:
    """A migrated Store, on SQLite and on PostgreSQL."""
    store = store_factory()
    await store.ensure_schema()
    return store
