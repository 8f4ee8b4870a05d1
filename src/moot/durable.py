"""Durable runs: a room kept in a store, run under a lease, continued from wherever it was cut.

The engine knows nothing of storage; this module connects the two. Each completed turn is written with its
events in one transaction (the engine's `on_entry` hook); other events ride along with the next write, or
with the run's last one. Token deltas are not written: the text of a turn in flight is saved at most about a
second behind, and a turn cut by a crash runs again from its start, so the number of writes per turn does not
grow with its tokens. A lease in the database keeps a room from running twice at once (L14).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping

from moot.engine import Run, RunResult, check_intervention
from moot.events import (
    Event,
    RoomCompleted,
    RoomFailed,
    RoomPaused,
    TurnCompleted,
    TurnDelta,
    TurnFailed,
    TurnRestarted,
)
from moot.exceptions import MootError
from moot.models import Model
from moot.spec import RoomSpec
from moot.store import Store
from moot.transcript import USER, Entry

LEASE_TTL = 15.0
PARTIAL_EVERY = 1.0
# A killed run may have sent events past the last one stored (its deltas are written at most once a second);
# its successor's numbers start this far above, so no watcher ever sees a number twice.
SEQ_GAP_AFTER_CRASH = 100_000
POLL_EVERY = 0.5


class RoomBusy(MootError):
    """The room is running in another process (or another run of this one)."""


class RoomFinished(MootError):
    """The room is completed: there is nothing left to run."""


class DurableRun:
    """Runs a stored room to its end, or until paused, keeping every word in the store.

    Iterate it for the same events as a `Run`; `intervene`, `stop` and `pause` steer it. Interventions are
    stored the moment they arrive, from this process or any other, and join the transcript at the next step.
    """

    def __init__(
        self,
        store: Store,
        room_id: str,
        *,
        spec: RoomSpec | None = None,
        models: Mapping[str, Model] | None = None,
        lease_ttl: float = LEASE_TTL,
    ) -> None:
        """`spec` replaces the stored spec for this run only (the service fills stored providers' keys in it)."""
        self.store = store
        self.room_id = room_id
        self.run: Run | None = None
        self._spec = spec
        self._models = models
        self._ttl = lease_ttl
        self._owner = Store.new_owner()
        self._fed: set[str] = set()
        self._unsaved: list[Event] = []
        self._saved: set[int] = set()
        self._partial: dict[str, list[str]] = {}
        self._partial_saved_at: dict[str, float] = {}
        self._pause_reason: str | None = None
        self._partial_saving: asyncio.Task[None] | None = None

    @property
    def result(self) -> RunResult | None:
        return self.run.result if self.run is not None else None

    async def intervene(self, text: str, *, author: str = USER) -> str:
        """Stores a person's words at once, then hands them to the run (B9); returns the stored id."""
        ref = await self.store.add_intervention(self.room_id, check_intervention(text), author=author)
        self._feed(ref, author, text)
        return ref

    async def stop(self) -> None:
        """Ends the discussion early with a conclusion; stored like any stop command."""
        await self.intervene("/stop")

    def pause(self, reason: str = "paused") -> None:
        if self.run is not None:
            self.run.pause(reason)
        else:
            self._pause_reason = reason

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def wait(self) -> RunResult:
        async for _ in self:
            pass
        assert self.result is not None
        return self.result

    # ---- the run ----------------------------------------------------------------------------------------

    async def _events(self) -> AsyncIterator[Event]:
        store, room_id = self.store, self.room_id
        record = await store.get_room(room_id)
        if record.status == "completed":
            raise RoomFinished(
                f"room {room_id} is completed; see it with `moot show {room_id}` or `moot export {room_id}`"
            )
        if not await store.acquire(room_id, self._owner, self._ttl):
            lease = await store.lease(room_id)
            holder = f" (held by {lease.owner})" if lease is not None else ""
            raise RoomBusy(
                f"room {room_id} is already running{holder}; wait for it to end, or pause it where it runs"
            )
        helpers: list[asyncio.Task[None]] = []
        try:
            transcript = await store.load_transcript(room_id)
            partials = await store.partials(room_id)
            start_seq = max([await store.last_seq(room_id), *(seq for _, seq in partials.values())])
            if record.status == "running":  # it was cut (SIGKILL): numbers it sent unstored stay unused
                start_seq += SEQ_GAP_AFTER_CRASH
            await store.clear_partials(room_id)  # a turn cut mid-stream runs again from its start (L10)
            self.run = run = Run(
                self._spec or record.spec,
                transcript=transcript,
                room_id=room_id,
                models=self._models,
                start_seq=start_seq,
                on_entry=self._save_entry,
            )
            for pending in await store.pending_interventions(room_id):
                self._feed(pending.id, pending.author, pending.text)
            await store.update_room(room_id, status="running")
            if self._pause_reason is not None:
                run.pause(self._pause_reason)
            run.start()
            helpers = [
                asyncio.create_task(self._keep_lease(run), name=f"moot-lease-{room_id}"),
                asyncio.create_task(self._poll_interventions(), name=f"moot-interventions-{room_id}"),
            ]
            events = aiter(run)
            try:
                async for event in events:
                    await self._keep(event)
                    yield event
            finally:
                await events.aclose()  # a reader that left early pauses the run before its status is written
        finally:
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._finish()

    def _feed(self, ref: str, author: str, text: str) -> None:
        if ref in self._fed or self.run is None:
            return
        self._fed.add(ref)
        self.run.intervene(text, author=author, ref=ref)

    async def _save_entry(self, entry: Entry, events: list[Event]) -> None:
        """The engine's hook: the entry, its events and those waiting, in one transaction."""
        waiting, self._unsaved = self._unsaved, []
        await self.store.save_entry(self.room_id, entry, [*waiting, *events])
        self._saved.update(e.seq for e in events)

    async def _keep(self, event: Event) -> None:
        """Tracks the text of turns in flight and writes what is not yet written, at most once a second."""
        if isinstance(event, TurnDelta):
            parts = self._partial.setdefault(event.turn_id, [])
            parts.append(event.text)
            now = time.monotonic()
            saving = self._partial_saving is not None and not self._partial_saving.done()
            if not saving and now - self._partial_saved_at.setdefault(event.turn_id, now) >= PARTIAL_EVERY:
                self._partial_saved_at[event.turn_id] = now
                self._partial_saving = asyncio.create_task(  # the stream never waits for this write
                    self.store.save_partial(self.room_id, event.turn_id, "".join(parts), event.seq)
                )
            return
        if event.seq in self._saved:
            self._saved.discard(event.seq)
            return
        if isinstance(event, TurnRestarted):
            self._partial.pop(event.turn_id, None)
        elif isinstance(event, TurnCompleted | TurnFailed):
            self._partial.pop(event.turn_id, None)
            self._partial_saved_at.pop(event.turn_id, None)
        self._unsaved.append(event)
        if isinstance(event, RoomPaused | RoomCompleted | RoomFailed):
            await self._flush()

    async def _flush(self) -> None:
        if self._unsaved:
            waiting, self._unsaved = self._unsaved, []
            await self.store.save_events(self.room_id, waiting)

    async def _finish(self) -> None:
        """Writes what is left and the room's status, then lets go of the lease, whatever happened."""
        try:
            if self._partial_saving is not None:
                with contextlib.suppress(Exception):
                    await self._partial_saving
            await self._flush()
            result = self.result
            if result is not None and result.status != "running":
                status = result.status if result.status != "idle" else "paused"
                await self.store.update_room(self.room_id, status=status, error=result.error)
            elif self.run is not None:
                await self.store.update_room(self.room_id, status="paused")
        finally:
            await self.store.release(self.room_id, self._owner)

    async def _keep_lease(self, run: Run) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            if not await self.store.renew(self.room_id, self._owner, self._ttl):
                run.pause("the lease on this room was lost: another process took it over")
                return

    async def _poll_interventions(self) -> None:
        """Takes in words stored by other processes (the HTTP service, another terminal)."""
        while True:
            await asyncio.sleep(POLL_EVERY)
            for pending in await self.store.pending_interventions(self.room_id):
                self._feed(pending.id, pending.author, pending.text)
