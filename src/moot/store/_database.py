"""Database URLs, engines and migrations: the parts of the store that know which database it is."""

from __future__ import annotations

import math
import re
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Float, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from moot.store._errors import StoreError

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_PRAGMAS = ("busy_timeout=5000", "foreign_keys=ON", "synchronous=NORMAL")
POSTGRES_CONNECT_TIMEOUT = 10.0  # asyncpg waits 60 s by default: too long to learn a URL is wrong
# Connections a process keeps, and how many more it may open for a while: 15 at most, as SQLAlchemy's default
# pool (5 + 10), but 10 kept, so that a process running many rooms does not open and close connections (each a
# new server process, its type lookups and statements prepared again) at every burst of writes.
POSTGRES_POOL = (10, 5)
PING_AFTER_IDLE = (
    10.0  # seconds a pooled PostgreSQL connection sits unused before it is pinged as it is taken
)
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
    # No pool_pre_ping: with asyncpg it is three round trips (BEGIN, ";", ROLLBACK) at every checkout, more
    # than most of the store's calls send themselves. A connection the server or the network closed is known
    # to asyncpg once its socket saw the end, and is swapped at checkout for free; one that sat unused a while
    # (a server restarted overnight) is pinged as it is taken (`_checked_out`). One that breaks under a
    # statement fails that call and invalidates the pool's older connections; the caller's retry
    # (moot.durable) runs on a new one.
    engine = create_async_engine(
        url,
        connect_args=args,
        hide_parameters=True,
        pool_size=POSTGRES_POOL[0],
        max_overflow=POSTGRES_POOL[1],
    )
    event.listen(engine.sync_engine, "checkin", _checked_in)
    event.listen(engine.sync_engine, "checkout", _checked_out)
    return engine


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The engine for reads and single-statement writes: on PostgreSQL the same pool without BEGIN and
    ROLLBACK around each (two round trips of three for a read: each statement is its own transaction); on
    SQLite the engine itself (its driver begins nothing for a read)."""
    if engine.dialect.name != "postgresql":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _checked_in(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """A pooled PostgreSQL connection as it is taken: one whose socket is closed already is replaced, one
    unused for PING_AFTER_IDLE seconds or more is pinged first (replaced when the ping finds it gone)."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the database closed this connection")
    if time.monotonic() - record.info.get("idle_since", math.inf) < PING_AFTER_IDLE:
        return
    try:
        dbapi_connection.ping()
    except Exception as exc:
        raise DisconnectionError(f"the database did not answer a ping: {exc}") from exc


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
