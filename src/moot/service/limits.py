"""How often people may step into rooms: per room and per user, over a sliding window, in this process.

A flood of interventions would fill a room's transcript and every model's context; the limits keep a room
readable and a user from drowning their own (or the server's) rooms. HTTP and WebSocket share one limiter.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from moot.exceptions import MootError
from moot.settings import Settings


class RateLimited(MootError):
    """Too many interventions: `retry_after` is how many seconds until one more is taken."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Limit:
    count: int
    what: str


class InterventionLimiter:
    """Counts interventions in a sliding window, per room and per user; `take()` refuses one over a limit.

    A refused intervention is not counted, so a client that waits `retry_after` seconds gets through.
    """

    def __init__(
        self,
        *,
        per_room: int,
        per_user: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self._limits = {
            "room": _Limit(per_room, "this room takes at most {n} interventions in {w:g} s"),
            "user": _Limit(per_user, "you may send at most {n} interventions in {w:g} s, to all your rooms"),
        }
        self._clock = clock
        self._seen: dict[tuple[str, str], deque[float]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> InterventionLimiter:
        return cls(
            per_room=settings.interventions_per_room,
            per_user=settings.interventions_per_user,
            window=settings.intervention_window,
        )

    def take(self, room_id: str, user_id: int) -> None:
        """Counts one intervention; RateLimited, counting nothing, when the room or the user is at its limit."""
        now = self._clock()
        keys = (("room", room_id), ("user", str(user_id)))
        for key in keys:
            times = self._recent(key, now)
            limit = self._limits[key[0]]
            if len(times) >= limit.count:
                wait = max(1, math.ceil(times[0] + self.window - now))
                message = limit.what.format(n=limit.count, w=self.window)
                raise RateLimited(f"{message}; try again in {wait} s", wait)
        for key in keys:
            self._seen.setdefault(key, deque()).append(now)

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._seen.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._seen[key]  # memory stays bounded by who spoke within the window
        return times
