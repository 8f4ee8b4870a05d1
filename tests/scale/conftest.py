"""The scaled-out mode's tests: PostgreSQL from tests/store's fixtures, Redis from a redis-server of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from moot.store import Store
from moot.testing.cluster import ClusterUnavailable, RedisServer
from store.fixtures import Database, database, postgres_database, store_factory
from tracing.spans import spans

from ._cluster import missing

__all__ = ["database", "postgres_database", "spans", "store_factory"]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, on a free port, keeping nothing on disk: a test may kill it."""
    try:
        server = RedisServer(tmp_path)
    except ClusterUnavailable as exc:
        missing(str(exc))
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def store(postgres_database: Database) -> AsyncIterator[Store]:
    """The tests' PostgreSQL database, emptied, as the scaled-out mode opens it."""
    await postgres_database.clear()
    opened = Store.from_url(
        postgres_database.url, connect_args=postgres_database.connect_args, local_pids=False
    )
    yield opened
    await opened.close()
