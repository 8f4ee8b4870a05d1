"""The scaled-out mode's tests in real processes, on `moot.testing.cluster`: what only the tests need.

Without redis-server or PostgreSQL the tests skip, or fail where CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest
from redis.asyncio import Redis

from moot.scale.bus import EventPublisher, connect
from moot.scale.worker import Worker
from moot.service.runtime import RoomManager
from moot.settings import Settings
from moot.store import Store
from moot.testing import cluster
from moot.testing.cluster import ADMIN, ClusterUnavailable, Deployment, Watcher, board
from store.fixtures import POSTGRES_URL

__all__ = [
    "ADMIN",
    "ROOMS",
    "Deployment",
    "Watcher",
    "board",
    "deployment",
    "eventually",
    "missing",
    "running_worker",
    "worker_pid",
]

ROOMS = int(os.environ.get("MOOT_TEST_SCALE_ROOMS", "20"))


def missing(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; it is required in CI")
    pytest.skip(reason)


@contextlib.asynccontextmanager
async def deployment(folder: Path, **options: Any) -> AsyncIterator[Deployment]:
    """`moot.testing.cluster.deployment(folder, **options)` on the tests' PostgreSQL; skips (fails under CI)
    without it."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            deployed = await stack.enter_async_context(
                cluster.deployment(folder, admin_url=POSTGRES_URL, **options)
            )
        except ClusterUnavailable as exc:
            missing(str(exc))
        yield deployed


async def worker_pid(store: Store, room_id: str) -> int | None:
    """The pid named by the room's lease: which worker runs it now."""
    lease = await store.lease(room_id)
    if lease is None:
        return None
    pid = lease.owner.split(":")[1]  # host:pid:random[:boot:namespace:started]
    return int(pid) if pid.isdecimal() else None


@contextlib.asynccontextmanager
async def running_worker(store: Store, redis_url: str, takeover: float = 5.0) -> AsyncIterator[Worker]:
    """A `Worker` in this process on `store` and the Redis at `redis_url` (leases of 0.8 × `takeover`),
    ready; stopped afterwards."""
    redis: Redis = connect(redis_url)
    publisher = EventPublisher(redis, maxlen=1000)
    settings = Settings(redis_url=redis_url, takeover_seconds=takeover)
    manager = RoomManager(store, lease_ttl=takeover * 0.8, sink=publisher.sink)
    worker = Worker(settings, store, manager, publisher)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 30)
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)
        await publisher.close()
        await redis.aclose()


async def eventually(what: str, check: Callable[[], Awaitable[bool]], seconds: float = 120) -> None:
    """Until `check()` holds, looking again every 50 ms; fails naming `what` after `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None
