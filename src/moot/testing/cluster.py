"""A scaled-out deployment in real processes, for tests and benchmarks of the mode (decision 0010).

Redis is a `redis-server` of its own (nothing on disk), so a test can kill it and start it again empty;
PostgreSQL gets a fresh database, dropped afterwards; `moot serve` and `moot worker` run as subprocesses
of this Python, each logging to a file of its own in `folder`. `Watcher` is an SSE client that follows
one room to its end through any live API process, reconnecting with `Last-Event-ID`.

    async with deployment(folder, admin_url="postgresql+asyncpg://postgres@127.0.0.1/postgres") as deployed:
        api = deployed.api_base(deployed.apis[0])          # http://127.0.0.1:PORT/api/v1, token ADMIN
        ...

`TcpProxy` stands between a process and a server (PostgreSQL, Redis) and can cut the line: connections
close and new ones are refused until it is mended, as when the server's host is lost.

Without redis-server, or with PostgreSQL out of reach, `ClusterUnavailable` says which.
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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

__all__ = [
    "ADMIN",
    "ClusterUnavailable",
    "CpuQuota",
    "Deployment",
    "Process",
    "RedisServer",
    "TcpProxy",
    "Watcher",
    "board",
    "cpu_seconds",
    "deployment",
    "free_port",
    "new_database",
    "redis_binary",
    "wait_port",
]

ADMIN = "moot_scale-admin-token"
"""The admin token the deployment's API processes accept (`Authorization: Bearer ADMIN`)."""
SECRET_KEY = "k1yC2aXUOEnCLAE3G3o9x3b4-UTKZr2iKuLg0pEqB6A="  # a Fernet key for these processes only


def board(seed: int, tokens_per_second: float, rounds: int = 2) -> dict[str, Any]:
    """A board meeting of a chair and two members on the simulated model: the rooms the mode is tried on."""
    return {
        "task": "Should our 40-person studio move to a four-day week?",
        "protocol": "board",
        "max_rounds": rounds,
        "models": {"sim": {"provider": "simulated", "seed": seed, "tokens_per_second": tokens_per_second}},
        "default_model": "sim",
        "agents": [
            {"name": "Chair", "role": "moderator", "persona": "a neutral chair"},
            {"name": "Ana", "persona": "a cautious engineer"},
            {"name": "Ben", "persona": "an ambitious product lead"},
        ],
    }


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ClusterUnavailable(RuntimeError):
    """Something the deployment needs is missing here: redis-server, or a PostgreSQL to make a database in."""


class CpuQuota:
    """A cgroup of its own that caps the processes put in it at `cores` of CPU time (Linux, as root).

    For benchmarks on a machine with few cores: capped at a fixed share each, one worker against two reads
    what a second worker adds, where otherwise every process would compete for the same cores. cgroup v2's
    `cpu.max` where the unified hierarchy is mounted at /sys/fs/cgroup, else v1's `cpu.cfs_quota_us`.
    ClusterUnavailable when neither can be written here.
    """

    PERIOD_US = 100_000
    ROOT = Path("/sys/fs/cgroup")

    def __init__(self, name: str, cores: float) -> None:
        if cores <= 0:
            raise ValueError(f"a CPU quota must be more than 0 cores, not {cores}")
        quota = max(1000, round(cores * self.PERIOD_US))
        v2 = (self.ROOT / "cgroup.controllers").exists()
        self.path = self.ROOT / name if v2 else self.ROOT / "cpu" / name
        try:
            if v2:
                (self.ROOT / "cgroup.subtree_control").write_text("+cpu")
            self.path.mkdir(exist_ok=True)
            if v2:
                (self.path / "cpu.max").write_text(f"{quota} {self.PERIOD_US}")
            else:
                (self.path / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        except OSError as exc:
            raise ClusterUnavailable(
                f"cannot cap CPU here ({self.path}: {exc}); run as root on Linux with cgroups mounted"
            ) from exc
        self.cores = quota / self.PERIOD_US

    def add(self, pid: int) -> None:
        """Moves the process (all its threads) into the group."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled_seconds(self) -> float:
        """How long the group's processes waited, in all, because they had used up their quota."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "throttled_usec":
                return int(value) / 1e6
            if key == "throttled_time":  # v1: nanoseconds
                return int(value) / 1e9
        return 0.0

    def close(self) -> None:
        """Moves what is left back to the parent group and removes this one."""
        with contextlib.suppress(OSError):
            for pid in (self.path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (self.path.parent / "cgroup.procs").write_text(pid)
        for _ in range(50):  # a process that just exited leaves the group a moment later
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


def redis_binary() -> str:
    """The redis-server to start: MOOT_TEST_REDIS_SERVER, else /usr/bin/redis-server, else one on PATH."""
    configured = os.environ.get("MOOT_TEST_REDIS_SERVER", "/usr/bin/redis-server")
    found = configured if Path(configured).exists() else shutil.which("redis-server")
    if found is None:
        raise ClusterUnavailable(f"redis-server is not installed ({configured}, nor on PATH)")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, timeout: float, what: str) -> None:
    """Returns once 127.0.0.1:`port` accepts connections; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class RedisServer:
    """redis-server on a free port, keeping nothing on disk: killed and started again, it is empty."""

    def __init__(self, folder: Path) -> None:
        self.binary = redis_binary()
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
            ],
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


class TcpProxy:
    """Forwards TCP connections from a port of its own on 127.0.0.1 to `host:port`, in the running loop.

    `cut()` closes every connection and refuses new ones; `mend()` listens again on the same port.

        async with TcpProxy("127.0.0.1", 5432) as proxy:      # connect to 127.0.0.1:proxy.port instead
            await proxy.cut()
            ...
            await proxy.mend()
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.target_port = port
        self.port = free_port()
        self.connections = 0  # accepted while mended, in all
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> TcpProxy:
        await self.mend()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.cut()

    @property
    def is_cut(self) -> bool:
        return self._server is None

    async def mend(self) -> None:
        """Listens (again) and forwards."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        """Refuses new connections and closes the open ones, both ways, at once."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._open.update((writer, upstream))
        try:
            await asyncio.gather(self._pipe(reader, upstream), self._pipe(upstream_reader, writer))
        finally:
            for end in (writer, upstream):
                self._open.discard(end)
                end.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()


async def new_database(
    admin_url: str, prefix: str = "moot_scale"
) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A PostgreSQL database of its own, made through `admin_url`: its URL, and what drops it."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_async_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    except (OSError, DBAPIError) as exc:
        shown = make_url(admin_url).render_as_string(hide_password=True)
        raise ClusterUnavailable(
            f"PostgreSQL at {shown} cannot be reached ({type(exc).__name__}: {exc})"
        ) from None
    finally:
        await admin.dispose()

    async def drop() -> None:
        engine = create_async_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            await engine.dispose()

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


@dataclass
class Process:
    """One `moot serve` or `moot worker` subprocess; `port` is its HTTP port (a worker's /metrics), if any."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int | None = None

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Deployment:
    """The processes of one deployment; `stop()` ends them all. Each logs to `folder/<name>.log`."""

    folder: Path
    database_url: str
    redis: RedisServer
    takeover: float = 5.0
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. MOOT_ settings for every process
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
            **self.extra_env,
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
        """A `moot serve` on a free port; returns once it listens."""
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
        """SIGTERM to every process, then waits (SIGKILL for one that takes over 30 s)."""
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
        """The end of every process's log, for an assertion's message."""
        return "\n".join(
            f"---- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.folder.glob("*.log"))
        )


@contextlib.asynccontextmanager
async def deployment(
    folder: Path,
    *,
    admin_url: str,
    apis: int = 2,
    workers: int = 2,
    takeover: float = 5.0,
    metrics: bool = True,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Deployment]:
    """Redis, a fresh database made through `admin_url`, `apis` servers and `workers` workers, all ready;
    stopped, and the database dropped, afterwards. `env` is added to every process's environment.
    ClusterUnavailable when redis-server or PostgreSQL is missing."""
    redis = RedisServer(folder)
    url, drop = await new_database(admin_url)
    redis.start()
    deployed = Deployment(folder, url, redis, takeover=takeover, extra_env=dict(env or {}))
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


@dataclass
class Watcher:
    """One SSE client of one room, following it to its end through any live API process.

    `texts` is each turn's text as the page shows it: deltas joined, emptied when the turn starts (again)
    and when it restarts with `discard`; `completed` the text each turn_completed carried. `seqs` are
    every seq received, in order; a seq that does not grow raises AssertionError.
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
        """Reads the room's events until room_completed or room_failed; `on_event` sees each one."""
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
        """The turn's text as the page shows it now."""
        return "".join(self.texts.get(turn_id, []))
