"""Two API processes and two workers on PostgreSQL and Redis, many board meetings watched over SSE through a
randomly chosen API process; something is killed mid-round, every room still ends whole.

The number of rooms is MOOT_TEST_SCALE_ROOMS (20 by default). Kills are gated on events: the killer waits
until a watched room shows a turn streaming its text, never on time.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from moot.store import Store

from ._cluster import ADMIN, ROOMS, Deployment, Watcher, board, deployment, worker_pid

pytestmark = pytest.mark.slow
SPEED = 40.0  # simulated tokens per second: a room takes about 25 s of model time, a turn a few seconds
TIMEOUT = 240.0


async def _meetings(
    tmp_path: Path,
    disrupt: Callable[[Deployment, Store, list[Watcher]], Awaitable[None]],
    after: Callable[[Deployment], Awaitable[None]] | None = None,
    *,
    deltas_may_be_lost: bool = False,
) -> None:
    """Starts the rooms, watches each through a random API process, runs `disrupt`, then checks the end."""
    async with deployment(tmp_path) as deployed:
        store = Store.from_url(deployed.database_url, local_pids=False)
        try:
            api = deployed.api_base(deployed.apis[0])
            async with httpx.AsyncClient(
                base_url=api,
                headers={"authorization": f"Bearer {ADMIN}"},
                timeout=60,
                limits=httpx.Limits(max_keepalive_connections=0),  # no idle connection the server may close
            ) as http:
                room_ids = []
                for seed in range(ROOMS):
                    answer = await http.post("/rooms", json=board(seed, SPEED))
                    assert answer.status_code == 201, answer.text
                    room_ids.append(answer.json()["id"])
                watchers = [Watcher(room_id, deployed) for room_id in room_ids]
                following = [asyncio.create_task(w.follow()) for w in watchers]
                for room_id in room_ids:
                    answer = await http.post(f"/rooms/{room_id}/run")
                    assert answer.status_code == 202, answer.text
                try:
                    async with asyncio.timeout(TIMEOUT):
                        await disrupt(deployed, store, watchers)
                        await asyncio.gather(*following)
                except TimeoutError:
                    raise AssertionError(
                        f"rooms not done: {[w.room_id for w in watchers if not w.done]}\n{deployed.logs()}"
                    ) from None
                finally:
                    for task in following:
                        task.cancel()
            for watcher in watchers:
                await _check(store, watcher, deltas_may_be_lost=deltas_may_be_lost)
            if after is not None:
                await after(deployed)
        finally:
            await store.close()


async def _check(store: Store, watcher: Watcher, *, deltas_may_be_lost: bool = False) -> None:
    """The room completed, each turn stored once, and the client shows exactly the stored text.

    `deltas_may_be_lost`: deltas live only in memory and in Redis until their turn is stored. When Redis
    loses what it held (a restart), deltas no API process had read yet are gone; when a worker is killed,
    so are those it had not yet handed to Redis, though the turn they belong to may already be stored (the
    killed worker's stored events reach clients when the next run of the room begins). A turn streamed then
    may lack pieces until its `turn_completed`, whose text the client shows (as the page does). What was
    streamed is still the stored text's own pieces, in order, none twice.
    """
    record = await store.get_room(watcher.room_id)
    assert record.status == "completed", (watcher.room_id, record.status, record.error)
    turns = [entry for entry in await store.load_transcript(watcher.room_id) if entry.is_turn]
    ids = [entry.turn_id for entry in turns]
    assert len(ids) == len(set(ids)), f"a turn was stored twice: {ids}"
    assert len(ids) == 8, ids  # opening, 2 x (two speeches and a summary), conclusion: none lost
    stored = [
        (e.seq, e.type, str(getattr(e, "turn_id", ""))) for e in await store.events_after(watcher.room_id, 0)
    ]
    assert sorted(watcher.completions) == sorted(ids), f"missed or repeated a turn: {watcher.trail} {stored}"
    for entry in turns:
        assert watcher.completed[entry.turn_id] == entry.text
        if not deltas_may_be_lost:
            assert watcher.text(entry.turn_id) == entry.text, (
                f"{watcher.room_id} {entry.turn_id}: streamed text"
            )
            continue
        at = 0
        for piece in watcher.texts.get(entry.turn_id, []):
            found = entry.text.find(piece, at)
            assert found >= 0, f"{watcher.room_id} {entry.turn_id}: {piece!r} streamed but not stored there"
            at = found + len(piece)


async def _streaming_room(
    store: Store, watchers: list[Watcher], held_by: Callable[[int | None], bool]
) -> None:
    """Returns once a room whose lease `held_by` accepts is streaming a turn (seen by its client)."""
    while True:
        waiting = [asyncio.create_task(w.streaming.wait()) for w in watchers if not w.done]
        assert waiting, "every room ended before one of those asked for was seen streaming"
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiting:
                task.cancel()
        for watcher in watchers:
            if (
                watcher.streaming.is_set()
                and not watcher.done
                and held_by(await worker_pid(store, watcher.room_id))
            ):
                return
            watcher.streaming.clear()


async def test_scale_worker_killed_mid_round(tmp_path: Path) -> None:
    """SIGKILL to a worker while its rooms stream: another takes them over and each ends whole."""
    killed: list[Any] = []

    async def kill_a_worker(deployed: Deployment, store: Store, watchers: list[Watcher]) -> None:
        pids = {w.proc.pid for w in deployed.workers}
        await _streaming_room(store, watchers, lambda pid: pid in pids)
        counts = dict.fromkeys(pids, 0)
        for watcher in watchers:
            pid = await worker_pid(store, watcher.room_id)
            if pid in counts:
                counts[pid] += 1
        victim = deployed.worker_by_pid(max(counts, key=lambda pid: counts[pid]))
        assert victim is not None
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        killed.append(victim)

    async def survivor_metrics(deployed: Deployment) -> None:
        [survivor] = [w for w in deployed.workers if w.alive]
        async with httpx.AsyncClient(timeout=30) as http:
            metrics = (await http.get(f"http://127.0.0.1:{survivor.port}/metrics")).text
        completed = [
            line for line in metrics.splitlines() if line.startswith('moot_turns_total{outcome="completed"}')
        ]
        assert completed
        assert float(completed[0].split()[-1]) > 0  # the survivor ran turns, and says so on /metrics

    # the victim's last frames of a turn it stored just before it died may never have reached Redis
    await _meetings(tmp_path, kill_a_worker, after=survivor_metrics, deltas_may_be_lost=True)
    assert killed


async def test_scale_api_killed_mid_round(tmp_path: Path) -> None:
    """SIGKILL to an API process: its clients reconnect to the other with Last-Event-ID and miss nothing."""

    async def kill_an_api(deployed: Deployment, store: Store, watchers: list[Watcher]) -> None:
        await _streaming_room(store, watchers, lambda pid: pid is not None)
        victim = deployed.apis[0]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)

    await _meetings(tmp_path, kill_an_api)


async def test_scale_redis_restarted_mid_round(tmp_path: Path) -> None:
    """Redis killed and started again empty: rooms go on, clients end with exactly the stored text.

    Deltas Redis took but lost before an API process read them are gone: the turn's completed text makes up.
    """

    async def restart_redis(deployed: Deployment, store: Store, watchers: list[Watcher]) -> None:
        await _streaming_room(store, watchers, lambda pid: pid is not None)
        deployed.redis.kill()
        await asyncio.to_thread(deployed.redis.start)

    await _meetings(tmp_path, restart_redis, deltas_may_be_lost=True)


async def test_scale_pause_words_and_stop_reach_the_worker_from_any_api_process(tmp_path: Path) -> None:
    """A room runs on a worker; words, a pause, a run and a stop sent through either API process reach it."""
    async with deployment(tmp_path) as deployed:
        store = Store.from_url(deployed.database_url, local_pids=False)
        first, second = (deployed.api_base(api) for api in deployed.apis)
        headers = {"authorization": f"Bearer {ADMIN}"}
        limits = httpx.Limits(max_keepalive_connections=0)
        try:
            async with (
                httpx.AsyncClient(base_url=first, headers=headers, timeout=60, limits=limits) as one,
                httpx.AsyncClient(base_url=second, headers=headers, timeout=60, limits=limits) as two,
            ):
                room_id = (await one.post("/rooms", json=board(5, SPEED))).json()["id"]
                watcher = Watcher(room_id, deployed)
                following = asyncio.create_task(watcher.follow())
                assert (await one.post(f"/rooms/{room_id}/run")).status_code == 202
                async with asyncio.timeout(TIMEOUT):
                    await watcher.streaming.wait()
                words = await two.post(f"/rooms/{room_id}/messages", json={"text": "Mind the budget."})
                assert words.status_code == 202, words.text
                paused = await two.post(f"/rooms/{room_id}/pause")
                assert paused.status_code == 200, paused.text
                assert paused.json()["status"] == "paused"
                assert (await one.post(f"/rooms/{room_id}/run")).status_code == 202
                stopped = await two.post(f"/rooms/{room_id}/stop")
                assert stopped.status_code == 202, stopped.text
                async with asyncio.timeout(TIMEOUT):
                    await following
            record = await store.get_room(room_id)
            assert record.status == "completed"
            entries = await store.load_transcript(room_id)
            assert [e.text for e in entries if e.kind == "intervention"][:1] == ["Mind the budget."]
            assert record.round < 2 or any(
                e.kind == "conclusion" for e in entries
            )  # stopped early, concluded
        finally:
            await store.close()
