"""The cost of keeping every word: the same board meeting run plain and stored, side by side in one run.

    python bench/storage_bench.py                  # simulated model at speed 0; SQLite, PostgreSQL when reachable
    python bench/storage_bench.py --paced          # also a local OpenAI-compatible server at a realistic pace
    python bench/storage_bench.py --repeats 15 --postgres postgresql+asyncpg://postgres@127.0.0.1:5432/test

The meeting: a moderator and 4 members, 3 rounds (an opening, 4 speeches and a summary per round, a
conclusion). Each repeat runs it once with a plain `Run` and once with a `DurableRun` on each database, in
turn, after one warm-up of each. Reported per configuration:

- writes per turn: committed write transactions (`Store.writes`) during the stored run, over its turns;
- plain and stored: the median wall time of the run (room creation excluded), stored over plain, and the
  time storage adds per turn.

At speed 0 the model costs nothing, so the ratio is the storage overhead at its most visible; `--paced`
shows it beside a model that takes its time (where partial texts are also saved, once a second per turn).
PostgreSQL runs in a scratch schema that is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from moot.durable import DurableRun
from moot.engine import Run
from moot.spec import RoomSpec
from moot.store import Store
from moot.testing.servers import FakeLLMServer, default_reply

MEMBERS = ("Ada", "Ben", "Cyd", "Dee")
TASK = "Should we open-source our engine?"
POSTGRES_URL = os.environ.get("MOOT_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
PACED_TOKENS = 150
PACED_DELAY = 0.01  # seconds per token: 100 tokens a second, about what a hosted model streams
PACED_TTFT = 0.3


def room(models: dict[str, Any]) -> RoomSpec:
    return RoomSpec.from_data(
        {
            "task": TASK,
            "protocol": "board",
            "max_rounds": 3,
            "models": models,
            "default_model": "bench",
            "agents": [
                {"name": "Chair", "role": "moderator", "persona": "a neutral chair"},
                *({"name": name, "persona": f"{name}, a board member"} for name in MEMBERS),
            ],
        }
    )


def simulated_room() -> RoomSpec:
    return room({"bench": {"provider": "simulated", "seed": 1, "tokens_per_second": 0}})


def paced_reply(body: dict[str, Any]) -> str:
    """Plain words, and a valid conclusion when the chair is asked for one."""
    if "decision_advice" in json.dumps(body.get("messages", [])[-1:]):
        return json.dumps(
            {
                "summary": default_reply(40),
                "decision_advice": default_reply(20),
                "consensus_points": [default_reply(10)],
                "dissent_points": [default_reply(10)],
            }
        )
    return default_reply(PACED_TOKENS)


@dataclass
class Measure:
    """The runs of one configuration: wall times, and writes and turns of the stored ones."""

    seconds: list[float] = field(default_factory=list)
    writes: list[int] = field(default_factory=list)
    turns: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


async def plain_run(spec: RoomSpec, measure: Measure) -> None:
    run = Run(spec)
    start = time.perf_counter()
    async for _ in run:
        pass
    measure.seconds.append(time.perf_counter() - start)
    assert run.result is not None and run.result.status == "completed", run.result


async def stored_run(spec: RoomSpec, store: Store, measure: Measure) -> None:
    record = await store.create_room(spec)
    durable = DurableRun(store, record.id)
    writes = store.writes
    start = time.perf_counter()
    async for _ in durable:
        pass
    measure.seconds.append(time.perf_counter() - start)
    measure.writes.append(store.writes - writes)
    assert durable.run is not None and durable.result is not None
    assert durable.result.status == "completed", durable.result
    measure.turns.append(sum(1 for entry in durable.run.transcript if entry.is_turn))


async def postgres_store(stack: AsyncExitStack, url: str) -> Store | None:
    """A store in a scratch schema of its own, dropped when the stack closes; None when unreachable."""
    schema = f"moot_bench_{secrets.token_hex(4)}"
    admin = create_async_engine(url, poolclass=NullPool, connect_args={"timeout": 5})

    async def execute(statement: str) -> None:
        async with admin.begin() as conn:
            await conn.execute(text(statement))

    try:
        await execute(f'CREATE SCHEMA "{schema}"')
    except (OSError, DBAPIError) as exc:
        await admin.dispose()
        masked = make_url(url).render_as_string(hide_password=True)
        print(f"PostgreSQL at {masked} not measured: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    stack.push_async_callback(admin.dispose)
    stack.push_async_callback(execute, f'DROP SCHEMA "{schema}" CASCADE')
    store = await stack.enter_async_context(
        Store.from_url(url, connect_args={"server_settings": {"search_path": schema}})
    )
    await store.ensure_schema()
    return store


async def measure_model(
    label: str, spec: RoomSpec, stores: dict[str, Store], repeats: int
) -> list[dict[str, Any]]:
    plain = Measure()
    stored = {name: Measure() for name in stores}
    runs: list[Callable[[], Awaitable[None]]] = [
        partial(plain_run, spec, plain),
        *(partial(stored_run, spec, store, stored[name]) for name, store in stores.items()),
    ]
    for run in runs:  # warm-up: imports, connections, the schema, caches
        await run()
    for measure in (plain, *stored.values()):
        measure.seconds.clear()
        measure.writes.clear()
        measure.turns.clear()
    for _ in range(repeats):
        for run in runs:
            await run()
    rows = []
    for name, measure in stored.items():
        writes, turns = statistics.median(measure.writes), statistics.median(measure.turns)
        rows.append(
            {
                "model": label,
                "database": name,
                "turns": turns,
                "writes": writes,
                "writes_per_turn": writes / turns,
                "plain_ms": plain.median * 1000,
                "stored_ms": measure.median * 1000,
                "ratio": measure.median / plain.median,
                "added_ms_per_turn": (measure.median - plain.median) * 1000 / turns,
            }
        )
    return rows


async def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with AsyncExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="moot-bench-")))
        sqlite = await stack.enter_async_context(Store.from_url(f"sqlite+aiosqlite:///{folder / 'bench.db'}"))
        await sqlite.ensure_schema()
        stores = {"SQLite": sqlite}
        postgres = None if args.no_postgres else await postgres_store(stack, args.postgres)
        if postgres is not None:
            stores["PostgreSQL"] = postgres
        rows += await measure_model("simulated, speed 0", simulated_room(), stores, args.repeats)
        if args.paced:
            server = FakeLLMServer(reply=paced_reply, ttft=PACED_TTFT, token_delay=PACED_DELAY)
            await stack.enter_async_context(server)
            spec = room(
                {
                    "bench": {
                        "provider": "openai",
                        "base_url": f"{server.url}/v1",
                        "api_key": "bench",
                        "model": "fake-model",
                    }
                }
            )
            label = f"local server, {1 / PACED_DELAY:.0f} tok/s"
            rows += await measure_model(label, spec, stores, args.paced_repeats)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=9, help="Measured runs per configuration (median).")
    parser.add_argument(
        "--paced", action="store_true", help="Also run against a local server at a real pace."
    )
    parser.add_argument("--paced-repeats", type=int, default=3, help="Measured runs per paced configuration.")
    parser.add_argument("--postgres", default=POSTGRES_URL, help="PostgreSQL URL (MOOT_BENCH_POSTGRES_URL).")
    parser.add_argument("--no-postgres", action="store_true", help="Measure SQLite only.")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows = asyncio.run(bench(args))
    print(f"`{' '.join(['python bench/storage_bench.py', *sys.argv[1:]])}`")
    print(
        f"\nPython {platform.python_version()}, {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (others share the machine)"
    )
    print(f"board meeting, moderator + {len(MEMBERS)} members, 3 rounds; median of the measured runs\n")
    print(
        "| model | database | turns | writes | writes/turn | plain | stored | stored / plain | added per turn |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['database']} | {r['turns']:g} | {r['writes']:g} | {r['writes_per_turn']:.2f} "
            f"| {r['plain_ms']:.0f} ms | {r['stored_ms']:.0f} ms | {r['ratio']:.2f}× "
            f"| {r['added_ms_per_turn']:.1f} ms |"
        )


if __name__ == "__main__":
    main()
