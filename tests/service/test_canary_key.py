"""A canary key echoed by a model in every way a model can echo it shows up nowhere a person could see it.

The fake provider echoes the key it was sent in an error body, in an error event mid-stream, in a response
header, in a redirect's location and body, and as the words of a refused key. The room runs through all of
it on a live server; then every response, SSE event, export, log line and database cell is searched.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from moot.service.logs import FORMAT, ScrubSecrets
from moot.testing.servers import FakeLLMServer, Fault

from .helpers import LiveServer, provider_for, reply, wait_for

# No known key shape (sk-..., Bearer ...): only the server remembering the key it sent can find it.
CANARY = "canary-3b9e71d4a5f08c26e1"

ECHOES = [
    Fault.status(500, message="The server had an error with key {key}"),
    Fault.stream_error(after_chunks=2, message="upstream refused the key {key} mid-stream"),
    Fault.status(503, headers=[("x-error-detail", "key {key} is over its quota")]),
    Fault.redirect("/v1/echo/{key}?api_key={key}", message="Moved: see /v1/echo/{key}"),
    Fault.stream_error(after_chunks=1, message="{key}"),
    Fault.status(400, body={"error": {"message": "bad request from {key}", "type": "invalid_request_error"}}),
    Fault.status(429, message="Rate limit reached for key {key}", retry_after=0),
    Fault.status(401, message="Incorrect API key provided: {key}."),
]


@pytest.fixture
def echoing_llm() -> Iterator[FakeLLMServer]:
    """A provider that takes the canary key and echoes it back in each of its faults."""
    with FakeLLMServer(api_key=CANARY, reply=reply, reply_tokens=8) as fake:
        yield fake


@pytest.fixture
def server_log() -> Iterator[io.StringIO]:
    """The server's log lines as `moot serve` writes them: every record at DEBUG, through its filter."""
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(ScrubSecrets())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


class _Responses:
    """Every response a client got, read whole (SSE streams of finished rooms end)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        self.seen.append(f"{response.status_code} {dict(response.headers)} {response.text}")


def _room(models: dict[str, Any]) -> dict[str, Any]:
    fast = {"max_retries": 2, "retry_backoff": 0, "retry_max_wait": 0}
    return {
        "task": "Should we rotate every key this week?",
        "protocol": "board",
        "max_rounds": 2,
        "models": {name: {**model, **fast} for name, model in models.items()},
        "agents": [
            {"name": "Chair", "role": "moderator", "model": "lean"},
            {"name": "Ana", "persona": "a careful engineer", "model": "lean"},
            {"name": "Ben", "persona": "a product lead", "model": "sdk"},
            {"name": "Cy", "persona": "a security officer", "model": "claude"},
        ],
    }


async def test_hardening_1_a_canary_key_echoed_by_a_model_appears_nowhere(
    server: LiveServer, echoing_llm: FakeLLMServer, server_log: io.StringIO
) -> None:
    responses = _Responses()
    async with server.client(await server.new_user(), event_hooks={"response": [responses]}) as http:
        await provider_for(http, echoing_llm, key=CANARY)
        await provider_for(http, echoing_llm, name="claude", type="anthropic", key=CANARY)
        models = {
            "lean": {"provider": "local", "model": "fake-model"},
            "sdk": {"provider": "local", "model": "fake-model", "transport": "sdk"},
            "claude": {"provider": "claude", "model": "fake-model"},
        }
        answer = await http.post("/rooms", json=_room(models))
        assert answer.status_code == 201, answer.text
        room = answer.json()
        echoing_llm.faults.extend(ECHOES)
        await http.post(f"/rooms/{room['id']}/run")
        await wait_for(http, room["id"], "completed", "error")
        for path in ("", "/messages", "/export", "/export?format=json", "/export?format=md", "/events"):
            await http.get(f"/rooms/{room['id']}{path}")
        await http.get("/rooms")
        await http.get(f"{server.url}/metrics")

    assert not echoing_llm.faults, "every echo was served"
    everything = "\n".join(responses.seen)
    assert "upstream refused the key *** mid-stream" in everything  # the echoes reached the room, scrubbed
    assert "Rate limit reached for key ***" in everything
    assert CANARY not in everything
    logged = server_log.getvalue()
    assert "/api/v1/rooms" in logged  # the server's log lines were captured
    assert CANARY not in logged
    await _assert_not_stored(server, CANARY)


async def _assert_not_stored(server: LiveServer, secret: str) -> None:
    """Searches every column of every table of the server's database."""
    database = server.database
    engine = create_async_engine(database.url, connect_args=database.connect_args)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            assert {"rooms", "events", "entries", "providers"} <= set(tables)
            for table in tables:
                for row in (await conn.execute(text(f'SELECT * FROM "{table}"'))).all():
                    for value in row:
                        raw = value if isinstance(value, bytes) else str(value).encode()
                        assert secret.encode() not in raw, (table, row)
    finally:
        await engine.dispose()
