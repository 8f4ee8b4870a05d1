"""What model servers state about themselves (their context window), remembered per process for a while.

A room asks each model's server for its window before its first turn (`Model.server_window`); rooms that
start together on one server would each send the same request. `ServerAnswers` keeps each answer for
`ttl` seconds (a server restarted with another window is seen again after that), at most `size` of them
(the oldest used goes first), and lets concurrent askers of one key share the one request in flight. A
server that did not answer is not remembered: the next asker asks again.

Keys name the server, the model and the credentials (`credentials_digest`): never a key itself, so a key
shows up in no cache key, log or repr.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

__all__ = ["ANSWERS", "ServerAnswers", "credentials_digest"]

TTL = 300.0  # seconds an answer is kept
SIZE = 1024  # answers kept at most


class _Unanswered:
    """What `fetch` returns for a server that did not answer: given to the askers as None, never kept."""


UNANSWERED: Any = _Unanswered()


def credentials_digest(key: str | None) -> str:
    """A short digest standing for a key in cache keys ("" without one)."""
    if not key:
        return ""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class ServerAnswers:
    """Answers by key, each kept `ttl` seconds on `clock`, `size` at most; `ttl <= 0` keeps and shares none."""

    def __init__(
        self, *, ttl: float = TTL, size: int = SIZE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._kept: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        # One request in flight per key, with the loop it runs on (tests run several loops in turn).
        self._asking: dict[Hashable, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        self.requests = 0  # fetches made: what a benchmark of starts counts

    def clear(self) -> None:
        self._kept.clear()
        self._asking.clear()

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[Any]]) -> Any:
        """The answer for `key`: kept, in flight, or fetched now. `fetch` returns UNANSWERED for no answer
        (then None is returned and nothing kept); what it raises reaches every asker and is not kept either."""
        if self.ttl <= 0:
            self.requests += 1
            answer = await fetch()
            return None if answer is UNANSWERED else answer
        kept = self._kept.get(key)
        if kept is not None:
            if self.clock() < kept[0]:
                self._kept.move_to_end(key)
                return kept[1]
            del self._kept[key]
        loop = asyncio.get_running_loop()
        asking = self._asking.get(key)
        future: asyncio.Future[Any]
        if asking is None or asking[0] is not loop or asking[1].done():
            future = loop.create_task(self._fetch(key, fetch))
            self._asking[key] = (loop, future)
        else:
            future = asking[1]
        # Shielded: an asker that is cancelled (its room paused) leaves the request to the others.
        return await asyncio.shield(future)

    async def _fetch(self, key: Hashable, fetch: Callable[[], Awaitable[Any]]) -> Any:
        self.requests += 1
        try:
            answer = await fetch()
        finally:
            asking = self._asking.get(key)
            if asking is not None and asking[1] is asyncio.current_task():
                del self._asking[key]
        if answer is UNANSWERED:
            return None
        self._kept[key] = (self.clock() + self.ttl, answer)
        self._kept.move_to_end(key)
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)
        return answer


ANSWERS = ServerAnswers()
"""The process's answers: what the adapters' `server_window` asks through."""
