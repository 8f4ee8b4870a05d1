"""The scaled-out mode: how many rooms one `moot worker` keeps at the model's pace, and what a second adds.

    python bench/worker_bench.py                          # 1 and 2 workers, rooms 10, 20, 40, 60
    python bench/worker_bench.py --rooms 10 20 --speed 50 --workers 1 2

Real processes, as the tests of the mode start them (`moot.testing.cluster`): a redis-server of its own,
a fresh PostgreSQL database, one `moot serve` and 1 or 2 `moot worker`. Each level starts that many board
meetings of one round (an opening, two members at once, a summary, a conclusion) on the simulated model at
`--speed` tokens per second, each watched by one SSE client in this process. A room keeps pace when its
median turn, measured by its client from `turn_started` to `turn_completed` in the tokens the model reports,
streams at least 90% of what one room alone streams on one worker (measured first, the reference). The
level is held when every room keeps pace. "worker CPU" is the workers' CPU time (from /proc) per delivered
delta. Needs PostgreSQL (MOOT_TEST_POSTGRES_URL) and redis-server.

On a machine with few cores every process competes for the same ones, and a second worker adds little
that can be read. `--worker-cores 0.3` caps each worker at that share of a core (a cgroup of its own, as
root on Linux; the reference room too), so that the rest of the machine serves the load, and 1 against 2
workers reads what a worker adds: the cap makes a worker's share of CPU the same whatever else runs.

    python bench/worker_bench.py --worker-cores 0.3 --rooms 4 6 8 10 12 16 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from moot.testing.cluster import ADMIN, CpuQuota, Deployment, Watcher, board, cpu_seconds, deployment

POSTGRES_URL = os.environ.get("MOOT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


class Pace:
    """Each turn's start and end as its client saw them, and how many tokens it streamed."""

    def __init__(self) -> None:
        self.started: dict[tuple[str, str], float] = {}
        self.rates: dict[str, list[float]] = {}
        self.deltas = 0

    def __call__(self, watcher: Watcher, event: dict[str, Any]) -> None:
        key = (watcher.room_id, str(event.get("turn_id")))
        if event["type"] == "turn_started":
            self.started[key] = time.monotonic()
        elif event["type"] == "turn_delta":
            self.deltas += 1
        elif event["type"] == "turn_completed" and key in self.started:
            took = time.monotonic() - self.started.pop(key)
            tokens = event["usage"]["output_tokens"]
            if took > 0 and tokens:
                self.rates.setdefault(watcher.room_id, []).append(tokens / took)


async def level(
    workers: int, rooms: int, speed: float, reference: float, cores: float | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        async with deployment(
            Path(folder), admin_url=POSTGRES_URL, apis=1, workers=workers, takeover=15, metrics=False
        ) as deployed:
            quotas = [CpuQuota(f"moot-bench-worker{i}", cores) for i in range(workers)] if cores else []
            try:
                for quota, worker in zip(quotas, deployed.workers, strict=False):
                    quota.add(worker.proc.pid)
                result = await _run(deployed, rooms, speed, reference)
                result["spread"] = "/".join(
                    str((deployed.folder / f"{w.name}.log").read_text(errors="replace").count(" runs here"))
                    for w in deployed.workers
                )
                result["throttled_s"] = sum(q.throttled_seconds() for q in quotas)
                return result
            finally:
                for quota in quotas:
                    quota.close()


async def _run(deployed: Deployment, rooms: int, speed: float, reference: float) -> dict[str, Any]:
    pace = Pace()
    api = deployed.api_base(deployed.apis[0])
    async with httpx.AsyncClient(
        base_url=api,
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=120,
        limits=httpx.Limits(max_keepalive_connections=0),
    ) as http:
        ids = [
            (await http.post("/rooms", json=board(seed, speed, rounds=1))).json()["id"]
            for seed in range(rooms)
        ]
        watchers = [Watcher(room_id, deployed) for room_id in ids]
        following = [asyncio.create_task(w.follow(pace)) for w in watchers]
        cpu_before = sum(cpu_seconds(w.proc.pid) for w in deployed.workers)
        began = time.monotonic()
        await asyncio.gather(*(http.post(f"/rooms/{room_id}/run") for room_id in ids))
        await asyncio.gather(*following)
        wall = time.monotonic() - began
        cpu = sum(cpu_seconds(w.proc.pid) for w in deployed.workers) - cpu_before
    medians = {room_id: statistics.median(rates) for room_id, rates in pace.rates.items()}
    kept = sum(1 for rate in medians.values() if rate >= 0.9 * reference)
    return {
        "rooms": rooms,
        "kept": kept,
        "median_rate": statistics.median(medians.values()) if medians else 0.0,
        "slowest_rate": min(medians.values()) if medians else 0.0,
        "wall_s": wall,
        "deltas": pace.deltas,
        "cpu_us_per_delta": 1e6 * cpu / max(1, pace.deltas),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rooms", type=int, nargs="+", default=[10, 20, 40, 60])
    parser.add_argument("--speed", type=float, default=50.0)
    parser.add_argument(
        "--worker-cores", type=float, default=None, help="cap each worker at this much of a core (cgroup)"
    )
    args = parser.parse_args()
    cores = args.worker_cores
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    if cores:
        print(f"each worker capped at {cores} of a core")
    reference = (await level(1, 1, args.speed, 0.0, cores))["median_rate"]
    print(f"reference: one room alone on one worker streams {reference:.1f} tokens/s (median turn)")
    print(
        "| workers | rooms | kept pace | median tok/s | slowest tok/s | wall s | deltas | "
        "worker CPU µs/delta | workers throttled s | rooms each worker ran | load |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    held: dict[int, int] = {}
    for workers in args.workers:
        for rooms in args.rooms:
            result = await level(workers, rooms, args.speed, reference, cores)
            print(
                f"| {workers} | {rooms} | {result['kept']} | {result['median_rate']:.1f} | "
                f"{result['slowest_rate']:.1f} | {result['wall_s']:.1f} | {result['deltas']} | "
                f"{result['cpu_us_per_delta']:.0f} | {result['throttled_s']:.1f} | "
                f"{result['spread']} | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )
            if result["kept"] < rooms:
                break
            held[workers] = rooms
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    for workers, rooms in held.items():
        print(f"{workers} worker(s): held {rooms} rooms, {rooms / workers:.1f} per worker")
    if 1 in held and 2 in held:
        print(f"ratio 2 workers / 1 worker: {held[2] / held[1]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
