"""The scaled-out mode's tests: PostgreSQL from tests/store's fixtures, Redis from a redis-server of their own."""

from __future__ import annotations

from store.fixtures import database, postgres_database, store_factory
from tracing.spans import spans

__all__ = ["database", "postgres_database", "spans", "store_factory"]
