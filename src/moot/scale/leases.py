"""The worker's store: it knows until when each room's lease is surely held, and writes nothing more for a
room it let go.

A worker that loses the database for longer than a lease lasts can no longer renew its rooms' leases; once
they run out, another worker may take the rooms over as soon as the database is back. So the worker lets
such a room go before its lease can run out (`Worker` decides when, from `held_until`): from then on this
store refuses every write for the room, as if the database were gone for it alone, and the run ends
without touching the room: it stays stored as running, with a lease that runs out, and is taken over.

Renewing a lease here keeps trying, with backoff, until it works or the worker lets the room go: in a worker
the worker's own clock on the lease decides, not how many tries one renewal had. The run's other calls for a
room do the same (`retry_horizon`): a database that is away for less than the worker's margin only holds
the room up, and one away for longer gets the room let go before any of them gives up and says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from moot.events import Event
from moot.scrub import scrub
from moot.spec import RoomSpec
from moot.store import RoomRecord, RunState, Store, StoreError
from moot.store.tables import RoomStatus
from moot.transcript import Entry

logger = logging.getLogger(__name__)

RENEW_RETRY_FIRST = 0.2
RENEW_RETRY_LONGEST = 2.0


class LetGo(StoreError):
    """The worker let go of this room: it writes nothing more for it; another worker takes it over."""

    retryable = False  # refused on purpose: the run ends at once rather than try again

    def __init__(self, room_id: str) -> None:
        super().__init__(
            f"room {room_id}: this worker let go of the room (its lease could not be renewed in time); "
            "it writes nothing more for it",
            public="this worker lost the database; another worker takes the room over",
        )


class WorkerStore(Store):
    """A `Store` that keeps, per room, until when (this process's monotonic clock) its lease is surely held."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held_until: dict[str, float] = {}
        self._let_go: set[str] = set()

    def held_until(self, room_id: str) -> float | None:
        """When the lease last taken or renewed here runs out at the earliest: the start of that call plus
        its ttl (the database's expiry is later). None when this process holds none for the room."""
        return self._held_until.get(room_id)

    def retry_horizon(self, room_id: str) -> float | None:
        """A failed call for the room is tried again until its lease may run out: the worker lets the room go
        before then (a quarter of a lease before), so the call either works or is refused as `LetGo`."""
        return self._held_until.get(room_id)

    def let_go(self, room_id: str) -> None:
        """Refuses every write for the room from now on, until this process acquires its lease again."""
        self._let_go.add(room_id)
        self._held_until.pop(room_id, None)

    def is_let_go(self, room_id: str) -> bool:
        return room_id in self._let_go

    def _refusal(self, room_id: str) -> StoreError | None:
        return LetGo(room_id) if room_id in self._let_go else None

    def _check(self, room_id: str) -> None:
        if (refusal := self._refusal(room_id)) is not None:
            raise refusal

    # ---- leases ---------------------------------------------------------------------------------------

    async def acquire(self, room_id: str, owner: str, ttl: float) -> bool:
        began = time.monotonic()
        taken = await super().acquire(room_id, owner, ttl)
        if taken:
            self._taken(room_id, began + ttl)
        return taken

    async def claim(
        self, room_id: str, owner: str, ttl: float, *, spec: RoomSpec | None = None
    ) -> tuple[RoomRecord, RunState | None]:
        """A run's start (`Store.claim`): the lease it takes is accounted for as `acquire`'s is."""
        began = time.monotonic()
        record, state = await super().claim(room_id, owner, ttl, spec=spec)
        if state is not None:
            self._taken(room_id, began + ttl)
        return record, state

    def _taken(self, room_id: str, held_until: float) -> None:
        """A new run of the room holds its lease: the one let go has ended (a room runs once per process)."""
        self._let_go.discard(room_id)
        self._held_until[room_id] = held_until

    async def renew(self, room_id: str, owner: str, ttl: float) -> bool:
        """Tries until it works: True, or False once the lease is someone else's or the room was let go."""
        delay = RENEW_RETRY_FIRST
        while room_id not in self._let_go:
            began = time.monotonic()
            try:
                held = await super().renew(room_id, owner, ttl)
            except StoreError as exc:
                logger.warning(
                    "room %s: renewing the lease failed, trying again in %.1f s: %s",
                    room_id,
                    delay,
                    scrub(str(exc)),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RENEW_RETRY_LONGEST)
                continue
            if room_id in self._let_go:
                return False
            if held:
                self._held_until[room_id] = began + ttl
            else:  # another process holds it now: nothing more may be written for the room from here
                self.let_go(room_id)
            return held
        return False

    async def release(self, room_id: str, owner: str) -> None:
        self._check(room_id)
        await super().release(room_id, owner)
        self._held_until.pop(room_id, None)

    # ---- writes for a room ----------------------------------------------------------------------------

    async def mark_running(self, room_id: str) -> None:
        self._check(room_id)
        await super().mark_running(room_id)

    async def update_room(
        self, room_id: str, *, status: RoomStatus | None = None, error: str | None = None
    ) -> None:
        self._check(room_id)
        await super().update_room(room_id, status=status, error=error)

    async def save_entry(self, room_id: str, entry: Entry, events: Sequence[Event]) -> None:
        self._check(room_id)
        await super().save_entry(room_id, entry, events)

    async def save_events(self, room_id: str, events: Sequence[Event]) -> None:
        self._check(room_id)
        await super().save_events(room_id, events)

    async def save_partial(self, room_id: str, turn_id: str, text: str, seq: int) -> None:
        self._check(room_id)
        await super().save_partial(room_id, turn_id, text, seq)

    async def save_partials(self, partials: Sequence[tuple[str, str, str, int]]) -> None:
        """The rooms let go are left out: one transaction serves every room of the process."""
        kept = [p for p in partials if p[0] not in self._let_go]
        if kept:
            await super().save_partials(kept)

    async def clear_partials(self, room_id: str) -> None:
        self._check(room_id)
        await super().clear_partials(room_id)
