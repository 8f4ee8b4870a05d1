"""The schema comes from Alembic migrations, runs again harmlessly, and matches the ORM models."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from moot.store import Store
from moot.store.tables import Base

from .fixtures import Database
from .helpers import room_spec


async def test_upgrade_creates_the_schema_and_runs_again_harmlessly(fresh_database: Database) -> None:
    async with fresh_database.store() as store:
        assert await store.revision() is None
        await store.upgrade()
        await store.upgrade()
        assert await store.revision() == Store.head_revision() is not None
        room = await store.create_room(room_spec())
    async with fresh_database.store() as again:
        await again.ensure_schema()
        assert (await again.get_room(room.id)).task == room.task


async def test_two_processes_migrating_at_once_both_succeed(fresh_database: Database) -> None:
    async with fresh_database.store() as one, fresh_database.store() as two:
        await asyncio.gather(one.upgrade(), two.upgrade())
        assert await one.revision() == await two.revision() == Store.head_revision()


async def test_ensure_schema_upgrades_once_per_store(store: Store, monkeypatch: Any) -> None:
    calls: list[str] = []

    async def upgrade() -> None:
        calls.append("upgrade")

    monkeypatch.setattr(store, "upgrade", upgrade)
    await store.ensure_schema()  # the fixture's call already migrated this store
    assert calls == []


async def test_migrations_build_exactly_the_models(store: Store, database: Database) -> None:
    def differences(conn: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))

    engine = create_async_engine(database.url, connect_args=database.connect_args, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(differences) == []
    finally:
        await engine.dispose()


async def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path: Any) -> None:
    path = tmp_path / "data" / "nested" / "moot.db"  # the folder is made when missing
    async with Store.from_url(f"sqlite:///{path}") as store:
        await store.upgrade()
        async with store._engine.connect() as conn:  # pragmas are per connection: ask one of its own
            pragmas = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            }
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 5000, "synchronous": 1}
    with sqlite3.connect(path) as plain:  # WAL is a property of the file, seen by any reader
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    plain.close()
