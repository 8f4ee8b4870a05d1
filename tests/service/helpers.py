"""What service tests share: a live server's handle, its settings, and a few HTTP helpers."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography.fernet import Fernet
from fastapi import FastAPI

from moot.service import create_app
from moot.settings import Settings
from moot.testing.servers import FakeLLMServer
from store.fixtures import Database

ADMIN_TOKEN = "moot_test-admin-token"
LLM_KEY = "sk-service-test-key-0123456789"
CONCLUSION = (
    '{"summary": "done", "decision_advice": "go", "consensus_points": ["a"], "dissent_points": ["b"]}'
)


@dataclass
class LiveServer:
    """A running app: where it listens, who administers it, and how to talk to it."""

    url: str
    app: FastAPI
    settings: Settings
    database: Database
    admin_token: str = ADMIN_TOKEN
    _clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    def client(self, token: str | None = None, **options: Any) -> httpx.AsyncClient:
        """An httpx client on the API's base URL, with the token as bearer when given."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # verify=False: these are plain-HTTP loopback servers, and loading the CA bundle costs 35 ms a client
        options = {"base_url": self.api, "timeout": 10.0, "verify": False, **options}
        client = httpx.AsyncClient(headers=headers, **options)
        self._clients.append(client)
        return client

    async def new_user(self, name: str | None = None, role: str = "member") -> str:
        """Adds a user through the API (named `name`, else a fresh name) and returns their token."""
        async with self.client(self.admin_token) as http:
            answer = await http.post("/users", json={"name": name or unique("user"), "role": role})
        assert answer.status_code == 201, answer.text
        token: str = answer.json()["token"]
        return token


_numbers = itertools.count(1)


def unique(prefix: str) -> str:
    """A name no other test of the session uses: tests on a shared server keep apart by their users."""
    return f"{prefix}-{next(_numbers)}"


@asynccontextmanager
async def running_server(
    database: Database, settings: Settings, *, send_buffer: int | None = None
) -> AsyncIterator[LiveServer]:
    """The app on `database` with `settings`, served on uvicorn in this event loop until the block ends.

    `send_buffer`: the kernel's send buffer of each connection, in bytes (small: a client that stops
    reading blocks the server's sends after that much).
    """
    app = create_app(settings, store=database.store())
    url, stop = await serve(app, send_buffer=send_buffer)
    live = LiveServer(url, app, settings, database)
    try:
        yield live
    finally:
        for client in live._clients:
            await client.aclose()
        await stop()


async def serve(app: FastAPI, *, send_buffer: int | None = None) -> tuple[str, Callable[[], Any]]:
    """Runs `app` on uvicorn on a free loopback port in this event loop; returns its URL and a stopper."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
        ws="websockets-sansio",
        log_config=None,  # uvicorn's records go to the root logger, where caplog sees them
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.005)
    listener = server.servers[0].sockets[0]
    if send_buffer is not None:  # the connections it accepts inherit it
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    port = listener.getsockname()[1]

    async def stop() -> None:
        server.should_exit = True
        await task

    return f"http://127.0.0.1:{port}", stop


def make_settings(tmp_path: Path, **changes: Any) -> Settings:
    """Settings of a test server: its own data directory and secret key, the known admin token."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "admin_token": ADMIN_TOKEN,
        "secret_key": Fernet.generate_key().decode(),
        "block_private_urls": False,
        "max_body_bytes": 200_000,
        **changes,
    }
    return Settings(**values)


def reply(body: dict[str, Any]) -> str:
    """Replies naming the speaker, and a valid conclusion when one is asked for."""
    messages = body.get("messages") or [{"content": ""}]
    last = messages[-1]["content"]
    last = last if isinstance(last, str) else last[0]["text"]
    if "JSON" in last:
        return CONCLUSION
    system = body.get("system") or messages[0]["content"]
    system = system if isinstance(system, str) else system[0]["text"]
    name = re.match(r"You are (\w+)", system)
    return f"{name.group(1) if name else 'someone'} thinks we should act now"


async def provider_for(
    http: httpx.AsyncClient,
    fake: FakeLLMServer,
    *,
    name: str = "local",
    type: str = "openai",
    key: str = LLM_KEY,
) -> dict[str, Any]:
    """Stores a provider pointing at the fake server; returns its public form."""
    base_url = fake.url + ("/v1" if type == "openai" else "")
    body = {"name": name, "type": type, "base_url": base_url, "default_model": "fake-model", "api_key": key}
    answer = await http.post("/providers", json=body)
    assert answer.status_code == 201, answer.text
    provider: dict[str, Any] = answer.json()
    return provider


async def wait_for(
    http: httpx.AsyncClient, room_id: str, *states: str, seconds: float = 300.0
) -> dict[str, Any]:
    """Polls GET /rooms/{id} until its status is one of `states`; `seconds` only bounds a hang."""
    async with asyncio.timeout(seconds):
        while True:
            room: dict[str, Any] = (await http.get(f"/rooms/{room_id}")).json()
            if room["status"] in states:
                return room
            await asyncio.sleep(0.05)


# ---- reading SSE streams ----------------------------------------------------------------------------------

Frame = dict[str, Any]
STREAM_TIMEOUT = httpx.Timeout(10.0, read=30.0)


def frames(buffer: bytes) -> tuple[list[Frame], list[str], bytes]:
    """Complete SSE frames in `buffer` (data parsed, plus `_id` and `_event`), comments, and the rest."""
    *blocks, rest = buffer.split(b"\r\n\r\n")
    parsed: list[Frame] = []
    comments: list[str] = []
    for block in blocks:
        fields: dict[str, str] = {}
        for line in block.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name == "":
                comments.append(value.strip())
            else:
                fields[name] = value.removeprefix(" ")
        if "data" in fields:
            parsed.append(
                {**json.loads(fields["data"]), "_id": fields.get("id"), "_event": fields.get("event")}
            )
    return parsed, comments, rest


async def read_sse(
    http: httpx.AsyncClient,
    room_id: str,
    *,
    last_id: int | None = None,
    cut_after: int | None = None,
    rng: random.Random | None = None,
) -> tuple[list[Frame], bool]:
    """Reads the room's SSE stream to its end, or cuts it once `cut_after` whole frames came (and then,
    with `rng`, loses a random part of what came last, as a dropped connection does).

    Returns the complete frames and whether the stream reached its end. Cutting by count, not by time,
    holds however fast or slow the machine is.
    """
    headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
    async with http.stream(
        "GET", f"/rooms/{room_id}/events", headers=headers, timeout=STREAM_TIMEOUT
    ) as answer:
        assert answer.status_code == 200, await answer.aread()
        assert answer.headers["content-type"].startswith("text/event-stream")
        buffer, ended = b"", True
        async for chunk in answer.aiter_raw():
            buffer += chunk
            if cut_after is not None and buffer.count(b"\r\n\r\n") >= cut_after:
                ended = False
                break
    if not ended and rng is not None:
        buffer = buffer[: max(0, len(buffer) - rng.randrange(400))]  # the tail was lost with the line
    return frames(buffer)[0], ended
