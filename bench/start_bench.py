"""What a room's start costs `moot serve`: CPU per start and store round trips per start, rooms started together.

    python bench/start_bench.py                        # 40 board meetings on PostgreSQL, window cache on
    python bench/start_bench.py --rooms 80 --no-cache  # every start asks the model server itself
    python bench/start_bench.py --db sqlite
    PYTHONPATH=/path/to/older/src python bench/start_bench.py   # the same against another version

Each room is a board meeting whose three agents speak through three models on the fake OpenAI-compatible
server (moot.testing.servers, in a process of its own whose counts this one reads). `RoomManager.run` is
called for every room at once, as a burst of `POST .../run` requests would; a start ends when the room's
first model request reaches the server (the chair's opening; replies are held, so no room goes further).
Measured over that burst, in this process only:

- CPU per start: this process's CPU time (user + system) over the burst, divided by the rooms, and the
  system part of it (on one host, most of it is the loopback sends to the database and the model server);
- store round trips per start: statements sent to the database (SQLAlchemy's `before_cursor_execute`),
  and connection checkouts (each one costs a pre-ping, a BEGIN and a COMMIT or ROLLBACK besides);
- `GET /v1/models` requests per start, as the fake server counted them.

Each figure is the median of the waves after the first (which warms imports and connections up). The
process's watcher of stored words (`POLL_EVERY`) is slowed so that the start's statements alone count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
MODELS = ("chair-model", "ana-model", "ben-model")

# The fake server in its own process: prints its URL, then answers "count" lines with its counts.
_SERVER = """
import asyncio, json, sys
from moot.testing.servers import FakeLLMServer

async def main() -> None:
    server = FakeLLMServer(ttft=3600, models=sys.argv[1].split(","), context_window=8192,
                           announce_window=True, record=True)
    async with server:
        print(server.url, flush=True)
        loop = asyncio.get_running_loop()
        def chats() -> int:
            return sum(1 for r in server.requests if r.path.endswith("/chat/completions"))

        while (line := await loop.run_in_executor(None, sys.stdin.readline)).startswith(("count", "wait")):
            if line.startswith("wait"):  # "wait N": answers once N chat requests have come in all told
                while chats() < int(line.split()[1]):
                    await asyncio.sleep(0.002)
            asked = getattr(server, "models_asked", None)
            print(json.dumps({"chats": chats(), "models": asked}), flush=True)
        for task in list(server._connections):
            task.cancel()

asyncio.run(main())
"""


class FakeServer:
    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")  # this tree's fake server
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, ",".join(MODELS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def counts(self, wait_for_chats: int | None = None) -> dict[str, Any]:
        """The server's counts; with `wait_for_chats`, once that many chat requests came in all told."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("count\n" if wait_for_chats is None else f"wait {wait_for_chats}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def room(url: str, index: int) -> dict[str, Any]:
    """A board meeting of a chair and two members, each on a model of its own on the fake server."""
    models = {
        name: {"provider": "openai", "model": name, "base_url": f"{url}/v1", "api_key": "bench-key"}
        for name in MODELS
    }
    return {
        "task": f"Room {index}: should our 40-person studio move to a four-day week?",
        "protocol": "board",
        "max_rounds": 2,
        "models": models,
        "agents": [
            {"name": "Chair", "role": "moderator", "persona": "a neutral chair", "model": MODELS[0]},
            {"name": "Ana", "persona": "a cautious engineer", "model": MODELS[1]},
            {"name": "Ben", "persona": "an ambitious product lead", "model": MODELS[2]},
        ],
    }


async def burst(args: argparse.Namespace, url: str, server: FakeServer, db_url: str) -> dict[str, float]:
    from sqlalchemy import event

    from moot import durable
    from moot.service.runtime import RoomManager
    from moot.spec import RoomSpec
    from moot.store import Store

    durable.POLL_EVERY = 3600.0  # only the start's statements are counted
    if args.no_cache:
        with contextlib.suppress(ImportError):
            from moot.models import _windows

            _windows.ANSWERS = _windows.ServerAnswers(ttl=0)
    store = Store.from_url(db_url)
    await store.ensure_schema()
    counted = {"statements": 0, "checkouts": 0, "connects": 0}

    def statement(*_: Any) -> None:
        counted["statements"] += 1

    def checkout(*_: Any) -> None:
        counted["checkouts"] += 1

    event.listen(store._engine.sync_engine, "before_cursor_execute", statement)
    event.listen(store._engine.sync_engine.pool, "checkout", checkout)

    def connect(*_: Any) -> None:
        counted["connects"] += 1

    event.listen(store._engine.sync_engine.pool, "connect", connect)
    manager = RoomManager(store)
    rows: list[dict[str, float]] = []
    try:
        for wave in range(args.waves):
            ids = [(await store.create_room(RoomSpec.from_data(room(url, i)))).id for i in range(args.rooms)]
            before = server.counts()
            counted.update(statements=0, checkouts=0, connects=0)
            profile = cProfile.Profile(time.process_time) if args.profile and wave == args.waves - 1 else None
            if profile is not None:
                profile.enable()
            cpu, system = time.process_time(), os.times().system
            wall = time.perf_counter()
            await asyncio.gather(*(manager.run(room_id) for room_id in ids))
            # every chair's opening asked for (the loop runs on while a thread waits for the server to say so)
            after = await asyncio.to_thread(server.counts, before["chats"] + args.rooms)
            cpu, system = time.process_time() - cpu, os.times().system - system
            wall = time.perf_counter() - wall
            if profile is not None:
                profile.disable()
                profile.dump_stats(args.profile)
            statements, checkouts, connects = counted["statements"], counted["checkouts"], counted["connects"]
            for room_id in ids:
                await manager.pause(room_id)
            asked = (
                (after["models"] - before["models"]) / args.rooms
                if after["models"] is not None
                else float("nan")
            )
            row = {
                "cpu_ms_per_start": 1000 * cpu / args.rooms,
                "of_it_system_ms": 1000 * system / args.rooms,  # the kernel's share: mostly loopback sends
                "wall_ms_burst": 1000 * wall,
                "statements_per_start": statements / args.rooms,
                "checkouts_per_start": checkouts / args.rooms,
                "connects_per_start": connects / args.rooms,  # new database connections (the pool's overflow)
                "models_requests_per_start": asked,
            }
            print(f"wave {wave + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), file=sys.stderr)
            if wave > 0 or args.waves == 1:  # the first wave warms imports and connections up
                rows.append(row)
    finally:
        await manager.shutdown()
        await store.close()
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}  # the waves' median


async def main_async(args: argparse.Namespace) -> None:
    server = FakeServer()
    drop = None
    try:
        if args.db == "postgres":
            from moot.testing.cluster import new_database

            db_url, drop = await new_database(args.postgres, prefix="moot_start_bench")
        else:
            folder = tempfile.mkdtemp(prefix="moot-start-bench-")
            db_url = f"sqlite+aiosqlite:///{folder}/moot.db"
        results = await burst(args, server.url, server, db_url)
    finally:
        server.stop()
        if drop is not None:
            await drop()
    results["rooms"] = args.rooms
    print(
        json.dumps(
            {"db": args.db, "cache": not args.no_cache, **{k: round(v, 2) for k, v in results.items()}}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=40, help="rooms started together in each wave")
    parser.add_argument("--waves", type=int, default=4, help="bursts; the first only warms up")
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--postgres", default=POSTGRES, help="an admin URL to make a database through")
    parser.add_argument("--no-cache", action="store_true", help="every start asks GET /v1/models")
    parser.add_argument("--profile", metavar="PATH", help="cProfile the last wave's burst into PATH")
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
