"""Durable rooms on SQLite (the default) or PostgreSQL: the transcript, its events, leases (L8, L10, L14).

async with Store.from_url() as store:   # MOOT_DATABASE_URL, else a SQLite file in the data dir
    await store.ensure_schema()
    room = await store.create_room(spec)

`RunStore` is the part a room's run needs (rooms, transcript, events, words, leases); the rest of `Store`
keeps what the HTTP service manages: users, providers and agent templates, with their record types here.
"""

from __future__ import annotations

from moot.store._errors import DuplicateTurn, RoomNotFound, StoreError
from moot.store._run import RunStore
from moot.store._store import (
    USER_ROLES,
    AgentTemplateRecord,
    Lease,
    NameTaken,
    ProviderRecord,
    RoomRecord,
    RunState,
    Store,
    StoredIntervention,
    UserRecord,
    UserRole,
)

__all__ = [
    "USER_ROLES",
    "AgentTemplateRecord",
    "DuplicateTurn",
    "Lease",
    "NameTaken",
    "ProviderRecord",
    "RoomNotFound",
    "RoomRecord",
    "RunState",
    "RunStore",
    "Store",
    "StoreError",
    "StoredIntervention",
    "UserRecord",
    "UserRole",
]
