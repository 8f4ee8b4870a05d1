"""Rooms, runs and readers shared by the live-side tests (hub, runtime, streams).

`store_fixture` is the `store` fixture of tests/store on this package's conftest (every test runs on SQLite
and PostgreSQL): import it into a test module and take `store`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from moot.durable import DurableRun
from moot.events import Event
from moot.service.hub import RoomHub, Subscription
from moot.spec import RoomSpec
from moot.store import Store


@pytest.fixture(name="store")
async def store_fixture(store_factory: Callable[[], Store]) -> Store:
    """A migrated Store on the test's database."""
    store = store_factory()
    await store.ensure_schema()
    return store


# A board meeting: the moderator opens, two members speak at once in each of two rounds, the moderator sums
# up each round and concludes.
BOARD: dict[str, Any] = {
    "task": "Should our 40-person studio move to a four-day week?",
    "protocol": "board",
    "max_rounds": 2,
    "models": {"sim": {"provider": "simulated", "seed": 7, "tokens_per_second": 0}},
    "default_model": "sim",
    "agents": [
        {"name": "Chair", "role": "moderator", "persona": "a neutral chair"},
        {"name": "Ana", "persona": "a cautious engineer"},
        {"name": "Ben", "persona": "an ambitious product lead"},
    ],
}


def board(speed: float = 0) -> RoomSpec:
    """The board meeting at `speed` simulated tokens per second (0: at once)."""
    return RoomSpec.from_data(
        {**BOARD, "models": {"sim": {**BOARD["models"]["sim"], "tokens_per_second": speed}}}
    )


async def publish_run(hub: RoomHub, durable: DurableRun, *, pause_after: int | None = None) -> list[Event]:
    """Runs a stored room into the hub as the runtime does; pauses it after `pause_after` events."""
    hub.begin()
    events: list[Event] = []
    try:
        async for event in durable:
            events.append(event)
            hub.publish(event)
            if pause_after is not None and len(events) == pause_after:
                durable.pause("test")
    finally:
        hub.close()
    return events


async def collect(sub: Subscription) -> list[Event]:
    """Every event the subscription yields until it ends (within 30 s)."""
    async with sub, asyncio.timeout(30):
        return [event async for event in sub]


def same_events(events: Iterable[Event]) -> list[tuple[int, str, str]]:
    """(seq, type, text) of each event: what two readers of one stream must agree on."""
    return [(e.seq, e.type, str(getattr(e, "text", ""))) for e in events]
