"""The scaled-out mode's tests in real processes, on `moot.testing.cluster`: what only the tests need.

Without redis-server or PostgreSQL the tests skip, or fail where CI=true.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import pytest

from moot.store import Store
from moot.testing import cluster
from moot.testing.cluster import ADMIN, ClusterUnavailable, Deployment, Watcher
from store.fixtures import POSTGRES_URL

__all__ = ["ADMIN", "ROOMS", "Deployment", "Watcher", "board", "deployment", "missing", "worker_pid"]

ROOMS = int(os.environ.get("MOOT_TEST_SCALE_ROOMS", "20"))


def board(seed: int, tokens_per_second: float) -> dict[str, Any]:
    """A board meeting of a chair and two members over two rounds, on the simulated model."""
    return {
        "task": "Should our 40-person studio move to a four-day week?",
        "protocol": "board",
        "max_rounds": 2,
        "models": {"sim": {"provider": "simulated", "seed": seed, "tokens_per_second": tokens_per_second}},
        "default_model": "sim",
        "agents": [
            {"name": "Chair", "role": "moderator", "persona": "a neutral chair"},
            {"name": "Ana", "persona": "a cautious engineer"},
            {"name": "Ben", "persona": "an ambitious product lead"},
        ],
    }


def missing(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; it is required in CI")
    pytest.skip(reason)


@contextlib.asynccontextmanager
async def deployment(
    folder: Path,
    *,
    apis: int = 2,
    workers: int = 2,
    takeover: float = 5.0,
    metrics: bool = True,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Deployment]:
    """`moot.testing.cluster.deployment` on the tests' PostgreSQL; skips (fails under CI) without it."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            deployed = await stack.enter_async_context(
                cluster.deployment(
                    folder,
                    admin_url=POSTGRES_URL,
                    apis=apis,
                    workers=workers,
                    takeover=takeover,
                    metrics=metrics,
                    env=env,
                )
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
