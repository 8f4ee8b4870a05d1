"""The scaled-out mode's tests: PostgreSQL from tests/store's fixtures, Redis from a redis-server of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from moot.testing.cluster import ClusterUnavailable, RedisServer
from store.fixtures import database, postgres_database, store_factory
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
