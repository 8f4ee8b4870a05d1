"""Durable runs: a room kept in a store, run under a lease, continued from wherever it was cut.

The engine knows nothing of storage; this module connects the two. Each completed turn is written with its
events in one transaction (the engine's `on_entry` hook), while the room's other speakers go on streaming;
other events ride along with the next write, or with the run's last one; turns of the process's rooms that
end while another is being written go together in the next transaction (`Store.save_entry`). Token deltas
are not written: the text of a turn in flight is saved at most about a second behind, by one task per
process for all its rooms, and a turn cut by a crash runs again from its start, so the number of writes per
turn does not grow with its tokens. The same task looks for words stored elsewhere, for all the process's
rooms in one query. A lease in the database keeps a room from running twice at once (L14).

The database may fail while a room runs (locked, restarted, unreachable). Every write and the helpers that
renew the lease and take in words stored elsewhere retry with backoff; what still fails pauses the room with
a plain reason rather than dying unseen, and the end of a run is always written, retried as its writes are.
What participants read of such a failure never names the database: the details go to the server log.
A store may say until when a room's calls are worth trying again whatever the count (`retry_horizon`): a
worker's store says until its lease on the room is surely held, so that the room waits for the database
and then goes on, or is let go by the worker and ends without writing anything (`moot.scale.leases`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import ClassVar, TypeVar

from moot import tracing
from moot.engine import Run, RunResult, Steerable, check_intervention
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
from moot.store import DuplicateTurn, RunStore, Store, StoreError
from moot.transcript import USER, Entry

logger = logging.getLogger(__name__)
T = TypeVar("T")

LEASE_TTL = 15.0
# A killed run may have sent events past the last one stored (its deltas are written at most once a second);
# its successor's numbers start this far above, so no watcher ever sees a number twice.
SEQ_GAP_AFTER_CRASH = 100_000
POLL_EVERY = 0.5  # how often this process looks for words stored elsewhere, for all its rooms at once
# A failed database call is tried again this many times, waiting RETRY_FIRST seconds, then twice as long each
# time up to RETRY_LONGEST: about 3 s in all, enough for a busy database or a restarted connection.
STORE_RETRIES = 4
RETRY_FIRST = 0.2
RETRY_LONGEST = 5.0
# Before the store's retry horizon a call is tried again at least this often: soon after the database is back.
RETRY_WHILE_HELD = 1.0
CUT_BY_CRASH = "the process running the room stopped during this turn; it starts over"


class RoomBusy(MootError):
    """The room is running in another process (or another run of this one)."""


class RoomFinished(MootError):
    """The room is completed: there is nothing left to run."""


class DurableRun(Steerable):
    """Runs a stored room to its end, or until paused, keeping every word in the store.

    Iterate it for the same events as a `Run`; `intervene`, `stop` and `pause` steer it. Interventions are
    stored the moment they arrive, from this process or any other, and join the transcript at the next step.
    """

    def __init__(
        self,
        store: RunStore,
        room_id: str,
        *,
        spec: RoomSpec | None = None,
        models: Mapping[str, Model] | None = None,
        lease_ttl: float = LEASE_TTL,
        renew_every: float | None = None,
    ) -> None:
        """`spec` replaces the stored spec for this run only (the service fills stored providers' keys in it).

        The lease lasts `lease_ttl` seconds and is renewed every `renew_every` (a third of it by default).
        """
        self.store = store
        self.room_id = room_id
        self.run: Run | None = None
        self._spec = spec
        self._models = models
        self._ttl = lease_ttl
        self._renew_every = renew_every if renew_every is not None else lease_ttl / 3
        self._owner = Store.new_owner()
        self._fed: set[str] = set()
        self._unsaved: list[Event] = []
        self._saved: set[int] = set()
        self._partial: dict[str, list[str]] = {}  # the text so far of turns in flight
        self._partial_seq: dict[str, int] = {}  # their last delta's seq
        self._partial_saved: dict[str, int] = {}  # the seq each was last written at
        self._pause_reason: str | None = None
        self._trace = tracing.NOT_TRACED
        # What the reader does with a delta, called at once instead of through the run's events while the
        # reader waits for the next one (`Run.deliver`); set before iterating. The text so far is kept first.
        self.deliver: Callable[[TurnDelta], None] | None = None

    @property
    def result(self) -> RunResult | None:
        return self.run.result if self.run is not None else None

    @property
    def taking_words(self) -> bool:
        return self.run is None or self.run.status == "running"

    def start(self) -> None:
        """Nothing to do: a stored run starts when it is first read (it reads the store first)."""

    async def say(self, text: str, *, author: str = USER) -> None:
        await self.intervene(text, author=author)

    async def end(self) -> None:
        await self.stop()

    async def intervene(self, text: str, *, author: str = USER) -> str:
        """Stores a person's words at once, then hands them to the run (B9); returns the stored id."""
        try:
            ref = await self.store.add_intervention(self.room_id, check_intervention(text), author=author)
        except StoreError as exc:
            raise self._plain(exc, "storing words") from exc
        self.feed(ref, author, text)
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

    # ---- the run ----------------------------------------------------------------------------------------

    async def _events(self) -> AsyncIterator[Event]:
        """The stored run's events; a database failure reaches the reader as a plain StoreError."""
        inner = self._run_stored()
        with tracing.room_run(self.room_id) as self._trace:  # the run's span (moot.tracing)
            try:
                try:
                    async for event in inner:
                        yield event
                finally:  # a reader that left early: the run pauses and its end is written now
                    await inner.aclose()
            except StoreError as exc:
                raise self._plain(exc, "running the room") from exc
            result = self.result
            if result is not None:
                self._trace.ended(result.status, result.error, result.rounds_run)

    async def _run_stored(self) -> AsyncGenerator[Event]:
        store, room_id = self.store, self.room_id
        # The start is one transaction: the room read, its lease taken, what the run starts from read, and the
        # room marked running (the text of turns cut mid-stream dropped: they run again from their start, L10).
        record, state = await store.claim(room_id, self._owner, self._ttl, spec=self._spec)
        if record.status == "completed":
            raise RoomFinished(
                f"room {room_id} is completed; see it with `moot show {room_id}` or `moot export {room_id}`"
            )
        if state is None:
            lease = record.lease
            holder = f" (held by {lease.owner})" if lease is not None else ""
            raise RoomBusy(
                f"room {room_id} is already running{holder}; wait for it to end, or pause it where it runs"
            )
        helpers: list[asyncio.Task[None]] = []
        joined = False
        try:
            transcript, partials = state.transcript, state.partials
            start_seq = max([state.last_seq, *(seq for _, seq in partials.values())])
            if record.status == "running":  # it was cut (SIGKILL): numbers it sent unstored stay unused
                start_seq += SEQ_GAP_AFTER_CRASH
            spec = self._spec or record.spec
            stored = {
                entry.turn_id for entry in transcript if entry.is_turn
            }  # a late write may have left one
            self.run = run = Run(
                spec,
                transcript=transcript,
                room_id=room_id,
                models=self._models,
                start_seq=start_seq,
                on_entry=self._save_entry,
                after_start=[_restarted(spec, turn) for turn in sorted(partials) if turn not in stored],
            )
            if (deliver := self.deliver) is not None:

                def kept_and_delivered(delta: TurnDelta) -> None:
                    self._keep_delta(delta)
                    deliver(delta)

                run.deliver = kept_and_delivered
            for pending in state.pending:
                self.feed(pending.id, pending.author, pending.text)
            if self._pause_reason is not None:
                run.pause(self._pause_reason)
            with self._trace.starting(spec.protocol):  # the run's tasks, and so its turns, are its children
                run.start()
            helpers = [
                asyncio.create_task(
                    self._supervised(run, "keeping the lease", lambda: self._keep_lease(run)),
                    name=f"moot-lease-{room_id}",
                ),
            ]
            _InProcess.of(store).join(self)
            joined = True
            events = aiter(run)
            try:
                async for event in events:
                    if isinstance(event, TurnDelta):  # every token: kept in memory, no call to wait on
                        self._keep_delta(event)
                    else:
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
            if joined:
                await _InProcess.of(store).leave(self)
            await self._finish()

    def feed(self, ref: str, author: str, text: str) -> None:
        """Hands stored words to the run, once per stored id whoever hands them (the store, a notice, a call)."""
        if ref in self._fed or self.run is None:
            return
        self._fed.add(ref)
        self.run.intervene(text, author=author, ref=ref)

    async def _save_entry(self, entry: Entry, events: list[Event]) -> None:
        """The engine's hook: the entry, its events and those waiting, in one transaction, retried.

        Then, once no other turn of the step streams, the words other processes stored meanwhile are taken
        in (one read per step, by its last turn), so that words stored before a step ends join at the next
        one, whenever the poller last looked. A save that keeps failing fails the
        room with a plain message (the engine reports it); the events waiting are kept for the end.
        """
        waiting, self._unsaved = self._unsaved, []
        tries = 0

        async def save() -> None:
            nonlocal tries
            tries += 1
            try:
                await self.store.save_entry(self.room_id, entry, [*waiting, *events])
            except DuplicateTurn:
                if tries == 1:
                    raise
                # an earlier try was committed though its answer was lost: the turn and its events are in

        try:
            await self._retrying("saving a turn", save)
        except StoreError as exc:
            self._unsaved[:0] = waiting
            raise self._plain(exc, "saving a turn") from exc
        self._saved.update(e.seq for e in events)
        if self.run is not None and self.run.streaming():
            return  # the step's last turn reads them
        try:
            pending = await self.store.pending_interventions(self.room_id)
        except StoreError as exc:  # the poller looks again, and pauses the room if it keeps failing
            logger.warning("room %s: reading words stored elsewhere failed: %s", self.room_id, exc)
            return
        for words in pending:
            self.feed(words.id, words.author, words.text)

    async def _keep(self, event: Event) -> None:
        """Tracks the text of turns in flight and writes what is not yet written.

        A turn's text so far is written at its first piece, then at most once a second: a resumed run knows
        from it which turns were cut while they streamed, and tells watchers to drop their text.
        """
        if isinstance(event, TurnDelta):
            self._keep_delta(event)
            return
        if event.seq in self._saved:
            self._saved.discard(event.seq)
            return
        if isinstance(event, TurnRestarted | TurnCompleted | TurnFailed):
            self._partial.pop(event.turn_id, None)
            self._partial_seq.pop(event.turn_id, None)
            self._partial_saved.pop(event.turn_id, None)
        self._unsaved.append(event)
        if isinstance(event, RoomPaused | RoomCompleted | RoomFailed):
            try:  # tried again only before the store's horizon: a worker's room ends stored, or let go unseen
                await self._retrying("storing the run's last events", self._flush, retries=0)
            except StoreError as exc:  # kept: the end of the run tries again, with backoff
                logger.warning("room %s: storing the run's last events failed: %s", self.room_id, exc)

    def _keep_delta(self, event: TurnDelta) -> None:
        """A piece of a turn in flight: its text so far grows; the poller writes it (`unsaved_partials`)."""
        turn = event.turn_id
        parts = self._partial.get(turn)
        if parts is None:
            self._partial[turn] = [event.text]
        else:
            parts.append(event.text)
        self._partial_seq[turn] = event.seq

    async def _flush(self) -> None:
        if self._unsaved:
            waiting, self._unsaved = self._unsaved, []
            try:
                await self.store.save_events(self.room_id, waiting)
            except BaseException:
                self._unsaved[:0] = waiting
                raise

    def unsaved_partials(self) -> list[tuple[str, str, str, int]]:
        """(room, turn, text so far, seq) of each turn in flight that streamed since it was last taken here;
        taking them marks them written (a write that fails only costs a resumed run that turn's notice)."""
        out = []
        for turn, seq in self._partial_seq.items():
            if self._partial_saved.get(turn) != seq:
                self._partial_saved[turn] = seq
                out.append((self.room_id, turn, "".join(self._partial[turn]), seq))
        return out

    async def _finish(self) -> None:
        """Writes what is left and the room's status, then lets go of the lease, whatever happened.

        Each write is retried with backoff: a room that ended is never left stored as running. When the
        database stays unreachable the room is left as a crash leaves it, and resumes from its last turn.
        """
        try:
            await self._retrying("storing the run's last events", self._flush)
            result = self.result
            if result is not None and result.status != "running":
                status = result.status if result.status != "idle" else "paused"
                await self._retrying(
                    "storing the room's status",
                    lambda: self.store.update_room(self.room_id, status=status, error=result.error),
                )
            else:  # paused, or it failed before its run began (the start marked it running)
                await self._retrying(
                    "storing the room's status", lambda: self.store.update_room(self.room_id, status="paused")
                )
        finally:
            try:
                await self._retrying(
                    "letting go of the lease",
                    lambda: self.store.release(self.room_id, self._owner),
                    while_held=False,  # the room's end is stored: the lease may as well run out
                )
            except StoreError as exc:  # it runs out by itself within the lease's time
                logger.warning("room %s: letting go of the lease failed: %s", self.room_id, exc)

    async def _keep_lease(self, run: Run) -> None:
        """Renews the lease; pauses the run once the lease is lost, or may run out before a renewal works.

        Times here are this process's own intervals (monotonic); the lease's expiry itself is the database's.
        """
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self._renew_every)
            began = time.monotonic()
            try:
                # by the lease's own time: a worker's store keeps trying itself, until it lets the room go
                held = await self._retrying(
                    "renewing the lease",
                    lambda: self.store.renew(self.room_id, self._owner, self._ttl),
                    until=renewed + self._ttl * 0.75,
                    while_held=False,
                )
            except StoreError as exc:
                logger.error("room %s: the lease could not be renewed, pausing: %s", self.room_id, exc)
                run.pause(
                    f"{exc.public}: this room's lease could not be renewed, so it is paused before another "
                    f"process may take it over; resume it once the database is back"
                )
                return
            if not held:
                run.pause("the lease on this room was lost: another process took it over")
                return
            renewed = began

    async def take_stored_words(self) -> None:
        """Takes in the words stored for this room by other processes (the HTTP service, another terminal).

        Retried; when the database stays unreadable the room pauses rather than go on without them, unless
        the store's horizon is still ahead: then the poller reads them once the database is back (this
        call comes from a worker's control channel, which must not wait for one room that long).
        """
        try:
            pending = await self._retrying(
                "reading words stored elsewhere",
                lambda: self.store.pending_interventions(self.room_id),
                while_held=False,
            )
        except StoreError as exc:
            horizon = self.store.retry_horizon(self.room_id)
            if exc.retryable and horizon is not None and time.monotonic() < horizon:
                logger.warning(
                    "room %s: reading words stored elsewhere failed; the poller reads them later: %s",
                    self.room_id,
                    exc,
                )
                return
            self.words_unreadable(exc)
            return
        for words in pending:
            self.feed(words.id, words.author, words.text)

    def words_unreadable(self, exc: StoreError) -> None:
        """Pauses the room: words sent to it could not be read, and it must not go on without them."""
        logger.error("room %s: words stored elsewhere cannot be read, pausing: %s", self.room_id, exc)
        if self.run is not None:
            self.run.pause(
                f"{exc.public}: words sent to this room could not be read, so it is paused rather "
                f"than go on without them; resume it once the database is back"
            )

    # ---- database failures ----------------------------------------------------------------------------

    async def _supervised(self, run: Run, what: str, helper: Callable[[], Awaitable[None]]) -> None:
        """Runs a helper of the run; should it fail in a way nobody foresaw, the room pauses, and the log says why.

        A helper that died unseen would leave the room running without its lease or without people's words.
        """
        try:
            await helper()
        except Exception:
            logger.exception("room %s: %s failed unexpectedly, pausing the room", self.room_id, what)
            run.pause(f"{what} failed unexpectedly, so the room is paused; resume it to go on")

    async def _retrying(
        self,
        what: str,
        call: Callable[[], Awaitable[T]],
        *,
        until: float | None = None,
        while_held: bool = True,
        retries: int = STORE_RETRIES,
    ) -> T:
        """`_retrying` for this room; `while_held`: before the store's horizon for it, whatever the count."""
        horizon = (lambda: self.store.retry_horizon(self.room_id)) if while_held else None
        return await _retrying(
            f"room {self.room_id}", what, call, until=until, horizon=horizon, retries=retries
        )

    def _plain(self, exc: StoreError, what: str) -> StoreError:
        """The error as participants may read it (no database path, host or password); details to the log."""
        logger.error("room %s: %s failed: %s", self.room_id, what, exc)
        return StoreError(exc.public)


def _restarted(spec: RoomSpec, turn: str) -> TurnRestarted:
    """Tells watchers to drop the text a turn streamed before a crash cut it: it runs again from its start."""
    round_, _, speaker = turn.split(":", 2)
    try:
        model = spec.model_for(spec.agent(speaker)).label
    except (KeyError, ValueError, MootError):  # an agent renamed since: the notice matters, not the label
        model = ""
    return TurnRestarted(
        turn_id=turn,
        round=int(round_.removeprefix("r") or 0),
        speaker=speaker,
        attempt=1,
        reason=CUT_BY_CRASH,
        model=model,
        discard=True,
    )


async def _retrying(
    who: str,
    what: str,
    call: Callable[[], Awaitable[T]],
    *,
    until: float | None = None,
    horizon: Callable[[], float | None] | None = None,
    retries: int = STORE_RETRIES,
) -> T:
    """`call()`, tried again with backoff while it raises a retryable StoreError; the last error is raised.

    At most `retries` times; `until` (monotonic seconds) is when trying again is no longer worth it,
    however many tries are left. `horizon()`, asked at the first failure, may name a later time (a store's
    `retry_horizon`): before it the call is tried again, at least every `RETRY_WHILE_HELD` seconds, whatever
    the count and `until`; past it they decide again. A store that refuses on purpose (not retryable) ends
    it at once.
    """
    delay = RETRY_FIRST
    retry = 0
    held: float | None = None
    while True:
        try:
            return await call()
        except StoreError as exc:
            if not exc.retryable:
                raise
            now = time.monotonic()
            if retry == 0 and horizon is not None:
                held = horizon()  # fixed now: a room whose lease is renewed meanwhile does not wait forever
            if held is not None and now < held:
                delay = min(delay, RETRY_WHILE_HELD)
            elif retry >= retries or (until is not None and now + delay >= until):
                raise
            logger.warning("%s: %s failed, trying again in %.1f s: %s", who, what, delay, exc)
        await asyncio.sleep(delay)
        retry += 1
        delay = min(delay * 2, RETRY_LONGEST)


class _InProcess:
    """What this process does for all the stored rooms it runs on one store, in one task, whatever their number.

    Every `POLL_EVERY` seconds: one query for the words other processes stored for any of these rooms, and
    one transaction for the text so far of every turn in flight that streamed since (at most about a second
    behind, for a resumed run to tell which turns a crash cut). Nothing here is on the path of an event:
    a slow database delays these writes and reads, never a delta.
    """

    _all: ClassVar[dict[int, _InProcess]] = {}

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.runs: dict[str, DurableRun] = {}
        self._task: asyncio.Task[None] | None = None
        self._looking = False  # the watcher is reading or writing, not asleep

    @classmethod
    def of(cls, store: RunStore) -> _InProcess:
        found = cls._all.get(id(store))
        if found is None or found.store is not store:
            found = cls._all[id(store)] = cls(store)
        return found

    def join(self, run: DurableRun) -> None:
        self.runs[run.room_id] = run
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch(), name="moot-rooms-in-process")

    async def leave(self, run: DurableRun) -> None:
        """The run ends: the text so far of its turns in flight is written now (a pause cut them)."""
        if self.runs.get(run.room_id) is run:
            del self.runs[run.room_id]
        await self._write_partials(run.unsaved_partials())
        if not self.runs:
            if self._all.get(id(self.store)) is self:
                del self._all[id(self.store)]
            if self._task is not None:
                if not self._looking:  # asleep; one that is reading or writing ends its round first
                    self._task.cancel()  # (a query cut short loses its connection, in a reference cycle)
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None

    async def _watch(self) -> None:
        while self.runs:
            await asyncio.sleep(POLL_EVERY)
            self._looking = True
            try:
                await self._write_partials(
                    [p for run in list(self.runs.values()) for p in run.unsaved_partials()]
                )
                await self._take_words()
            except Exception:  # a bug: every room here pauses rather than run on without its words
                logger.exception("watching this process's rooms failed unexpectedly, pausing them")
                for run in list(self.runs.values()):
                    if run.run is not None:
                        run.run.pause(
                            "reading words stored elsewhere failed unexpectedly, so the room is "
                            "paused; resume it to go on"
                        )
                return
            finally:
                self._looking = False

    async def _take_words(self) -> None:
        runs = dict(self.runs)
        if not runs:
            return
        store = self.store

        def horizon() -> float | None:  # in a worker: until the last of these rooms' leases surely holds
            return max((h for room in runs if (h := store.retry_horizon(room)) is not None), default=None)

        try:
            pending = await _retrying(
                "this process",
                "reading words stored elsewhere",
                lambda: store.pending_interventions_for(list(runs)),
                horizon=horizon,
            )
        except StoreError as exc:
            for run in runs.values():
                run.words_unreadable(exc)
            return
        for room_id, words in pending.items():
            for each in words:
                if room_id in runs:
                    runs[room_id].feed(each.id, each.author, each.text)

    async def _write_partials(self, partials: list[tuple[str, str, str, int]]) -> None:
        """One transaction for them all; a failure only costs a watcher who joins mid-turn that text."""
        if not partials:
            return
        try:
            await self.store.save_partials(partials)
        except MootError as exc:  # the database failed, or a room was deleted meanwhile
            logger.warning("saving the text so far of %d turns failed: %s", len(partials), exc)
