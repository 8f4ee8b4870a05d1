"""A turn's deltas joined into frames: fewer, larger events for stream clients, made once where events begin.

Frames are made in one place per run (the server's hub, or the worker that runs the room), so every client,
live or replayed, on any process, reads the same frames: one that reconnects with the last id it got ends
with exactly the text of one that did not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from moot.events import Event, TurnCompleted, TurnDelta, TurnFailed, TurnRestarted, turn_delta

FRAME_SECONDS = (
    0.05  # what a turn's deltas are joined over by default (MOOT_STREAM_FRAME_MS); 0: one per delta
)


class Frames:
    """Passes a run's events to `send`, in seq order, with each turn's deltas joined over `frame` seconds.

    A turn's first delta goes out at once; later ones wait at most `frame` seconds to go out as one delta with
    their text and the seq of the last. Any other event, and a first delta, sends the frames waiting first.
    """

    def __init__(self, send: Callable[[Event], None], frame: float = FRAME_SECONDS) -> None:
        self.frame = frame
        self._send = send
        self._joining: dict[str, list[TurnDelta]] = {}  # deltas not yet sent, by turn, oldest first
        self._flush_at: asyncio.TimerHandle | None = None
        self._opened: set[str] = set()  # turns whose first delta went out

    def reset(self) -> None:
        """A run starts: nothing waits, no turn is open."""
        self._cancel()
        self._joining = {}
        self._opened.clear()

    def publish(self, event: Event) -> None:
        if isinstance(event, TurnDelta) and self.frame > 0 and event.turn_id in self._opened:
            waiting = self._joining.get(event.turn_id)
            if waiting is None:
                self._joining[event.turn_id] = [event]
            else:
                waiting.append(event)
            if self._flush_at is None:
                self._flush_at = asyncio.get_running_loop().call_later(self.frame, self.flush)
            return
        if self._joining:
            self.flush()
        if isinstance(event, TurnDelta):
            self._opened.add(event.turn_id)
        elif isinstance(event, TurnRestarted | TurnCompleted | TurnFailed):  # a restarted turn opens again
            self._opened.discard(event.turn_id)
        self._send(event)

    def flush(self) -> None:
        """Sends the frames waiting, in seq order: each turn's deltas joined, with the seq of its last."""
        self._cancel()
        joined, self._joining = self._joining, {}
        for parts in sorted(joined.values(), key=lambda p: p[-1].seq):
            self._send(parts[0] if len(parts) == 1 else _joined(parts))

    def _cancel(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None


def _joined(parts: list[TurnDelta]) -> TurnDelta:
    """One delta with the text of `parts` (deltas of one turn, in order) and the seq of the last."""
    last = parts[-1]
    return turn_delta(last.turn_id, last.round, last.speaker, "".join([p.text for p in parts]), seq=last.seq)
