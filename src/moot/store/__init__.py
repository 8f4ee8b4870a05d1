"""Durable rooms on SQLite (the default) or PostgreSQL: the transcript, its events, leases (L8, L10, L14).

async with Store.from_url() as store:   # MOOT_DATABASE_URL, else a SQLite file in the data dir
    await store.ensure_schema()
    room = await store.create_room(spec)
"""

from __future__ import annotations

from moot.store._errors import DuplicateTurn, RoomNotFound, StoreError
from moot.store._store import Lease, RoomRecord, Store, StoredIntervention

__all__ = [
    "DuplicateTurn",
    "Lease",
    "RoomNotFound",
    "RoomRecord",
    "Store",
    "StoreError",
    "StoredIntervention",
]
