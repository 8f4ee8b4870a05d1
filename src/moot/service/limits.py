"""How often people may step into rooms: per room and per user, over a sliding window.

A flood of interventions would fill a room's transcript and every model's context; the limits keep a room
readable and a user from drowning their own (or the server's) rooms. HTTP and WebSocket share one limiter.

One `moot serve` counts in its own memory (`InterventionLimiter`). In the scaled-out mode every API
process counts in Redis (`SharedInterventionLimiter`), so the limits hold for the deployment as a whole,
however many processes the load balancer spreads people over. `limiter_for` picks the one that fits.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from moot.exceptions import MootError
from moot.settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)


class RateLimited(MootError):
    """Too many interventions: `retry_after` is how many seconds until one more is taken."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Limit:
    count: int
    what: str


def _limits(per_room: int, per_user: int) -> dict[str, _Limit]:
    return {
        "room": _Limit(per_room, "this room takes at most {n} interventions in {w:g} s"),
        "user": _Limit(per_user, "you may send at most {n} interventions in {w:g} s, to all your rooms"),
    }


def _refusal(limit: _Limit, window: float, wait: float) -> RateLimited:
    seconds = max(1, math.ceil(wait))
    message = limit.what.format(n=limit.count, w=window)
    return RateLimited(f"{message}; try again in {seconds} s", seconds)


class InterventionLimiter:
    """Counts interventions in a sliding window, per room and per user, in this process's memory.

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
        self._limits = _limits(per_room, per_user)
        self._clock = clock
        self._seen: dict[tuple[str, str], deque[float]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> InterventionLimiter:
        return cls(
            per_room=settings.interventions_per_room,
            per_user=settings.interventions_per_user,
            window=settings.intervention_window,
        )

    async def take(self, room_id: str, user_id: int) -> None:
        """Counts one intervention; RateLimited, counting nothing, when the room or the user is at its limit."""
        self.take_now(room_id, user_id)

    def take_now(self, room_id: str, user_id: int) -> None:
        """`take`, for callers without an event loop."""
        now = self._clock()
        keys = (("room", room_id), ("user", str(user_id)))
        for key in keys:
            times = self._recent(key, now)
            limit = self._limits[key[0]]
            if len(times) >= limit.count:
                raise _refusal(limit, self.window, times[0] + self.window - now)
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


# A sorted set per room and per user: one member per intervention, scored by Redis's clock in ms. Both
# are checked and, only when both have room, both counted: in one script, so two processes never both
# take the last place, and a refusal counts nothing. Returns {0, 0}, or {which limit (1 or 2), ms to wait}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
end
for i = 1, 2 do
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[1 + i]) then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    return {i, tonumber(oldest[2]) + window - now}
  end
end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[i], window)
end
return {0, 0}
"""


class SharedInterventionLimiter(InterventionLimiter):
    """The same limits counted in Redis, shared by every API process of the scaled-out mode.

    The window slides by Redis's clock, so processes whose clocks differ agree. While Redis cannot be
    reached, each process counts in its own memory (the limits then hold per process) and says so in its log.
    """

    def __init__(self, redis: Redis, *, per_room: int, per_user: int, window: float) -> None:
        super().__init__(per_room=per_room, per_user=per_user, window=window)
        self.redis = redis
        self._window_ms = max(1, round(window * 1000))
        self._script = redis.register_script(_TAKE)

    @classmethod
    def shared(cls, settings: Settings, redis: Redis) -> SharedInterventionLimiter:
        return cls(
            redis,
            per_room=settings.interventions_per_room,
            per_user=settings.interventions_per_user,
            window=settings.intervention_window,
        )

    async def take(self, room_id: str, user_id: int) -> None:
        """Counts one intervention; RateLimited, counting nothing, when the room or the user is at its limit."""
        from redis.exceptions import RedisError

        keys = [f"moot:limit:room:{room_id}", f"moot:limit:user:{user_id}"]
        args: list[str | int] = [
            self._window_ms,
            self._limits["room"].count,
            self._limits["user"].count,
            secrets.token_hex(8),
        ]
        try:
            which, wait_ms = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            logger.warning("redis: interventions are counted in this process while it is away: %s", exc)
            self.take_now(room_id, user_id)
            return
        if which:
            limit = self._limits["room" if int(which) == 1 else "user"]
            raise _refusal(limit, self.window, int(wait_ms) / 1000)


def limiter_for(settings: Settings, redis: Redis | None = None) -> InterventionLimiter:
    """The shared limiter when `redis` is given (the scaled-out mode's client), else this process's own."""
    if redis is None:
        return InterventionLimiter.from_settings(settings)
    return SharedInterventionLimiter.shared(settings, redis)
