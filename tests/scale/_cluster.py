"""A scaled-out deployment in real processes: Redis, PostgreSQL (a database of its own), `moot serve` and
`moot worker` subprocesses, and SSE clients that follow a room to its end across reconnections.

Redis is a `redis-server` of the test's own (no disk), so a test can kill and restart it. Without
redis-server or PostgreSQL the tests skip, or fail where CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from moot.store import Store
from store.fixtures import POSTGRES_URL

REDIS_SERVER = os.environ.get("MOOT_TEST_REDIS_SERVER", "/usr/bin/redis-server")
ADMIN = "moot_scale-admin-token"
SECRET_KEY = "k1yC2aXUOEnCLAE3G3o9x3b4-UTKZr2iKuLg0pEqB6A="  # a Fernet key for the test's processes only
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """redis-server on a free port, keeping nothing on disk: killed and started again, it is empty."""

    def __init__(self, folder: Path) -> None:
        if not Path(REDIS_SERVER).exists() and shutil.which("redis-server") is None:
            missing(f"redis-server is not installed ({REDIS_SERVER})")
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = REDIS_SERVER if Path(REDIS_SERVER).exists() else shutil.which("redis-server") or ""
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, 20, "redis-server to listen")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def new_database() -> tuple[str, Callable[[], Any]]:
    """A PostgreSQL database of its own (the processes share it by URL), and what drops it."""
    name = f"moot_scale_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_async_engine(POSTGRES_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    except (OSError, DBAPIError) as exc:
        url = make_url(POSTGRES_URL).render_as_string(hide_password=True)
        missing(f"PostgreSQL at {url} cannot be reached ({type(exc).__name__}: {exc})")
    finally:
        await admin.dispose()

    async def drop() -> None:
        engine = create_async_engine(POSTGRES_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            await engine.dispose()

    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False), drop


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    port: int | None = None

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Deployment:
    """The processes of one test; `stop()` ends them all."""

    folder: Path
    database_url: str
    redis: RedisServer
    takeover: float = 5.0
    apis: list[Process] = field(default_factory=list)
    workers: list[Process] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MOOT_DATA_DIR": str(self.folder / "data"),
            "MOOT_DATABASE_URL": self.database_url,
            "MOOT_REDIS_URL": self.redis.url,
            "MOOT_ADMIN_TOKEN": ADMIN,
            "MOOT_SECRET_KEY": SECRET_KEY,
            "MOOT_TAKEOVER_SECONDS": str(self.takeover),
            "PYTHONUNBUFFERED": "1",
        }

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen(
                [sys.executable, "-m", "moot.cli", *args],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start_api(self) -> Process:
        port = free_port()
        name = f"api{len(self.apis)}"
        process = Process(
            name, self._spawn(name, ["serve", "--port", str(port), "--log-level", "warning"]), port
        )
        self.apis.append(process)
        wait_port(port, 60, f"{name} to listen")
        return process

    def start_worker(self, *, metrics: bool = True) -> Process:
        """A worker, serving /metrics on a port of its own (`process.port`) unless `metrics` is False."""
        name = f"worker{len(self.workers)}"
        port = free_port() if metrics else None
        args = ["worker", "--metrics-port", str(port)] if port is not None else ["worker"]
        process = Process(name, self._spawn(name, args), port)
        self.workers.append(process)
        return process

    def wait_ready(self, process: Process, timeout: float = 60) -> None:
        """Until the worker says it is ready (it listens for control words and takes run requests)."""
        log = self.folder / f"{process.name}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready " in log.read_text(errors="replace"):
                return
            if not process.alive:
                raise AssertionError(f"{process.name} exited: {self.logs()}")
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {process.name} to be ready")

    def api_base(self, process: Process) -> str:
        return f"http://127.0.0.1:{process.port}/api/v1"

    def live_apis(self) -> list[Process]:
        return [api for api in self.apis if api.alive]

    def worker_by_pid(self, pid: int) -> Process | None:
        return next((w for w in self.workers if w.proc.pid == pid), None)

    def stop(self) -> None:
        for process in [*self.apis, *self.workers]:
            if process.alive:
                process.proc.send_signal(signal.SIGTERM)
        for process in [*self.apis, *self.workers]:
            try:
                process.proc.wait(30)
            except subprocess.TimeoutExpired:
                process.proc.kill()
                process.proc.wait(10)

    def logs(self) -> str:
        return "\n".join(
            f"---- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.folder.glob("*.log"))
        )


@contextlib.asynccontextmanager
async def deployment(
    folder: Path, *, apis: int = 2, workers: int = 2, takeover: float = 5.0, metrics: bool = True
) -> AsyncIterator[Deployment]:
    """Redis, a fresh database, `apis` servers and `workers` workers, all ready; stopped afterwards."""
    redis = RedisServer(folder)
    url, drop = await new_database()
    redis.start()
    deployed = Deployment(folder, url, redis, takeover=takeover)
    try:
        await asyncio.to_thread(deployed.start_api)  # the first migrates the database and adds the admin
        for _ in range(apis - 1):
            await asyncio.to_thread(deployed.start_api)
        for _ in range(workers):
            deployed.start_worker(metrics=metrics)
        for process in deployed.workers:
            await asyncio.to_thread(deployed.wait_ready, process)
        yield deployed
    finally:
        await asyncio.to_thread(deployed.stop)
        redis.kill()
        await drop()


async def worker_pid(store: Store, room_id: str) -> int | None:
    """The pid named by the room's lease: which worker runs it now."""
    lease = await store.lease(room_id)
    if lease is None:
        return None
    pid = lease.owner.split(":")[-2]
    return int(pid) if pid.isdecimal() else None


@dataclass
class Watcher:
    """One SSE client of one room, following it to its end through any live API process.

    `texts` is each turn's text as the page shows it: deltas joined, emptied when the turn starts (again)
    and when it restarts with `discard`; `completed` the text each turn_completed carried. `seqs` are every seq received, in order.
    """

    room_id: str
    deployment: Deployment
    seqs: list[int] = field(default_factory=list)
    texts: dict[str, list[str]] = field(default_factory=dict)
    completed: dict[str, str] = field(default_factory=dict)
    completions: list[str] = field(default_factory=list)
    connections: int = 0
    trail: list[tuple[int, int, str, str]] = field(default_factory=list)  # (connection, seq, type, turn)
    streaming: asyncio.Event = field(default_factory=asyncio.Event)  # a turn in flight has sent text
    done: bool = False

    async def follow(self, on_event: Callable[[Watcher, dict[str, Any]], None] | None = None) -> None:
        last = 0
        while not self.done:
            apis = self.deployment.live_apis()
            if not apis:
                raise AssertionError(f"room {self.room_id}: no API process left to watch it through")
            api = random.choice(apis)
            self.connections += 1
            headers = {"authorization": f"Bearer {ADMIN}", "Last-Event-ID": str(last)}
            try:
                async with (
                    httpx.AsyncClient(timeout=httpx.Timeout(10, read=60)) as http,
                    http.stream(
                        "GET", f"{self.deployment.api_base(api)}/rooms/{self.room_id}/events", headers=headers
                    ) as response,
                ):
                    if response.status_code != 200:
                        await asyncio.sleep(0.2)
                        continue
                    event_type, data = "", ""
                    async for line in response.aiter_lines():
                        if line.startswith("event:"):
                            event_type = line[6:].strip()
                        elif line.startswith("data:"):
                            data = line[5:].strip()
                        elif line == "" and data:
                            if event_type != "reconnect":
                                event = json.loads(data)
                                last = max(last, int(event["seq"]))
                                self._take(event)
                                if on_event is not None:
                                    on_event(self, event)
                            event_type, data = "", ""
            except (httpx.TransportError, httpx.StreamError):
                pass
            if not self.done:
                await asyncio.sleep(0.1)  # the stream ended before the room did: reconnect after `last`

    def _take(self, event: dict[str, Any]) -> None:
        if self.seqs and event["seq"] <= self.seqs[-1]:
            raise AssertionError(f"room {self.room_id}: seq {event['seq']} after {self.seqs[-1]}")
        self.seqs.append(event["seq"])
        kind = event["type"]
        if kind != "turn_delta":
            self.trail.append((self.connections, event["seq"], kind, str(event.get("turn_id", ""))))
        if kind == "turn_started":  # as the page does: a turn that starts (again) has no text yet
            self.texts[event["turn_id"]] = []
        elif kind == "turn_delta":
            self.texts.setdefault(event["turn_id"], []).append(event["text"])
            self.streaming.set()
        elif kind == "turn_restarted" and event.get("discard", True):
            self.texts.pop(event["turn_id"], None)
        elif kind == "turn_completed":
            self.completed[event["turn_id"]] = event["text"]
            self.completions.append(event["turn_id"])
        elif kind in ("room_completed", "room_failed"):
            self.done = True

    def text(self, turn_id: str) -> str:
        return "".join(self.texts.get(turn_id, []))
