"""What taking in a model's stream costs per token: Moot's OpenAI adapter on its own HTTP reader (asyncio's
Protocol and httptools, its default), the same adapter on httpx over asyncio's streams (what it uses where a
proxy is set) and over httpx's own network backend (anyio's), and the bare relay's reading (httpx
`aiter_lines` and orjson, as `bench/service_bench.py`'s relay does).

    python bench/read_bench.py                       # 20 streams at once, 200 tokens each, 5 rounds
    python bench/read_bench.py --streams 400 --delay 0.02 --tokens 100 --rounds 3 --loop uvloop   # as served

The fake OpenAI-compatible server (moot.testing.servers, its own process) sends one token a chunk, every
`--delay` seconds, so each token is one network read. The ways take turns round by round in one process;
CPU is this process's `time.process_time()` over a round, per token read.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

import httpcore
import httpx
import orjson

from moot.models import Message, ModelRequest
from moot.models.openai import OpenAILeanModel
from moot.spec import ModelSpec

Read = Callable[[], Awaitable[int]]


def _lean(url: str, backend: str) -> Read:
    model = OpenAILeanModel(ModelSpec(provider="openai", model="bench", base_url=url, api_key="none"))
    model._ready()
    if backend != "wire":
        model._wire = None  # httpx, as with a proxy
    client = model._http()
    if backend == "anyio":
        client._transport._pool._network_backend = httpcore.AnyIOBackend()  # type: ignore[attr-defined]
    request = ModelRequest(system="", messages=(Message("user", "go"),), max_tokens=10_000)

    async def read() -> int:
        tokens = 0
        async for item in model.stream(request):
            tokens += isinstance(item, str)
        return tokens

    return read


def _relay(url: str, streams: int) -> Read:
    """As the service bench's relay: a client per room of four streams (one pool for every stream costs more
    the more it holds, encode/httpcore#1035)."""
    clients = [
        httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=None))
        for _ in range(max(1, streams // 4))
    ]
    turn = itertools.count()
    body = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "go"}]}

    async def read() -> int:
        tokens = 0
        client = clients[next(turn) % len(clients)]
        async with client.stream("POST", f"{url}/chat/completions", json=body) as answer:
            async for line in answer.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choices = orjson.loads(line[6:]).get("choices")
                if choices and choices[0]["delta"].get("content"):
                    tokens += 1
        return tokens

    return read


async def _round(read: Read, streams: int) -> tuple[float, int]:
    began = time.process_time()
    counts = await asyncio.gather(*(read() for _ in range(streams)))
    return time.process_time() - began, sum(counts)


async def _main(args: argparse.Namespace, url: str) -> dict[str, list[float]]:
    ways = {
        "Protocol + httptools (Moot)": _lean(url, "wire"),
        "httpx on asyncio streams": _lean(url, "asyncio"),
        "httpx on anyio (its own)": _lean(url, "anyio"),
    }
    ways["relay: aiter_lines"] = _relay(url, args.streams)
    per_token: dict[str, list[float]] = defaultdict(list)
    for read in ways.values():  # a warm-up round each: connections, imports
        await _round(read, args.streams)
    for _ in range(args.rounds):
        for way, read in ways.items():
            cpu, tokens = await _round(read, args.streams)
            per_token[way].append(cpu / tokens * 1e6)
    return per_token


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.005, help="seconds between the server's chunks")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="the event loop the ways read on"
    )
    args = parser.parse_args()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "moot.testing.servers", "--port", "0",
            "--reply-tokens", str(args.tokens), "--token-delay", str(args.delay),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert server.stdout is not None
    url = server.stdout.readline().strip() + "/v1"
    load = os.getloadavg()[0]
    try:
        factory = None
        if args.loop == "uvloop":
            import uvloop

            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            per_token = runner.run(_main(args, url))
    finally:
        server.terminate()
        server.wait()
    print(
        f"`python bench/read_bench.py --streams {args.streams} --tokens {args.tokens} --delay {args.delay:g} "
        f"--rounds {args.rounds} --loop {args.loop}`: {os.cpu_count()} CPUs, load average {load:.2f} before and "
        f"{os.getloadavg()[0]:.2f} after\n"
    )
    base = statistics.median(per_token["Protocol + httptools (Moot)"])
    print("| way | CPU µs/token, median | min | max | against Moot's |")
    print("|---|---:|---:|---:|---:|")
    for way, values in per_token.items():
        median = statistics.median(values)
        print(f"| {way} | {median:.0f} | {min(values):.0f} | {max(values):.0f} | {median / base:.2f}× |")


if __name__ == "__main__":
    main()
