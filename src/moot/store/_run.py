"""What a room's run needs of the store, apart from what the service manages (users, providers, templates).

`DurableRun` and `moot worker` need only these: the room, its transcript and events, the text of turns in
flight, people's words, and the lease. `Store` provides them; so may anything else that keeps rooms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from moot.events import Event
from moot.spec import RoomSpec
from moot.store._store import Lease, RoomRecord, RunState, StoredIntervention
from moot.store.tables import RoomStatus
from moot.transcript import Entry, Transcript


class RunStore(Protocol):
    """The part of the store a run and a worker use; every lease is judged by the database's clock."""

    async def get_room(self, room_id: str) -> RoomRecord: ...

    async def update_room(
        self, room_id: str, *, status: RoomStatus | None = None, error: str | None = None
    ) -> None: ...

    async def load_transcript(self, room_id: str) -> Transcript: ...

    async def save_entry(self, room_id: str, entry: Entry, events: Sequence[Event]) -> None: ...

    async def save_events(self, room_id: str, events: Sequence[Event]) -> None: ...

    async def events_after(self, room_id: str, after: int, limit: int | None = None) -> list[Event]: ...

    async def last_seq(self, room_id: str) -> int: ...

    async def save_partial(self, room_id: str, turn_id: str, text: str, seq: int) -> None: ...

    async def partials(self, room_id: str) -> dict[str, tuple[str, int]]: ...

    async def clear_partials(self, room_id: str) -> None: ...

    async def add_intervention(self, room_id: str, text: str, *, author: str = "user") -> str: ...

    async def pending_interventions(self, room_id: str) -> list[StoredIntervention]: ...

    async def pending_interventions_for(
        self, room_ids: Sequence[str]
    ) -> dict[str, list[StoredIntervention]]: ...

    async def save_partials(self, partials: Sequence[tuple[str, str, str, int]]) -> None: ...

    async def acquire(self, room_id: str, owner: str, ttl: float) -> bool: ...

    async def claim(
        self, room_id: str, owner: str, ttl: float, *, spec: RoomSpec | None = None
    ) -> tuple[RoomRecord, RunState | None]: ...

    async def mark_running(self, room_id: str) -> None: ...

    async def renew(self, room_id: str, owner: str, ttl: float) -> bool: ...

    async def release(self, room_id: str, owner: str) -> None: ...

    async def lease(self, room_id: str) -> Lease | None: ...

    def retry_horizon(self, room_id: str) -> float | None:
        """Until when (this process's monotonic clock) a failed call for the room is worth trying again,
        however many tries it took: the lease is surely held until then, and whoever holds it decides what
        happens by then (a worker lets the room go). None: a fixed number of tries decides."""
        ...

    async def rooms_to_take_over(self, limit: int = 100) -> list[str]: ...
