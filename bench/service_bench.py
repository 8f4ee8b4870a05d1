"""Live streams of `moot serve`: how long a model's chunk takes to reach an SSE client, and how many rooms
one process streams with p99 under 100 ms.

    python bench/service_bench.py                    # ramp 10, 25, 50, 100, ... rooms to p99 >= 100 ms, narrow
    python bench/service_bench.py --rooms 10 25      # only these levels

Three kinds of process: the fake OpenAI-compatible server (moot.testing.servers) streams every reply at
`--pace` tokens per second; one service process runs every room (RoomManager, the SSE route, uvicorn,
SQLite), each room a sequential discussion of 3 agents whose replies are `--tokens` tokens long; a client
process holds one SSE connection per room.

How latency is measured: the service wraps each agent's model so that every text chunk is stamped with
`time.monotonic()` the moment the adapter yields it to the engine; the client stamps each `turn_delta` with
`time.monotonic()` the moment its frame is complete. Both run on one host, where CLOCK_MONOTONIC is one
system-wide clock, so the difference is the whole path: engine, store, hub, SSE encoding, uvicorn, the
loopback socket and the client's parsing. The k-th delta of an agent in a room is the k-th chunk its model
yielded (each chunk is one delta, no retries happen), which joins the two sides without touching the events.
Clients connect before the rooms start, so nothing is replayed: every delta is measured live.

Rooms start spread over one turn's length (`--together`: all at once, so that every room's turns end, and
are written, at the same moment). "service CPU" is the service process's CPU time from the first room's start
to the last client's end, per delta delivered: the cost of a delta through adapter, engine, store and SSE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson

AGENTS = ("Ada", "Ben", "Cyd")
TASK = "Room {index}: should we open-source our engine?"
TARGET_P99_MS = 100.0


# ---- the service process ----------------------------------------------------------------------------------------


def _stamped_models(stamps: dict[str, list[float]]) -> Any:
    """`models_for` for the manager: each agent's real adapter, wrapped to stamp every chunk it yields."""
    from moot.models import Completion, Model, ModelRequest, build_model
    from moot.spec import RoomSpec

    class Stamped(Model):
        def __init__(self, inner: Model, key: str) -> None:
            self.inner, self.label, self.times = inner, inner.label, stamps[key]

        async def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
            async for item in self.inner.stream(request):
                if isinstance(item, str) and item:
                    self.times.append(time.monotonic())
                yield item

        async def aclose(self) -> None:
            await self.inner.aclose()

    def models_for(spec: RoomSpec) -> Mapping[str, Model]:
        index = spec.task.split(":")[0].split()[-1]
        return {a.name: Stamped(build_model(spec.model_for(a)), f"{index}/{a.name}") for a in spec.agents}

    return models_for


async def serve(llm_url: str, rooms: int, tokens: int, spread: float, folder: Path) -> None:
    """Starts the rooms over `spread` seconds once stdin says go; prints the URL, token and room ids first."""
    import uvicorn
    from fastapi import FastAPI

    from moot.service.auth import hash_token, new_token
    from moot.service.routes import streams
    from moot.service.runtime import RoomManager
    from moot.spec import RoomSpec
    from moot.store import Store

    store = Store.from_url(f"sqlite+aiosqlite:///{folder / 'bench.db'}")
    await store.ensure_schema()
    token = new_token()
    user = await store.create_user("bench", role="member", token_hash=hash_token(token))
    model = {"provider": "openai", "base_url": f"{llm_url}/v1", "api_key": "bench", "model": "bench"}
    ids = []
    for index in range(rooms):
        spec = RoomSpec.from_data(
            {
                "task": TASK.format(index=index),
                "protocol": "sequential",
                "max_rounds": 1,
                "models": {"bench": {**model, "max_tokens": tokens}},
                "agents": [{"name": name, "persona": f"{name}, a board member"} for name in AGENTS],
            }
        )
        ids.append((await store.create_room(spec, owner_id=user.id)).id)
    stamps: dict[str, list[float]] = defaultdict(list)
    manager = RoomManager(store, models_for=_stamped_models(stamps))
    app = FastAPI()
    app.include_router(streams.router, prefix="/api/v1")
    app.state.store, app.state.manager = store, manager
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    listening = socket.create_server(("127.0.0.1", 0))  # bound first: clients may connect before it serves
    task = asyncio.create_task(server.serve(sockets=[listening]))
    url = f"http://127.0.0.1:{listening.getsockname()[1]}"
    print(json.dumps({"url": url, "token": token, "rooms": ids}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # "go": every client is connected
    began, cpu = time.monotonic(), time.process_time()
    for index, room_id in enumerate(ids):
        await asyncio.sleep(max(0.0, began + spread * index / rooms - time.monotonic()))
        await manager.run(room_id)
    await asyncio.to_thread(sys.stdin.readline)  # "end": every client saw its room's last event
    cpu = time.process_time() - cpu
    await manager.shutdown()
    failed = [r.id for r in [await store.get_room(i) for i in ids] if r.status != "completed"]
    data = orjson.dumps({"stamps": stamps, "failed": failed, "cpu": cpu})
    await asyncio.to_thread((folder / "stamps.json").write_bytes, data)
    print("done", flush=True)
    server.should_exit = True
    await task
    await store.close()


# ---- the client process -----------------------------------------------------------------------------------------


async def _watch(
    url: str, token: str, room_id: str, index: int, ready: asyncio.Event, out: list[Any]
) -> None:
    """One SSE client on a raw socket: stamps each delta's arrival, ends at the room's last event."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET /api/v1/rooms/{room_id}/events?follow=true&token={token} HTTP/1.1\r\n"
        f"Host: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    ready.set()
    buffer = b""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            raise RuntimeError(f"room {room_id}: the stream ended early")
        now = time.monotonic()
        buffer += chunk
        *frames, buffer = buffer.split(b"\r\n\r\n")
        for frame in frames:  # chunked transfer-encoding: size lines sit between frames
            if b"event: turn_delta" in frame:
                data = frame[frame.index(b"data: ") + 6 :].split(b"\r\n")[0]
                out.append((index, orjson.loads(data)["speaker"], now))
            elif b"event: room_completed" in frame:
                writer.close()
                return


async def clients(url: str, token: str, ids: list[str]) -> list[Any]:
    """Connects one client per room, says so, and returns every delta's (room, speaker, arrival)."""
    arrivals: list[Any] = []
    events = [asyncio.Event() for _ in ids]
    tasks = [
        asyncio.create_task(_watch(url, token, rid, i, events[i], arrivals)) for i, rid in enumerate(ids)
    ]
    await asyncio.gather(*(e.wait() for e in events))
    print("ready", flush=True)
    await asyncio.gather(*tasks)
    return arrivals


# ---- the orchestra ----------------------------------------------------------------------------------------------


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def level(llm_url: str, rooms: int, tokens: int, spread: float) -> dict[str, Any]:
    """One level: a fresh service with `rooms` rooms and their clients; the latency of every delta."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        service = _spawn("_serve", llm_url, str(rooms), str(tokens), str(spread), tmp)
        assert service.stdin is not None and service.stdout is not None
        started = json.loads(service.stdout.readline())
        client = _spawn("_clients", started["url"], started["token"], ",".join(started["rooms"]), tmp)
        assert client.stdin is not None and client.stdout is not None
        assert client.stdout.readline().strip() == "ready"
        began = time.monotonic()
        service.stdin.write("go\n")
        service.stdin.flush()
        assert client.wait(timeout=300) == 0
        wall = time.monotonic() - began
        service.stdin.write("end\n")
        service.stdin.flush()
        assert service.stdout.readline().strip() == "done"
        assert service.wait(timeout=60) == 0
        served = orjson.loads((folder / "stamps.json").read_bytes())
        arrivals = orjson.loads((folder / "arrivals.json").read_bytes())
    if served["failed"]:
        raise RuntimeError(f"rooms did not complete: {served['failed']}")
    seen: dict[str, int] = defaultdict(int)
    latencies: list[float] = []
    for index, speaker, arrived in arrivals:
        key = f"{index}/{speaker}"
        latencies.append(arrived - served["stamps"][key][seen[key]])
        seen[key] += 1
    assert all(len(served["stamps"][key]) == count for key, count in seen.items()), "a delta was lost"
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return {
        "rooms": rooms,
        "deltas": len(ms),
        "deltas_per_s": len(ms) / wall,
        "p50": statistics.median(ms),
        "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "max": ms[-1],
        "wall": wall,
        "cpu_us": served["cpu"] / len(ms) * 1e6,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        llm_url, rooms, tokens, spread, folder = sys.argv[2:7]
        asyncio.run(serve(llm_url, int(rooms), int(tokens), float(spread), Path(folder)))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_clients":
        url, token, ids, folder = sys.argv[2:6]
        arrivals = asyncio.run(clients(url, token, ids.split(",")))
        (Path(folder) / "arrivals.json").write_bytes(orjson.dumps(arrivals))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rooms", type=int, nargs="*", help="levels to run (default: ramp until p99 >= 100 ms)"
    )
    parser.add_argument("--pace", type=float, default=50.0, help="tokens per second of each agent's stream")
    parser.add_argument("--tokens", type=int, default=100, help="tokens in each reply")
    parser.add_argument("--max-rooms", type=int, default=1600, help="the ramp stops here")
    parser.add_argument(
        "--together",
        action="store_true",
        help="start every room at once, so that all turns end together (default: starts spread over one turn)",
    )
    args = parser.parse_args()
    spread = 0.0 if args.together else args.tokens / args.pace
    llm = subprocess.Popen(
        [
            sys.executable, "-m", "moot.testing.servers", "--port", "0",
            "--reply-tokens", str(args.tokens), "--token-delay", str(1 / args.pace),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert llm.stdout is not None
    llm_url = llm.stdout.readline().strip()
    rows: list[dict[str, Any]] = []

    def measure(rooms: int) -> dict[str, Any]:
        row = level(llm_url, rooms, args.tokens, spread)
        rows.append(row)
        print(
            f"{rooms} rooms: p50 {row['p50']:.1f} ms, p99 {row['p99']:.1f} ms, {row['deltas_per_s']:.0f} deltas/s",
            file=sys.stderr,
            flush=True,
        )
        return row

    try:
        if args.rooms:
            for rooms in args.rooms:
                measure(rooms)
        else:  # ramp until p99 misses the target, then halve the gap twice to narrow the answer
            passed, failed = 0, 0
            for rooms in [10, 25, 50, 100, 200, 400, 800, 1600]:
                if rooms > args.max_rooms:
                    break
                if measure(rooms)["p99"] >= TARGET_P99_MS:
                    failed = rooms
                    break
                passed = rooms
            for _ in range(2 if failed else 0):
                middle = (passed + failed) // 2
                if middle in (passed, failed):
                    break
                if measure(middle)["p99"] < TARGET_P99_MS:
                    passed = middle
                else:
                    failed = middle
    finally:
        llm.terminate()
        llm.wait()
    rows.sort(key=lambda r: r["rooms"])
    command = "python bench/service_bench.py " + " ".join(sys.argv[1:])
    starts = "all at once" if args.together else f"spread over {spread:g} s"
    print(
        f"`{command.strip()}` — {os.cpu_count()} CPUs, pace {args.pace:g} tokens/s per agent, "
        f"{args.tokens}-token replies, rooms started {starts}\n"
    )
    print("| rooms | deltas | deltas/s | p50 ms | p99 ms | max ms | wall s | service CPU µs/delta |")
    print("|------:|-------:|---------:|-------:|-------:|-------:|-------:|---------------------:|")
    for r in rows:
        print(
            f"| {r['rooms']} | {r['deltas']} | {r['deltas_per_s']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} "
            f"| {r['max']:.1f} | {r['wall']:.1f} | {r['cpu_us']:.0f} |"
        )
    ok = [r["rooms"] for r in rows if r["p99"] < TARGET_P99_MS]
    print(
        f"\nMost rooms streaming at once with p99 < {TARGET_P99_MS:g} ms: {max(ok) if ok else 'none of these'}"
    )


if __name__ == "__main__":
    main()
