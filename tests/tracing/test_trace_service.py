"""The HTTP request, or the WebSocket command, that starts a run is the parent of the run's span, within the
client's own trace."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import websockets
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from moot.testing.servers import FakeLLMServer
from service.helpers import LLM_KEY, make_settings, provider_for, reply, running_server
from store.fixtures import sqlite_database

from .spans import Spans

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def _continues_the_clients_trace(span: ReadableSpan) -> None:
    """A server span in the trace the client's `traceparent` named, its parent the client's span."""
    assert span.kind == SpanKind.SERVER and span.context is not None
    assert format(span.context.trace_id, "032x") == CLIENT_TRACE  # the client's trace goes on
    assert span.parent is not None and format(span.parent.span_id, "016x") == CLIENT_SPAN


def _room() -> dict[str, Any]:
    agents = [{"name": "Chair", "role": "moderator"}, {"name": "Ana"}, {"name": "Ben"}]
    return {
        "task": "Open-source it?",
        "protocol": "board",
        "max_rounds": 1,
        "agents": agents,
        "default_model": "local",
    }


async def test_trace_the_run_request_is_the_parent_of_the_run(spans: Spans, tmp_path: Path) -> None:
    database = sqlite_database(tmp_path)
    async with (
        FakeLLMServer(api_key=LLM_KEY, reply=reply, reply_tokens=8) as fake,
        running_server(database, make_settings(tmp_path)) as server,
        server.client(await server.new_user()) as http,
    ):
        await provider_for(http, fake)
        created = await http.post("/rooms", json=_room())
        assert created.status_code == 201, created.text
        room_id = created.json()["id"]
        traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
        started = await http.post(f"/rooms/{room_id}/run", headers={"traceparent": traceparent})
        assert started.status_code == 202, started.text
        assert await asyncio.to_thread(spans.run_ended.wait, 240)  # the run's span ends with the run
        again = await http.post(f"/rooms/{room_id}/run")  # completed: refused, and not a server error
        assert again.status_code == 409

    requests = spans.named("POST /api/v1/rooms/{room_id}/run")
    assert len(requests) == 2
    first, refused = sorted(requests, key=lambda s: s.start_time or 0)
    _continues_the_clients_trace(first)
    assert (first.attributes or {})["moot.room.id"] == room_id
    assert (first.attributes or {})["http.route"] == "/api/v1/rooms/{room_id}/run"

    [run] = spans.named("invoke_workflow")
    assert run.name == "invoke_workflow board"
    assert run.parent is not None and run.parent.span_id == first.context.span_id  # a child, same trace
    assert (run.attributes or {})["moot.run.status"] == "completed"
    turns = spans.children(run, "invoke_agent")
    assert {t.name for t in turns} == {"invoke_agent Chair", "invoke_agent Ana", "invoke_agent Ben"}
    calls = [c for t in turns for c in spans.children(t, "chat")]
    assert len(calls) == len(fake.requests) > 0
    assert all(
        isinstance(n := (c.attributes or {})["gen_ai.usage.output_tokens"], int) and n > 0 for c in calls
    )

    assert refused.status.status_code == StatusCode.UNSET  # a 409 answers the client; the server is fine
    assert (refused.attributes or {})["error.type"] == "Conflict"


async def test_trace_the_websocket_run_command_is_the_parent_of_the_run(spans: Spans, tmp_path: Path) -> None:
    database = sqlite_database(tmp_path)
    async with (
        FakeLLMServer(api_key=LLM_KEY, reply=reply, reply_tokens=8) as fake,
        running_server(database, make_settings(tmp_path)) as server,
    ):
        token = await server.new_user()
        async with server.client(token) as http:
            await provider_for(http, fake)
            created = await http.post("/rooms", json=_room())
            assert created.status_code == 201, created.text
            room_id = created.json()["id"]
        url = f"{server.url.replace('http', 'ws', 1)}/api/v1/rooms/{room_id}/ws?token={token}"
        traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"  # on the request that opens the socket
        async with websockets.connect(url, additional_headers={"traceparent": traceparent}) as ws:
            await ws.send(json.dumps({"type": "run"}))
            replies = []
            async for raw in ws:  # the run's events, then the reply to the second run, refused
                frame = json.loads(raw)
                if "seq" not in frame:
                    replies.append(frame)
                elif frame["type"] == "room_completed":
                    await ws.send(json.dumps({"type": "run"}))
                if len(replies) == 2:
                    break
        assert await asyncio.to_thread(spans.run_ended.wait, 240)
    assert replies[0] == {"type": "ack", "command": "run"}
    assert replies[1]["type"] == "error" and replies[1]["state"] in ("running", "completed")  # ending

    commands = spans.named("run /api/v1/rooms/{room_id}/ws")
    assert len(commands) == 2
    first, refused = sorted(commands, key=lambda s: s.start_time or 0)
    _continues_the_clients_trace(first)
    assert dict(first.attributes or {}) == {
        "http.route": "/api/v1/rooms/{room_id}/ws",
        "moot.command": "run",
        "moot.room.id": room_id,
    }
    [run] = spans.named("invoke_workflow")
    assert run.parent is not None and run.parent.span_id == first.context.span_id  # a child, same trace
    assert (run.attributes or {})["moot.run.status"] == "completed"
    turns = spans.children(run, "invoke_agent")
    assert {t.name for t in turns} == {"invoke_agent Chair", "invoke_agent Ana", "invoke_agent Ben"}
    assert refused.status.status_code == StatusCode.UNSET  # refused: told to the client, no server error
    assert (refused.attributes or {})["error.type"] == "Conflict"
