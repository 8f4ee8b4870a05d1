"""Every durable test runs on SQLite and on PostgreSQL: see _support.py."""

from __future__ import annotations

from ._support import db_url, postgres_url

__all__ = ["db_url", "postgres_url"]
