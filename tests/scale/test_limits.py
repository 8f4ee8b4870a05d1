"""Intervention limits in the scaled-out mode: counted in Redis, so they hold for all API processes together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from moot.scale.bus import connect
from moot.service.limits import RateLimited, SharedInterventionLimiter
from moot.testing.cluster import ADMIN, RedisServer

from ._cluster import board, deployment

HOUR = 3600.0


@pytest.fixture
async def clients(redis_server: RedisServer) -> AsyncIterator[tuple[Redis, Redis]]:
    """Two clients of one Redis, as two API processes have."""
    first, second = connect(redis_server.url), connect(redis_server.url)
    yield first, second
    await first.aclose()
    await second.aclose()


async def test_two_limiters_on_one_redis_allow_a_rooms_limit_once_in_all(
    clients: tuple[Redis, Redis],
) -> None:
    one, other = (SharedInterventionLimiter(c, per_room=3, per_user=100, window=HOUR) for c in clients)
    taken = 0
    refused: list[RateLimited] = []
    for n in range(8):  # the two processes take turns, as a load balancer spreads requests
        try:
            await (one if n % 2 == 0 else other).take("room1", n)
            taken += 1
        except RateLimited as exc:
            refused.append(exc)
    assert taken == 3
    assert len(refused) == 5
    assert "this room takes at most 3 interventions in 3600 s" in str(refused[0])
    assert 0 < refused[0].retry_after <= 3600
    await one.take("room2", 1)  # another room has its own count


async def test_a_users_limit_holds_across_rooms_and_processes_and_a_refusal_counts_nothing(
    clients: tuple[Redis, Redis],
) -> None:
    one, other = (SharedInterventionLimiter(c, per_room=2, per_user=2, window=HOUR) for c in clients)
    await one.take("room1", 7)
    await other.take("room2", 7)
    with pytest.raises(RateLimited, match="you may send at most 2 interventions"):
        await one.take("room3", 7)
    # refused by the user's limit, room3 counted nothing: two other people still get in there
    await other.take("room3", 8)
    await one.take("room3", 9)
    with pytest.raises(RateLimited, match="this room takes at most 2"):
        await other.take("room3", 10)


async def test_with_redis_away_each_process_counts_on_its_own(redis_server: RedisServer) -> None:
    client = connect(redis_server.url)
    try:
        limiter = SharedInterventionLimiter(client, per_room=2, per_user=100, window=HOUR)
        redis_server.kill()
        await limiter.take("room1", 1)
        await limiter.take("room1", 2)
        with pytest.raises(RateLimited, match="this room takes at most 2"):
            await limiter.take("room1", 3)
    finally:
        await client.aclose()


async def test_two_api_processes_share_a_rooms_limit(tmp_path: Path) -> None:
    async with deployment(
        tmp_path,
        apis=2,
        workers=0,
        env={"MOOT_INTERVENTIONS_PER_ROOM": "3", "MOOT_INTERVENTION_WINDOW": "3600"},
    ) as deployed:
        headers = {"authorization": f"Bearer {ADMIN}"}
        bases = [deployed.api_base(api) for api in deployed.apis]
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            created = await http.post(f"{bases[0]}/rooms", json=board(1, 1000))
            assert created.status_code == 201, created.text
            room_id = created.json()["id"]
            statuses = [
                (
                    await http.post(f"{bases[n % 2]}/rooms/{room_id}/messages", json={"text": f"point {n}"})
                ).status_code
                for n in range(4)
            ]
    # counted per process, the fourth (the second on the second process) would have been taken
    assert statuses == [202, 202, 202, 429]
