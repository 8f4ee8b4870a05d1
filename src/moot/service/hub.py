"""A room's live events in one process: the log of the run in flight, and replay for every subscriber.

Decision 0004: the database holds every event but deltas; the hub holds the current run's events, deltas
included, in memory. A subscriber registers before it replays, so nothing can fall between replay and live:
stored events below the log, then the log, then what was published since, each seq sent once and in order.
A subscriber is a bounded buffer that the publisher never waits for: one that falls behind is cut with a
notice to reconnect, so a slow client never slows the room or the other clients.

Deltas are joined into frames (moot.frames) before they are logged or sent, unless they come joined already
(from a worker, in the scaled-out mode): every client gets the same frames, live or replayed, so one that
reconnects ends with exactly the text of one that did not, and the log holds a few objects per second of
speech, not one per token.
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Self

from moot.events import Event, TurnCompleted, TurnDelta, TurnFailed
from moot.frames import Frames
from moot.service.metrics import Metrics
from moot.store import Store

LOG_CAP = 100_000
QUEUE_SIZE = 2048
GRACE_SECONDS = 600.0
STORED_PAGE = 500


class Subscription:
    """One client's events of a room: replay after `after`, then live. Iterate it; close it when done.

    Iteration ends when the run is over and everything was sent (unless `follow`), when the hub is
    disposed, or when this subscriber fell behind: then `reason` says so and `last_seq` is where to resume.
    """

    def __init__(self, hub: RoomHub, after: int, *, follow: bool, limit: int) -> None:
        self.room_id = hub.room_id
        self.last_seq = after
        self.follow = follow
        self.reason: str | None = None
        self._hub: RoomHub | None = hub
        self._store = hub.store
        self._limit = limit
        self._live: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._ended = False
        # The replay plan, fixed at registration: stored events below `_log_start`, then the log's events
        # from `_log_pos` to `_log_end`, read in place (the hub replaces its list, never changes one).
        self._log = hub._log
        self._log_end = len(hub._log)
        self._log_pos = bisect.bisect_right(self._log, after, key=_seq)
        self._log_start = hub._log_start if hub._log else None
        self._stored: deque[Event] = deque()  # one page of stored events at a time
        self._settled = hub.settled
        self._stored_done = self._log_start is not None and after >= self._log_start - 1

    # ---- fed by the hub ---------------------------------------------------------------------------------

    def _push(self, event: Event) -> bool:
        """Takes a live event; False when the buffer is full and this subscriber has been cut."""
        if self._ended:
            return True
        if len(self._live) >= self._limit:
            self.reason = f"this client fell {self._limit} events behind the room; reconnect with the last id it received"
            self._end()
            return False
        self._live.append(event)
        self._wake.set()
        return True

    def _end(self) -> None:
        self._ended = True
        self._wake.set()

    # ---- read by the client -----------------------------------------------------------------------------

    @property
    def lagged(self) -> bool:
        """True when this subscriber was cut for falling behind: reconnect from `last_seq`."""
        return self.reason is not None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        while True:
            event = await self._next_raw()
            if event is None:
                self.close()
                raise StopAsyncIteration
            if event.seq > self.last_seq:  # the three sources overlap at their seams; send each seq once
                self.last_seq = event.seq
                return event

    def ready(self, limit: int = 256) -> list[Event]:
        """The events that are here already, without waiting: what a transport can send in one write.

        A client that keeps up gets one event at a time; one that lags gets them in batches, which costs
        fewer writes exactly when the process is busiest.
        """
        out: list[Event] = []
        while len(out) < limit and (event := self._take_now()) is not None:
            if event.seq > self.last_seq:
                self.last_seq = event.seq
                out.append(event)
        return out

    def _take_now(self) -> Event | None:
        """The next event of the plan that needs no waiting: stored, then logged, then live."""
        if self._stored:
            return self._stored.popleft()
        if not self._stored_done:
            return None
        if self._log_pos < self._log_end:
            self._log_pos += 1
            return self._log[self._log_pos - 1]
        if self._log:
            self._log = []  # replayed: a list the hub has since replaced can be freed
        return self._live.popleft() if self._live else None

    async def _next_raw(self) -> Event | None:
        while True:
            event = self._take_now()
            if event is not None:
                return event
            if not self._stored_done:
                await self._settled.wait()  # a hub fed from elsewhere first catches up with its source
                await self._fetch_stored()
            elif self._ended or self._hub is None:
                return None
            else:
                self._wake.clear()
                await self._wake.wait()

    async def _fetch_stored(self) -> None:
        """One page of stored events below the first event that this subscription gets from memory."""
        page = await self._store.events_after(self.room_id, self.last_seq, limit=STORED_PAGE)
        bound: float
        if self._log_start is not None:
            bound = self._log_start
        else:  # no log at registration: memory holds only what was published since
            bound = self._live[0].seq if self._live else math.inf
        below = [event for event in page if event.seq < bound]
        self._stored.extend(below)
        if len(below) < len(page) or len(page) < STORED_PAGE:
            self._stored_done = True

    def close(self) -> None:
        """Leaves the hub; safe to call more than once."""
        if self._hub is not None:
            self._hub._leave(self)
            self._hub = None
        self._live.clear()
        self._stored.clear()
        self._log = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class RoomHub:
    """The live side of one room in this process: the current run's log and its subscribers.

    The runtime calls `begin()` before a run, `publish()` for each of its events, `close()` after it.
    """

    def __init__(
        self,
        store: Store,
        room_id: str,
        *,
        cap: int = LOG_CAP,
        queue_size: int = QUEUE_SIZE,
        grace: float = GRACE_SECONDS,
        metrics: Metrics | None = None,
        on_idle: Callable[[RoomHub], None] | None = None,
        frame: float = 0.0,
    ) -> None:
        """`frame`: seconds over which a turn's deltas are joined into one frame; 0 sends each as it comes."""
        self.store = store
        self.room_id = room_id
        self.cap = cap
        self.queue_size = queue_size
        self.grace = grace
        self.live = False
        self._metrics = metrics
        self._on_idle = on_idle
        self._log: list[Event] = []
        self._log_start = 0
        self._deltas: dict[str, int] = {}  # deltas in the log, by turn in flight
        self._ended_turns: set[str] = set()
        self._droppable = 0
        self._subscribers: set[Subscription] = set()
        self._expiry: asyncio.TimerHandle | None = None
        self._frames = Frames(self._send, frame)
        self.settled = asyncio.Event()  # cleared while a hub fed from another process catches up
        self.settled.set()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def log_size(self) -> int:
        return len(self._log)

    @property
    def idle(self) -> bool:
        """Nothing to keep: no run, no log, nobody watching."""
        return not self.live and not self._log and not self._subscribers

    # ---- the run's side ---------------------------------------------------------------------------------

    def begin(self) -> None:
        """A run starts: a fresh log (the previous run's events are all in the store by now)."""
        self._cancel_expiry()
        self.live = True
        self._log = []
        self._deltas.clear()
        self._ended_turns.clear()
        self._frames.reset()
        self._droppable = 0

    def publish(self, event: Event) -> None:
        """Logs the event and hands it to every subscriber, deltas joined into frames; never waits."""
        self._frames.publish(event)

    def flush(self) -> None:
        """Sends the frames waiting now."""
        self._frames.flush()

    def _send(self, event: Event) -> None:
        if not self._log:
            self._log_start = event.seq
        self._log.append(event)
        if isinstance(event, TurnDelta):
            self._deltas[event.turn_id] = self._deltas.get(event.turn_id, 0) + 1
        elif isinstance(event, TurnCompleted | TurnFailed):
            self._ended_turns.add(event.turn_id)
            self._droppable += self._deltas.pop(event.turn_id, 0)
        if len(self._log) > self.cap and self._droppable:
            self._compact()
        cut = [sub for sub in self._subscribers if not sub._push(event)]
        for sub in cut:
            self._subscribers.discard(sub)
        if cut and self._metrics is not None:
            self._metrics.stream_clients_cut += len(cut)

    def close(self) -> None:
        """The run ended: subscribers that do not follow end once they have everything; the log stays a while."""
        self.flush()
        self.live = False
        for sub in list(self._subscribers):
            if not sub.follow:
                sub._end()
        self._cancel_expiry()
        self._expiry = asyncio.get_running_loop().call_later(self.grace, self._expire)

    def dispose(self) -> None:
        """The server is going away: every subscription ends after what it holds, the log goes."""
        self.flush()
        self._cancel_expiry()
        self.live = False
        for sub in list(self._subscribers):
            sub._end()
        self._log = []

    def _compact(self) -> None:
        """Past the cap, drops the deltas of ended turns: their `turn_completed` carries the whole text.

        Other events are kept: a few per turn, and the deltas of turns in flight are needed for replay.
        """
        ended = self._ended_turns
        self._log = [e for e in self._log if not (isinstance(e, TurnDelta) and e.turn_id in ended)]
        self._ended_turns = set()
        self._droppable = 0

    def _expire(self) -> None:
        self._expiry = None
        if not self.live:
            self._log = []
            self._check_idle()

    def _cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    # ---- the clients' side ------------------------------------------------------------------------------

    def subscribe(
        self, after: int = 0, *, follow: bool = False, queue_size: int | None = None
    ) -> Subscription:
        """Events with a seq above `after`: stored, then logged, then live; registered before it replays.

        Without `follow` it ends when no run is live and everything was sent; with it, it waits for the
        next run of the room.
        """
        sub = Subscription(self, max(0, after), follow=follow, limit=queue_size or self.queue_size)
        if not self.live and not follow:
            sub._ended = True
        self._subscribers.add(sub)
        if self._metrics is not None:
            self._metrics.stream_clients += 1
        return sub

    def _leave(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.discard(sub)
        if self._metrics is not None:
            self._metrics.stream_clients -= 1
        self._check_idle()

    def _check_idle(self) -> None:
        if self.idle and self._on_idle is not None:
            self._on_idle(self)


def _seq(event: Event) -> int:
    return event.seq
