"""Every storage test runs on SQLite and on PostgreSQL: see fixtures.py."""

from __future__ import annotations

from .fixtures import database, fresh_database, postgres_database, store, store_factory

__all__ = ["database", "fresh_database", "postgres_database", "store", "store_factory"]
