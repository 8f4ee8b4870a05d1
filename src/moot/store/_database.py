"""Database URLs, engines and migrations: the parts of the store that know which database it is."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Float, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from moot.store._errors import StoreError

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_PRAGMAS = ("busy_timeout=5000", "foreign_keys=ON", "synchronous=NORMAL")
POSTGRES_CONNECT_TIMEOUT = 10.0  # asyncpg waits 60 s by default: too long to learn a URL is wrong
_MIGRATION_LOCK = 0x6D6F6F74  # "moot": one PostgreSQL advisory lock serialises concurrent upgrades
_HELP = "set MOOT_DATABASE_URL to sqlite+aiosqlite:///path/to/moot.db or postgresql+asyncpg://user@host/db"


def mask(url: str) -> str:
    """The URL with its password hidden, even when it does not parse."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(//[^/@:]*:)[^/]*@", r"\1***@", url)


def async_url(url: str) -> URL:
    """The URL with the async driver: `sqlite://` gets aiosqlite, `postgresql://` gets asyncpg."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise StoreError(f"{mask(url)} is not a database URL; {_HELP}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise StoreError(f"{mask(url)}: {backend} is not supported; {_HELP}")


class db_now(FunctionElement[float]):
    """The database server's clock, in UTC epoch seconds, read inside the statement that uses it.

    Leases are written and judged by this one clock, not by each host's: several machines can share one
    database, and a host whose clock is off can neither steal a live lease nor keep a dead one alive.
    """

    type = Float()
    inherit_cache = True


@compiles(db_now, "sqlite")
def _sqlite_now(_element: db_now, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"  # milliseconds, where CURRENT_TIMESTAMP has seconds


@compiles(db_now, "postgresql")
def _postgres_now(_element: db_now, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "CAST(EXTRACT(EPOCH FROM now()) AS DOUBLE PRECISION)"


def create_engine(url: URL, connect_args: Mapping[str, Any] | None = None) -> AsyncEngine:
    """An engine for SQLite (a file whose folder is made when missing) or PostgreSQL."""
    args = dict(connect_args or {})
    if url.get_backend_name() == "sqlite":
        _make_folder(url)
        engine = create_async_engine(url, connect_args=args, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
        return engine
    from moot._extras import missing

    if problem := missing("PostgreSQL", "asyncpg"):  # the driver comes with the postgres extra
        raise StoreError(problem)
    args.setdefault("timeout", POSTGRES_CONNECT_TIMEOUT)
    return create_async_engine(url, connect_args=args, hide_parameters=True, pool_pre_ping=True)


def _make_folder(url: URL) -> None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    try:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"{url.render_as_string()}: cannot create the folder for the database ({exc.strerror or exc}); "
            f"check MOOT_DATABASE_URL or MOOT_DATA_DIR"
        ) from None


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Every SQLite connection: WAL so readers never block the writer, waits instead of 'locked' errors."""
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(f"PRAGMA {pragma}")
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as exc:
        # A brand-new file that another connection, which already turned WAL on, is writing: SQLite refuses
        # the switch at once rather than wait. WAL is kept in the file, so this connection uses it anyway.
        if "locked" not in str(exc):
            raise
    finally:
        cursor.close()


def alembic_config(connection: Connection) -> Config:
    """Alembic's configuration without an alembic.ini: the packaged scripts, run on this connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def run_upgrade(connection: Connection) -> None:
    """`alembic upgrade head` inside the caller's transaction, one process at a time."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    else:  # take SQLite's write lock now, so two first runs cannot both create the tables
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    command.upgrade(alembic_config(connection), "head")


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()
