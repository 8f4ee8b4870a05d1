"""Live streams of `moot serve` against a bare per-token relay: how many board meetings one process keeps at
the model's pace, with p99 token-to-client latency under 100 ms, and the CPU each spends per delivered token.

    python bench/service_bench.py                          # ramp the targets in turn, then narrow each
    python bench/service_bench.py --targets relay sqlite --rooms 10 40
    python bench/service_bench.py --rooms 40 --against /tmp/old/src     # before/after, taking turns
    python bench/service_bench.py --targets postgresql --rooms 30 --profile /tmp/prof   # py-spy samples

Processes: the fake OpenAI-compatible server (moot.testing.servers) streams every reply at `--pace` tokens a
second, one token a chunk; one target process serves every room; one client process holds one SSE
connection per room. The model server and the clients, the load itself, run on uvloop, which costs them less
CPU per chunk than asyncio's own loop: on these 2 cores, what the load takes the targets cannot have. Each room is a board meeting: the chair opens, four members speak at once, the chair
sums up and concludes (its conclusion asked twice: the fake model's words are not the JSON a conclusion
needs), `--tokens` tokens a reply. The targets:

- **moot on SQLite / on PostgreSQL**: RoomManager and the SSE route on uvicorn, as `moot serve` runs them
  (the process's start-up objects frozen out of the collector's way, deltas joined over `--frame-ms`).
- **relay**: the same model calls in the same order (1, then 4 at once, then 1, then 2), httpx in, each
  token out as its own SSE event (orjson, raw asyncio streams), nothing else: no storage, no events, no log.
  One httpx client per room, on asyncio's own loop. **relay-uvloop**: the same on uvloop.
  **relay-one-client**: one httpx client for every room, whose connection pool costs more the more streams
  it holds (httpcore scans them all for each request and each close).

Latency: each target stamps every chunk with `time.monotonic()` as its model adapter yields it (Moot: a
wrapper around each agent's real adapter; relay: as it reads the chunk); the client stamps every frame the
moment it is complete. One host, one system-wide monotonic clock. A frame may carry several tokens (Moot
joins a turn's deltas): a token counts as delivered by the first frame of its speaker whose text reaches its
last character. Pace, two ways, each within 10% (at most 1.10): a room's model streams, the time they took
from first to last chunk over the time they take at the model's pace (a target that falls behind reads its
sockets late, and the chunks' stamps spread out); and the room as a whole, from when it was due to start to
its last chunk, over its speeches back to back at the model's pace (a target that starts rooms late or waits
between speeches keeps every stream at pace yet runs the meeting slower than its models). CPU: the target process's CPU time
from the first room's start to the last client's end, per delivered token. The load's own processes share
the machine: the fake model server's and the clients' CPU over the level, in cores, shows how much of it
they left. Also reported: the collector's full passes in the target over the level (each pauses every
stream), and the gap between speeches: from one model call's last chunk to the room's next call's first
(the turn's save and the next request in between; the members' four calls at once count once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

CHAIR = "Chair"
MEMBERS = ("Ada", "Ben", "Cyd", "Dee")
# The board meeting's model calls, in order: who speaks in each step (the conclusion is asked twice).
STEPS: tuple[tuple[str, ...], ...] = ((CHAIR,), MEMBERS, (CHAIR,), (CHAIR,), (CHAIR,))
TASK = "Room {index}: should we open-source our engine?"
TARGET_P99_MS = 100.0
TARGET_PACE = 1.10
POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
LEVELS = (5, 10, 20, 40, 80, 120, 160, 240, 320)
AGAINST = ", against"  # a Moot target's twin on another tree's src (--against)


# ---- Moot ---------------------------------------------------------------------------------------------------


class _Stamps:
    """Every chunk a target's models yielded: (time, characters) by room/speaker, and each call's span."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.calls: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
        self.full_gcs: list[float] = []  # the collector's full passes over the level, ms each
        self.due: dict[str, float] = {}  # when each room was due to start
        self.collecting = 0.0  # seconds in the collector's passes of every generation
        self._gc_began = 0.0

    def watch_collector(self) -> None:
        import gc

        def timed(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                self._gc_began = time.perf_counter()
                return
            took = time.perf_counter() - self._gc_began
            self.collecting += took
            if info["generation"] == 2:
                self.full_gcs.append(took * 1000)

        gc.callbacks.append(timed)

    def dump(self) -> dict[str, Any]:
        return {
            "chunks": self.chunks,
            "calls": self.calls,
            "full_gcs": self.full_gcs,
            "due": self.due,
            "collecting": self.collecting,
        }


def _collections(pauses: list[float]) -> str:
    return f"{len(pauses)} ({max(pauses):.0f})" if pauses else "0"


def _stamped_models(stamps: _Stamps) -> Any:
    """`models_for` for the manager: each agent's real adapter, wrapped to stamp every chunk it yields."""
    from moot.models import Completion, Model, ModelRequest, build_model
    from moot.spec import RoomSpec

    class Stamped(Model):
        def __init__(self, inner: Model, index: str, speaker: str) -> None:
            self.inner, self.label, self.index = inner, inner.label, index
            self.times = stamps.chunks[f"{index}/{speaker}"]

        async def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
            first, count = 0.0, 0
            async for item in self.inner.stream(request):
                if isinstance(item, str) and item:
                    now = time.monotonic()
                    self.times.append((now, len(item)))
                    first, count = first or now, count + 1
                yield item
            if count:
                stamps.calls[self.index].append((first, time.monotonic(), count))

        async def aclose(self) -> None:
            await self.inner.aclose()

    def models_for(spec: RoomSpec) -> Mapping[str, Model]:
        index = spec.task.split(":")[0].split()[-1]
        return {a.name: Stamped(build_model(spec.model_for(a)), index, a.name) for a in spec.agents}

    return models_for


async def _moot(args: argparse.Namespace, folder: Path) -> None:
    """One target process: Moot's manager and SSE route on uvicorn, on SQLite or PostgreSQL."""
    import gc

    import uvicorn
    from fastapi import FastAPI

    from moot.service.auth import hash_token, new_token
    from moot.service.routes import streams
    from moot.service.runtime import RoomManager
    from moot.spec import RoomSpec
    from moot.store import Store

    url = args.database or f"sqlite+aiosqlite:///{folder / 'bench.db'}"
    store = Store.from_url(url)
    await store.ensure_schema()
    token = new_token()
    user = await store.create_user("bench", role="member", token_hash=hash_token(token))
    model = {"provider": "openai", "base_url": f"{args.llm}/v1", "api_key": "bench", "model": "bench"}
    ids = []
    for index in range(args.rooms):
        spec = RoomSpec.from_data(
            {
                "task": TASK.format(index=index),
                "protocol": "board",
                "max_rounds": 1,
                "models": {"bench": {**model, "max_tokens": args.tokens}},
                "default_model": "bench",
                "agents": [{"name": CHAIR, "role": "moderator", "persona": "a neutral chair"}]
                + [{"name": name, "persona": f"{name}, a board member"} for name in MEMBERS],
            }
        )
        ids.append((await store.create_room(spec, owner_id=user.id)).id)
    stamps = _Stamps()
    manager = RoomManager(store, models_for=_stamped_models(stamps), frame=args.frame_ms / 1000)
    app = FastAPI()
    app.include_router(streams.router, prefix="/api/v1")
    app.state.store, app.state.manager = store, manager
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    listening = socket.create_server(("127.0.0.1", 0))
    task = asyncio.create_task(server.serve(sockets=[listening]))
    base = f"http://127.0.0.1:{listening.getsockname()[1]}"
    paths = [f"/api/v1/rooms/{room_id}/events?follow=true&token={token}" for room_id in ids]
    try:
        from moot.service.heap import settle_heap  # as `moot serve` does once it has started
    except ImportError:  # an older tree (--against): it froze start-up's objects only
        settle_heap = gc.freeze
    settle_heap()
    stamps.watch_collector()
    print(json.dumps({"url": base, "paths": paths}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # "go": every client is connected
    cpu = time.process_time()
    began = time.monotonic()
    runs = []  # started on time, as the relay's rooms are, however long a start takes
    for index, room_id in enumerate(ids):
        await asyncio.sleep(max(0.0, began + args.spread * index / args.rooms - time.monotonic()))
        stamps.due[str(index)] = time.monotonic()
        runs.append(asyncio.create_task(manager.run(room_id)))
    await asyncio.gather(*runs)
    await asyncio.to_thread(sys.stdin.readline)  # "end": every client saw its room's last event
    cpu = time.process_time() - cpu
    await manager.shutdown()
    failed = [r.id for r in [await store.get_room(i) for i in ids] if r.status != "completed"]
    await _report(folder, stamps, cpu, failed)
    server.should_exit = True
    await task
    await store.close()


async def _report(folder: Path, stamps: _Stamps, cpu: float, failed: list[str]) -> None:
    data = orjson.dumps({**stamps.dump(), "failed": failed, "cpu": cpu})
    await asyncio.to_thread((folder / "stamps.json").write_bytes, data)
    print("done", flush=True)


# ---- the bare relay -------------------------------------------------------------------------------------------


async def _relay(args: argparse.Namespace, folder: Path) -> None:
    """One target process: per room, the board meeting's model calls relayed token by token as SSE."""
    import ssl

    import httpx

    stamps = _Stamps()
    stamps.watch_collector()
    clients: dict[int, asyncio.StreamWriter] = {}
    connected = asyncio.Condition()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        index = int(head.split(b" ")[1].split(b"/")[2])
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\n\r\n")
        await writer.drain()
        async with connected:
            clients[index] = writer
            connected.notify_all()

    tls = ssl.create_default_context()  # made once: loading the CA bundle per client was 28% of the CPU

    def new_client() -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        return httpx.AsyncClient(timeout=60, limits=limits, verify=tls)

    # httpcore's pool scans every connection it holds for each request it places and each response it
    # closes: one client for hundreds of streams spends half the relay's CPU there (py-spy, 100 rooms). A
    # client per room keeps each pool to a room's few streams; "relay-one-client" measures the shared one.
    shared = new_client() if args.relay_pool == "shared" else None

    async def speak(index: int, speaker: str, out: asyncio.StreamWriter, http: httpx.AsyncClient) -> None:
        body = {
            "model": "bench",
            "stream": True,
            "max_tokens": args.tokens,
            "messages": [{"role": "user", "content": TASK.format(index=index)}],
        }
        times = stamps.chunks[f"{index}/{speaker}"]
        first, count = 0.0, 0
        async with http.stream("POST", f"{args.llm}/v1/chat/completions", json=body) as answer:
            async for line in answer.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choices = orjson.loads(line[6:]).get("choices")
                text = choices[0]["delta"].get("content") if choices else None
                if text:
                    now = time.monotonic()
                    times.append((now, len(text)))
                    first, count = first or now, count + 1
                    out.write(
                        b"event: turn_delta\r\ndata: "
                        + orjson.dumps({"speaker": speaker, "text": text})
                        + b"\r\n\r\n"
                    )
        stamps.calls[str(index)].append((first, time.monotonic(), count))

    async def room(index: int) -> None:
        out = clients[index]
        http = shared or new_client()
        for step in STEPS:
            await asyncio.gather(*(speak(index, speaker, out, http) for speaker in step))
        out.write(b"event: room_completed\r\ndata: {}\r\n\r\n")
        await out.drain()
        if http is not shared:
            await http.aclose()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    print(json.dumps({"url": base, "paths": [f"/rooms/{i}/events" for i in range(args.rooms)]}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    async with connected:
        await connected.wait_for(lambda: len(clients) == args.rooms)
    cpu = time.process_time()
    began = time.monotonic()
    rooms = []
    for index in range(args.rooms):
        await asyncio.sleep(max(0.0, began + args.spread * index / args.rooms - time.monotonic()))
        stamps.due[str(index)] = time.monotonic()
        rooms.append(asyncio.create_task(room(index)))
    outcomes = await asyncio.gather(*rooms, return_exceptions=True)
    await asyncio.to_thread(sys.stdin.readline)
    cpu = time.process_time() - cpu
    failed = [str(i) for i, outcome in enumerate(outcomes) if isinstance(outcome, BaseException)]
    await _report(folder, stamps, cpu, failed)
    for writer in clients.values():
        writer.close()
    server.close()
    if shared is not None:
        await shared.aclose()


# ---- the client process -----------------------------------------------------------------------------------------


async def _watch(url: str, path: str, index: int, ready: asyncio.Event, out: list[Any]) -> None:
    """One SSE client on a raw socket: stamps each delta frame's arrival, ends at the room's last event."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    ready.set()
    buffer = b""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            raise RuntimeError(f"room {index}: the stream ended early")
        now = time.monotonic()
        buffer += chunk
        *frames, buffer = buffer.split(b"\r\n\r\n")
        for frame in frames:  # chunked transfer-encoding: size lines may sit between frames
            if b"event: turn_delta" in frame:
                data = orjson.loads(frame[frame.index(b"data: ") + 6 :].split(b"\r\n")[0])
                out.append((index, data["speaker"], len(data["text"]), now))
            elif b"event: room_completed" in frame:
                writer.close()
                return


async def _clients(url: str, paths: list[str]) -> list[Any]:
    arrivals: list[Any] = []
    events = [asyncio.Event() for _ in paths]
    tasks = [asyncio.create_task(_watch(url, p, i, events[i], arrivals)) for i, p in enumerate(paths)]
    await asyncio.gather(*(e.wait() for e in events))
    print("ready", flush=True)
    await asyncio.gather(*tasks)
    return arrivals


# ---- one level --------------------------------------------------------------------------------------------------


def _spawn(*args: str, profile: str | None = None, src: str | None = None) -> subprocess.Popen[str]:
    """This script in a process of its own; with `profile`, under py-spy, its samples written there (raw);
    with `src`, importing Moot from that folder."""
    command = [sys.executable, __file__, *args]
    if profile:
        spy = str(Path(sys.executable).with_name("py-spy"))
        command = [spy, "record", "--nonblocking", "--format", "raw", "--rate", "100", "-o", profile, "--"]
        command += [sys.executable, __file__, *args]
    env = {**os.environ, "PYTHONPATH": src} if src else None
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def _line(process: subprocess.Popen[str]) -> str:
    """The target's next line, past py-spy's own notes on the same stdout."""
    assert process.stdout is not None
    while True:
        line = process.stdout.readline()
        if line == "" or (line.strip() and not line.startswith("py-spy>")):
            return line.strip()


async def _postgres(statement: str, url: str) -> None:
    import asyncpg
    from sqlalchemy import make_url

    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(plain)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _database_cpu() -> float:
    """CPU seconds of this host's PostgreSQL server so far: its processes', and for the postmaster also its
    ended children's (cutime and cstime), so backends that closed within the level still count."""
    stats: dict[int, list[str]] = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = path.read_text()
        except OSError:
            continue
        if text[text.index("(") + 1 : text.rindex(")")].startswith("postgres"):
            stats[int(path.parent.name)] = text.rpartition(")")[2].split()
    ticks = 0
    for fields in stats.values():
        ticks += int(fields[11]) + int(fields[12])
        if int(fields[1]) not in stats:  # the postmaster
            ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _most_at_once(calls: list[tuple[float, float, int]]) -> int:
    """The most model streams open at one time, over every room: how much the rooms' speeches overlapped."""
    marks = sorted([(first, 1) for first, _, _ in calls] + [(last, -1) for _, last, _ in calls])
    open_now = most = 0
    for _, change in marks:
        open_now += change
        most = max(most, open_now)
    return most


def level(label: str, rooms: int, args: argparse.Namespace, llm: subprocess.Popen[str]) -> dict[str, Any]:
    """A fresh target process with `rooms` rooms and their clients: latency, pace and CPU."""
    from moot.testing.cluster import cpu_seconds

    target, against, _ = label.partition(AGAINST)

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        common = ["--llm", args.llm_url, "--rooms", str(rooms), "--tokens", str(args.tokens)]
        common += ["--spread", str(args.spread), "--frame-ms", str(args.frame_ms), "--folder", tmp]
        if target == "postgresql":
            from sqlalchemy import make_url

            name = f"moot_bench_{os.getpid()}_{secrets.token_hex(3)}"
            asyncio.run(_postgres(f'CREATE DATABASE "{name}"', args.postgres))
            stack.callback(
                lambda: asyncio.run(
                    _postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', args.postgres)
                )
            )
            common += [
                "--database",
                make_url(args.postgres).set(database=name).render_as_string(hide_password=False),
            ]
        profile = None
        if args.profile:
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            profile = str(Path(args.profile) / f"{target}{'-against' if against else ''}-{rooms}.txt")
        kind = "_relay" if target.startswith("relay") else "_moot"
        common += [
            "--loop",
            "uvloop" if target == "relay-uvloop" else "asyncio" if kind == "_relay" else "auto",
        ]
        common += ["--relay-pool", "shared" if target == "relay-one-client" else "room"]
        service = _spawn(kind, *common, profile=profile, src=args.against if against else None)
        assert service.stdin is not None and service.stdout is not None
        started = json.loads(_line(service))
        client = _spawn("_clients", started["url"], ",".join(started["paths"]), tmp)
        assert client.stdin is not None and client.stdout is not None
        assert client.stdout.readline().strip() == "ready"
        began, model_cpu, database_cpu = time.monotonic(), cpu_seconds(llm.pid), _database_cpu()
        service.stdin.write("go\n")
        service.stdin.flush()
        assert client.wait(timeout=600) == 0
        wall = time.monotonic() - began
        model_cpu = cpu_seconds(llm.pid) - model_cpu
        database_cpu = _database_cpu() - database_cpu
        service.stdin.write("end\n")
        service.stdin.flush()
        assert _line(service) == "done"
        assert service.wait(timeout=60) == 0
        served = orjson.loads((folder / "stamps.json").read_bytes())
        arrivals = orjson.loads((folder / "arrivals.json").read_bytes())
        clients_cpu = float((folder / "clients_cpu").read_text())
    if served["failed"]:
        raise RuntimeError(f"{target}: rooms did not complete: {served['failed']}")
    got: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for index, speaker, chars, arrived in arrivals:
        got[f"{index}/{speaker}"].append((chars, arrived))
    latencies: list[float] = []
    for key, chunks in served["chunks"].items():
        frames, position, reached = got[key], 0, 0
        for stamped, chars in chunks:
            reached_needed = position + chars
            while reached < reached_needed:
                if not frames:
                    raise RuntimeError(f"{target}: text of {key} was lost")
                size, arrived = frames.pop(0)
                reached += size
            latencies.append(arrived - stamped)
            position = reached_needed
    gaps = []  # from a room's model call's last chunk to its next call's first: the wait between speeches
    for calls in served["calls"].values():
        spoken_until = None  # the last chunk of the calls begun so far
        for first, last, _ in sorted(calls):
            if spoken_until is not None and first > spoken_until:
                gaps.append(first - spoken_until)
            spoken_until = last if spoken_until is None else max(spoken_until, last)
    gaps.sort()
    starts = sorted(
        min(first for first, _, _ in calls) - served["due"][index]
        for index, calls in served["calls"].items()
        if index in served.get("due", {})
    )
    paces, room_paces = [], []
    meeting = len(STEPS) * (args.tokens - 1) / args.pace  # a room's speeches back to back at the model's pace
    for index, calls in served["calls"].items():
        took = sum(last - first for first, last, _ in calls)
        ideal = sum((count - 1) / args.pace for _, _, count in calls)
        paces.append(took / ideal)
        room_paces.append((max(last for _, last, _ in calls) - served["due"][index]) / meeting)
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    row = {
        "target": label,
        "rooms": rooms,
        "tokens": len(ms),
        "frames": len(arrivals),
        "tokens_per_s": len(ms) / wall,
        "p50": ms[len(ms) // 2],
        "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "max": ms[-1],
        "pace": max(paces),
        "room_pace": max(room_paces),
        "wall": wall,
        "cpu_us": served["cpu"] / len(ms) * 1e6,
        # the load's own processes, in cores over the level: the fake model server, the clients
        "others": (model_cpu + clients_cpu) / wall,
        "full_gcs": served.get("full_gcs", []),
        "database": database_cpu / wall,  # this host's PostgreSQL server, in cores over the level
        # the target's time in the collector (every generation) per second of its CPU time
        "collecting": served.get("collecting", 0.0) / served["cpu"] * 1000 if served["cpu"] else 0.0,
        "at_once": _most_at_once([call for calls in served["calls"].values() for call in calls]),
        # from when a room was due to start to its first model chunk: what starting a room takes
        "start_p90": starts[int(len(starts) * 0.9)] * 1000 if starts else 0.0,
        "gap_p90": gaps[int(len(gaps) * 0.9)] * 1000 if gaps else 0.0,
        "gap_max": gaps[-1] * 1000 if gaps else 0.0,
    }
    row["ok"] = row["p99"] < TARGET_P99_MS and max(row["pace"], row["room_pace"]) <= TARGET_PACE
    return row


# ---- the orchestra ----------------------------------------------------------------------------------------------


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    from uvicorn import Config

    return Config(app="unused", loop=name).get_loop_factory()


def _target_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    for name in ("--llm", "--folder", "--database", "--loop"):
        parser.add_argument(name)
    parser.add_argument("--rooms", type=int)
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--spread", type=float)
    parser.add_argument("--frame-ms", type=int)
    parser.add_argument("--relay-pool", choices=["room", "shared"])
    return parser.parse_args(argv)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("_moot", "_relay"):
        args = _target_args(sys.argv[2:])
        run = _moot if sys.argv[1] == "_moot" else _relay
        # Moot's targets run on the loop `moot serve` runs on (uvicorn's "auto": uvloop where installed, as
        # uvicorn[standard] installs it); the relay on asyncio's own, as a plain script does, or on uvloop.
        with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
            profile = os.environ.get("MOOT_BENCH_PROFILE")  # a file for the target's cProfile statistics
            if profile:
                import cProfile

                cProfile.runctx("runner.run(run(args, Path(args.folder)))", globals(), locals(), profile)
            else:
                runner.run(run(args, Path(args.folder)))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_clients":
        url, paths, folder = sys.argv[2:5]
        with asyncio.Runner(loop_factory=_loop_factory("uvloop")) as runner:  # the load's own cost, kept low
            arrivals = runner.run(_clients(url, paths.split(",")))
        (Path(folder) / "arrivals.json").write_bytes(orjson.dumps(arrivals))
        (Path(folder) / "clients_cpu").write_text(str(time.process_time()))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", nargs="*", default=["relay", "sqlite", "postgresql"])
    parser.add_argument("--rooms", type=int, nargs="*", help="levels to run (default: ramp, then narrow)")
    parser.add_argument("--pace", type=float, default=50.0, help="tokens per second of each model stream")
    parser.add_argument("--tokens", type=int, default=100, help="tokens in each reply")
    parser.add_argument("--frame-ms", type=int, default=50, help="Moot joins a turn's deltas over this")
    parser.add_argument("--max-rooms", type=int, default=LEVELS[-1])
    parser.add_argument("--postgres", default=os.environ.get("MOOT_TEST_POSTGRES_URL", POSTGRES))
    parser.add_argument(
        "--profile",
        metavar="FOLDER",
        help="run each target under py-spy (pip install py-spy), its samples in FOLDER/TARGET-ROOMS.txt "
        "(raw: one stack a line, for flamegraph.pl or a sum by function); its CPU then includes the sampling",
    )
    parser.add_argument(
        "--against",
        metavar="SRC",
        help="another tree's src folder (`git archive REV src | tar -x -C /tmp/old`): each Moot target runs "
        "on it too, right after this tree's, at every level",
    )
    args = parser.parse_args()
    if args.against:
        args.targets = [x for t in args.targets for x in ([t] if t.startswith("relay") else [t, t + AGAINST])]
    args.spread = args.tokens / args.pace  # rooms start over one turn's length
    llm = subprocess.Popen(
        [
            sys.executable, "-m", "moot.testing.servers", "--port", "0",
            "--reply-tokens", str(args.tokens), "--token-delay", str(1 / args.pace), "--loop", "uvloop",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert llm.stdout is not None
    args.llm_url = llm.stdout.readline().strip()
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()

    def measure(target: str, rooms: int) -> bool:
        row = level(target, rooms, args, llm)
        rows.append(row)
        print(
            f"{target} {rooms} rooms: p99 {row['p99']:.1f} ms, pace {row['pace']:.3f}, "
            f"room pace {row['room_pace']:.3f}, "
            f"{row['cpu_us']:.0f} µs CPU/token, model server + clients {row['others']:.2f} cores, "
            f"PostgreSQL's server {row['database']:.2f} cores, streams at once {row['at_once']}, "
            f"start p90 {row['start_p90']:.0f} ms, collector {row['collecting']:.0f} ms per CPU second, "
            f"{'ok' if row['ok'] else 'MISSED'}",
            file=sys.stderr,
            flush=True,
        )
        return bool(row["ok"])

    try:
        # Targets take turns level by level, so a change in the machine's load falls on all of them alike.
        if args.rooms:
            for rooms in args.rooms:
                for target in args.targets:
                    measure(target, rooms)
        else:
            passed = dict.fromkeys(args.targets, 0)
            failed = dict.fromkeys(args.targets, 0)
            for rooms in [n for n in LEVELS if n <= args.max_rooms]:
                for target in [t for t in args.targets if not failed[t]]:
                    if measure(target, rooms):
                        passed[target] = rooms
                    else:
                        failed[target] = rooms
            for _ in range(2):  # then halve the gap between the last level held and the first missed, twice
                for target in [t for t in args.targets if failed[t]]:
                    middle = (passed[target] + failed[target]) // 2
                    if middle in (passed[target], failed[target]):
                        continue
                    if measure(target, middle):
                        passed[target] = middle
                    else:
                        failed[target] = middle
    finally:
        llm.terminate()
        llm.wait()
    load_after = os.getloadavg()
    command = "python bench/service_bench.py " + " ".join(sys.argv[1:])
    print(
        f"`{command.strip()}`: {os.cpu_count()} CPUs, load average {load_before[0]:.2f} before and "
        f"{load_after[0]:.2f} after; pace {args.pace:g} tokens/s per model stream, {args.tokens}-token "
        f"replies, rooms started over {args.spread:g} s, Moot's frames {args.frame_ms} ms\n"
    )
    print(
        "| target | rooms | tokens | frames | tokens/s | p50 ms | p99 ms | max ms | worst pace | worst room pace "
        "| CPU µs/token "
        "| model server + clients, cores | PostgreSQL server, cores | collector, ms per CPU s | full GCs (longest ms) "
        "| gap between speeches p90 / max ms | streams at once | start p90 ms | ok |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|")
    for r in sorted(rows, key=lambda r: (args.targets.index(r["target"]), r["rooms"])):
        print(
            f"| {r['target']} | {r['rooms']} | {r['tokens']} | {r['frames']} | {r['tokens_per_s']:.0f} "
            f"| {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['pace']:.3f} | {r['room_pace']:.3f} "
            f"| {r['cpu_us']:.0f} "
            f"| {r['others']:.2f} | {r['database']:.2f} | {r['collecting']:.0f} | {_collections(r['full_gcs'])} "
            f"| {r['gap_p90']:.0f} / {r['gap_max']:.0f} | {r['at_once']} | {r['start_p90']:.0f} "
            f"| {'yes' if r['ok'] else 'no'} |"
        )
    print()
    for target in args.targets:
        held = [r for r in rows if r["target"] == target and r["ok"]]
        best = max(held, key=lambda r: r["rooms"]) if held else None
        print(
            f"- {target}: most rooms held {best['rooms'] if best else 'none of these'}"
            + (f", {best['cpu_us']:.0f} µs CPU per delivered token there" if best else "")
        )


if __name__ == "__main__":
    main()
