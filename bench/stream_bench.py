"""The same discussion three ways, side by side: through Moot, the official openai SDK, and a bare floor.

    python bench/stream_bench.py                 # the whole matrix; writes bench/results/latest.json
    python bench/stream_bench.py --quick         # a smaller matrix for a smoke run

Each discussion: 4 agents, 3 rounds, sequential, 200-token replies streamed one token per chunk by a local
OpenAI-compatible server (moot.testing.servers, in its own process). Each client runs in its own process so
that its CPU time (getrusage) and peak memory belong to it alone. Reported per configuration:

- CPU per chunk: the client's user+system CPU over the run, divided by the chunks the server sent;
- wall over ideal: the run's wall time over rounds * agents * (ttft + tokens * delay), with delayed tokens;
- peak memory: the client's peak RSS above its RSS after imports and set-up.

    python bench/stream_bench.py path                        # CPU per delta of the server's path, in process
    python bench/stream_bench.py path --against /tmp/old/src # ... and of another tree's src, taking turns

`path`: the server's path for a token without the network, in one process: board meetings on SQLite
through `RoomManager` (engine `Run`, `DurableRun`, the room's hub joining frames) to SSE frame bytes made
as the SSE route makes them, from in-process models that yield one piece per turn of the event loop (as a
socket read would). Reported: the process's CPU per delta, the models' own loop turns included. With
`--against`, each repeat runs that tree's `src` (PYTHONPATH) right after this one, for a before/after on
the same machine load (`git archive REV src | tar -x -C /tmp/old` makes one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

AGENTS = ("Ada", "Ben", "Cyd", "Dee")
TASK = "Should we open-source our engine?"


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---- the three clients ---------------------------------------------------------------------------------------


async def _moot_rooms(url: str, rooms: int, rounds: int, tokens: int) -> int:
    import moot

    spec = moot.RoomSpec.from_data(
        {
            "task": TASK,
            "protocol": "sequential",
            "max_rounds": rounds,
            "models": {
                "bench": {
                    "provider": "openai",
                    "base_url": f"{url}/v1",
                    "api_key": "bench",
                    "model": "bench",
                    "max_tokens": tokens,
                }
            },
            "agents": [{"name": name, "persona": f"{name}, a board member"} for name in AGENTS],
        }
    )

    async def one() -> int:
        deltas = 0
        async for event in moot.run(spec):
            if event.type == "turn_delta":
                deltas += 1
            elif event.type in ("turn_failed", "room_failed"):
                raise RuntimeError(event.model_dump_json())
        return deltas

    return sum(await asyncio.gather(*(one() for _ in range(rooms))))


async def _sdk_rooms(url: str, rooms: int, rounds: int, tokens: int) -> int:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)

    async def one() -> int:
        history = [f"Task: {TASK}"]
        chunks = 0
        for _ in range(rounds):
            for name in AGENTS:
                stream = await client.chat.completions.create(
                    model="bench",
                    messages=[
                        {"role": "system", "content": f"You are {name}, a board member."},
                        {"role": "user", "content": "\n\n".join(history)},
                    ],
                    max_tokens=tokens,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                parts: list[str] = []
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        parts.append(chunk.choices[0].delta.content)
                        chunks += 1
                history.append(f"[{name}] {''.join(parts)}")
        return chunks

    try:
        return sum(await asyncio.gather(*(one() for _ in range(rooms))))
    finally:
        await client.close()


async def _floor_rooms(url: str, rooms: int, rounds: int, tokens: int) -> int:
    import httpx
    import orjson

    client = httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1000))

    async def one() -> int:
        history = [f"Task: {TASK}"]
        chunks = 0
        for _ in range(rounds):
            for name in AGENTS:
                payload = {
                    "model": "bench",
                    "messages": [
                        {"role": "system", "content": f"You are {name}, a board member."},
                        {"role": "user", "content": "\n\n".join(history)},
                    ],
                    "max_tokens": tokens,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
                parts: list[str] = []
                async with client.stream("POST", "/v1/chat/completions", json=payload) as response:
                    async for line in response.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        choices = orjson.loads(line[6:])["choices"]
                        if choices and (text := choices[0]["delta"].get("content")):
                            parts.append(text)
                            chunks += 1
                history.append(f"[{name}] {''.join(parts)}")
        return chunks

    try:
        return sum(await asyncio.gather(*(one() for _ in range(rooms))))
    finally:
        await client.aclose()


CLIENTS = {"floor": _floor_rooms, "sdk": _sdk_rooms, "moot": _moot_rooms}


# ---- the server's path per delta, in process -------------------------------------------------------------


async def _path(rooms: int, tokens: int, frame: float) -> dict[str, float]:
    """Board meetings through RoomManager to SSE frame bytes; CPU seconds and deltas."""
    import gc
    import tempfile
    from collections.abc import AsyncIterator

    from moot.models import Completion, Model, ModelRequest, Usage
    from moot.service.routes.streams import _sse_frame
    from moot.service.runtime import RoomManager
    from moot.spec import RoomSpec
    from moot.store import Store

    pieces = 0

    class Pieces(Model):
        label = "pieces"

        async def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
            nonlocal pieces
            for _ in range(tokens):
                await asyncio.sleep(0)  # one piece per turn of the loop, as a socket read gives them
                pieces += 1
                yield "word "
            yield Completion(text="word " * tokens, usage=Usage(input_tokens=10, output_tokens=tokens))

    folder = tempfile.mkdtemp()
    store = Store.from_url(f"sqlite+aiosqlite:///{folder}/path.db")
    await store.ensure_schema()
    user = await store.create_user("bench", role="member", token_hash="-")
    ids = []
    for index in range(rooms):
        spec = RoomSpec.from_data(
            {
                "task": f"Room {index}: {TASK}",
                "protocol": "board",
                "max_rounds": 1,
                "models": {"p": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "p"}},
                "default_model": "p",
                "agents": [{"name": "Chair", "role": "moderator", "persona": "a neutral chair"}]
                + [{"name": name, "persona": f"{name}, a board member"} for name in AGENTS],
            }
        )
        ids.append((await store.create_room(spec, owner_id=user.id)).id)
    manager = RoomManager(store, models_for=lambda spec: {a.name: Pieces() for a in spec.agents}, frame=frame)
    sent = 0

    async def client(room_id: str) -> None:  # as the SSE route: each batch of ready events, one body
        nonlocal sent
        async with manager.hub(room_id).subscribe(0) as sub:
            async for event in sub:
                sent += len("".join(map(_sse_frame, [event, *sub.ready()])).encode())

    gc.freeze()
    cpu = _cpu()
    clients = []
    for room_id in ids:
        await manager.run(room_id)
        clients.append(asyncio.create_task(client(room_id)))
    await asyncio.gather(*clients)
    cpu = _cpu() - cpu
    await manager.shutdown()
    await store.close()
    return {"cpu": cpu, "deltas": pieces, "bytes": sent}


def path_main(args: argparse.Namespace) -> None:
    if args.one:
        result = asyncio.run(_path(args.rooms, args.tokens, args.frame_ms / 1000))
        print(json.dumps(result))
        return
    trees = [("this tree", None)] + ([(args.against, args.against)] if args.against else [])
    got: dict[str, list[float]] = {name: [] for name, _ in trees}
    for _ in range(args.repeats):
        for name, src in trees:
            env = {**os.environ, "PYTHONHASHSEED": "0"}
            if src:
                env["PYTHONPATH"] = src
            out = subprocess.run(
                [sys.executable, __file__, "path", "--one", "--rooms", str(args.rooms),
                 "--tokens", str(args.tokens), "--frame-ms", str(args.frame_ms)],
                capture_output=True, text=True, check=True, env=env,
            )  # fmt: skip
            result = json.loads(out.stdout.strip().splitlines()[-1])
            got[name].append(result["cpu"] / result["deltas"] * 1e6)
            print(f"{name}: {got[name][-1]:.1f} µs CPU per delta", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    print(
        f"\n{args.rooms} board meetings, {args.tokens} pieces a reply, frames {args.frame_ms} ms, "
        f"load average {load:.2f} at the end"
    )
    for name, values in got.items():
        print(f"- {name}: {' '.join(f'{v:.1f}' for v in values)} µs CPU per delta (best {min(values):.1f})")


def client_main(args: argparse.Namespace) -> None:
    """One measured client run, in this process; prints one JSON line."""
    import httpx  # noqa: F401  - imports happen before the baseline, as they would in a long-lived service
    import openai  # noqa: F401

    import moot  # noqa: F401

    baseline = _rss_kib()
    cpu0, wall0 = _cpu(), time.perf_counter()
    received = asyncio.run(CLIENTS[args.impl](args.url, args.rooms, args.rounds, args.tokens))
    wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps({"cpu": cpu, "wall": wall, "received": received, "peak_kib": peak, "base_kib": baseline})
    )


# ---- the matrix ----------------------------------------------------------------------------------------------


def _start_server(tokens: int, delay: float, ttft: float) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "moot.testing.servers", "--port", "0", "--reply-tokens", str(tokens),
         "--ttft", str(ttft), "--token-delay", str(delay)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


def _client(impl: str, url: str, rooms: int, rounds: int, tokens: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "client", "--impl", impl, "--url", url, "--rooms", str(rooms),
         "--rounds", str(rounds), "--tokens", str(tokens)],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def matrix_main(args: argparse.Namespace) -> None:
    rounds, tokens, ttft = 3, args.tokens, 0.0
    configs = [(1, 0.0), (50, 0.0), (1, 0.005), (50, 0.005)]
    if args.quick:
        configs = [(1, 0.0), (10, 0.005)]
    rows: list[dict[str, Any]] = []
    for rooms, delay in configs:
        server, url = _start_server(tokens, delay, ttft)
        try:
            for repeat in range(args.repeats):
                for impl in ("floor", "sdk", "moot"):
                    result = _client(impl, url, rooms, rounds, tokens)
                    chunks = rooms * rounds * len(AGENTS) * tokens
                    ideal = rounds * len(AGENTS) * (ttft + (tokens - 1) * delay)
                    row = {
                        "impl": impl, "rooms": rooms, "delay_ms": delay * 1000, "repeat": repeat,
                        "chunks": chunks, "events": result["received"],
                        "cpu_us_per_chunk": result["cpu"] / chunks * 1e6,
                        "wall_s": result["wall"], "wall_over_ideal": result["wall"] / ideal if ideal else None,
                        "peak_mib_above_base": (result["peak_kib"] - result["base_kib"]) / 1024,
                    }  # fmt: skip
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            server.terminate()
            server.wait()
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(rows, indent=1))
    _print_table(rows)


def _print_table(rows: list[dict[str, Any]]) -> None:
    """Median over repeats, with ratios to the floor measured in the same run."""
    from statistics import median

    keys = sorted({(r["rooms"], r["delay_ms"]) for r in rows})
    print("\n| rooms | delay/token | client | CPU µs/chunk | × floor | wall / ideal | peak MiB above base |")
    print("|---|---|---|---|---|---|---|")
    for rooms, delay in keys:
        cell = {
            impl: [r for r in rows if (r["rooms"], r["delay_ms"], r["impl"]) == (rooms, delay, impl)]
            for impl in ("floor", "sdk", "moot")
        }
        floor_cpu = median(r["cpu_us_per_chunk"] for r in cell["floor"])
        for impl, runs in cell.items():
            cpu = median(r["cpu_us_per_chunk"] for r in runs)
            ratio = runs[0]["wall_over_ideal"]
            wall = f"{median(r['wall_over_ideal'] for r in runs):.3f}" if ratio else "-"
            peak = median(r["peak_mib_above_base"] for r in runs)
            print(
                f"| {rooms} | {delay:g} ms | {impl} | {cpu:.1f} | {cpu / floor_cpu:.2f} | {wall} | {peak:.1f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    client = sub.add_parser("client")
    client.add_argument("--impl", choices=sorted(CLIENTS), required=True)
    client.add_argument("--url", required=True)
    client.add_argument("--rooms", type=int, default=1)
    client.add_argument("--rounds", type=int, default=3)
    client.add_argument("--tokens", type=int, default=200)
    path = sub.add_parser("path", help="CPU per delta of the server's path, in process")
    path.add_argument("--rooms", type=int, default=10)
    path.add_argument("--tokens", type=int, default=1000, help="pieces in each reply")
    path.add_argument("--frame-ms", type=int, default=50)
    path.add_argument("--repeats", type=int, default=3)
    path.add_argument("--against", metavar="SRC", help="another tree's src folder, run in turn with this one")
    path.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()
    if args.command == "client":
        client_main(args)
    elif args.command == "path":
        path_main(args)
    else:
        matrix_main(args)


if __name__ == "__main__":
    main()
