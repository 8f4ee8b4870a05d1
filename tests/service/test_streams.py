"""SSE and WebSocket streams of the real app on uvicorn: to the end, cut and resumed, steered, kept alive."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from moot.service.routes import streams
from moot.testing.servers import FakeLLMServer
from store.fixtures import sqlite_database

from .helpers import (
    CONCLUSION,
    LLM_KEY,
    STREAM_TIMEOUT,
    Frame,
    LiveServer,
    frames,
    make_settings,
    provider_for,
    read_sse,
    reply,
    running_server,
)

QUESTION = "What happens to the on-call rota on Fridays?"


def meeting(speed: float, *, rounds: int = 1) -> dict[str, Any]:
    """A board meeting of simulated agents as the API takes it; `speed` in tokens per second."""
    sim = {"provider": "simulated", "seed": 7, "tokens_per_second": speed}
    models = {"sim": sim}
    return {
        "task": "Should our 40-person studio move to a four-day week?",
        "protocol": "board",
        "max_rounds": rounds,
        "models": models,
        "default_model": "sim",
        "agents": [
            {"name": "Chair", "role": "moderator", "persona": "a neutral chair"},
            {"name": "Ana", "persona": "a cautious engineer"},
            {"name": "Ben", "persona": "an ambitious product lead"},
        ],
    }


@pytest.fixture
async def live(server: LiveServer) -> LiveServer:
    server.app.state.stream_ping = 0.2
    return server


async def new_room(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    answer = await http.post("/rooms", json=body)
    assert answer.status_code == 201, answer.text
    room_id: str = answer.json()["id"]
    return room_id


async def run(http: httpx.AsyncClient, room_id: str) -> None:
    answer = await http.post(f"/rooms/{room_id}/run")
    assert answer.status_code == 202, answer.text


def plain(events: list[Frame]) -> list[tuple[int, str, str]]:
    return [(e["seq"], e["type"], e.get("text", "")) for e in events]


async def test_an_sse_client_reads_a_board_meeting_to_the_end(live: LiveServer) -> None:
    async with live.client(await live.new_user("ana")) as http:
        room_id = await new_room(http, meeting(300))
        await run(http, room_id)
        events, ended = await read_sse(http, room_id)
    assert ended
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})  # rising; joined deltas skip seqs
    assert all(e["_id"] == str(e["seq"]) and e["_event"] == e["type"] for e in events)
    assert events[0]["type"] == "room_started"
    assert events[-1]["type"] == "room_completed"
    streamed: dict[str, str] = defaultdict(str)
    for event in events:
        if event["type"] == "turn_delta":
            streamed[event["turn_id"]] += event["text"]
    completed = {e["turn_id"]: e["text"] for e in events if e["type"] == "turn_completed"}
    assert len(completed) == 5  # opening, two speeches, the summary, the conclusion
    assert completed == dict(streamed)


async def test_an_sse_client_cut_twenty_times_ends_with_exactly_the_uncut_events(live: LiveServer) -> None:
    # covers: B14
    rng = random.Random(20)
    async with live.client(await live.new_user("ana")) as http:
        # Fifty rounds: the meeting goes on until the test stops it, so every cut falls while it runs.
        room_id = await new_room(http, meeting(250, rounds=50))
        await run(http, room_id)
        uncut = asyncio.create_task(read_sse(http, room_id))
        cut: list[Frame] = []
        for _ in range(20):
            last_id = cut[-1]["seq"] if cut else None
            got, ended = await read_sse(http, room_id, last_id=last_id, cut_after=rng.randint(2, 25), rng=rng)
            assert not ended
            cut += got
        assert (await http.post(f"/rooms/{room_id}/stop")).status_code == 202
        got, ended = await read_sse(http, room_id, last_id=cut[-1]["seq"])
        assert ended
        cut += got
        whole, _ = await uncut
    assert whole[-1]["type"] == "room_completed"
    assert [e["seq"] for e in whole] == sorted({e["seq"] for e in whole})  # rising; joined deltas skip seqs
    assert plain(cut) == plain(whole)  # no gap, no duplicate, the same texts


async def test_keep_alive_comments_come_while_nothing_happens(live: LiveServer) -> None:
    async with live.client(await live.new_user("ana")) as http:
        room_id = await new_room(http, meeting(300))
        params = {"follow": "true"}
        buffer = b""
        async with http.stream(
            "GET", f"/rooms/{room_id}/events", params=params, timeout=STREAM_TIMEOUT
        ) as answer:
            async for chunk in answer.aiter_raw():  # until two keep-alive comments came, however long
                buffer += chunk
                if len([c for c in frames(buffer)[1] if c.startswith("ping")]) >= 2:
                    break
    events, comments, _ = frames(buffer)
    assert events == []  # an idle room: nothing to say yet
    assert len([c for c in comments if c.startswith("ping")]) >= 2


class _Heard(logging.Handler):
    """Sets `heard` when a record saying `words` is logged: the server's own word, waited on."""

    def __init__(self, words: str) -> None:
        super().__init__()
        self.words = words
        self.heard = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.heard.set()


@pytest.mark.timeout(120)
async def test_an_sse_client_that_stops_reading_is_dropped_once_a_send_takes_the_send_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # covers: B14
    small = 4096  # bytes of kernel buffer on each side: the client's window closes after a few frames
    async with running_server(sqlite_database(tmp_path), make_settings(tmp_path), send_buffer=small) as live:
        token = await live.new_user("ana")
        async with live.client(token) as http:
            room_id = await new_room(http, meeting(0, rounds=40))  # a replay of some 300 KB
            await run(http, room_id)
            _, ended = await read_sse(http, room_id)
            assert ended
        # No keep-alive for an hour: only the send's own timeout can drop the client within the test.
        live.app.state.stream_ping = 3600.0
        live.app.state.send_timeout = 0.5
        caplog.set_level(logging.INFO, logger=streams.__name__)
        dropped = _Heard("took no bytes")
        logging.getLogger(streams.__name__).addHandler(dropped)
        loop = asyncio.get_running_loop()
        try:
            with socket.socket() as client:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, small)
                client.setblocking(False)
                await loop.sock_connect(client, ("127.0.0.1", int(live.url.rsplit(":", 1)[1])))
                request = (
                    f"GET /api/v1/rooms/{room_id}/events?follow=true HTTP/1.1\r\nHost: test\r\n"
                    f"Authorization: Bearer {token}\r\n\r\n"
                )
                await loop.sock_sendall(client, request.encode())
                # The client reads nothing; a follower of a finished room has no end of its own.
                await dropped.heard.wait()
                received = b""
                while chunk := await loop.sock_recv(client, 65536):  # what was sent, then the close
                    received += chunk
        finally:
            logging.getLogger(streams.__name__).removeHandler(dropped)
        metrics = live.app.state.manager.metrics
        assert metrics.stream_clients == 0  # its subscription is gone
        assert metrics.stream_clients_cut == 0  # dropped by its send, not cut for falling behind
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"event: room_completed" not in body  # cut in the replay: the client got part of it
    assert not body.endswith(b"0\r\n\r\n")  # no end of the chunked body: dropped, not finished


async def test_a_websocket_intervention_reaches_the_next_speakers_and_the_summary(live: LiveServer) -> None:
    # covers: B9, B14
    # The members' first speeches are held on the model server until the words are acknowledged, so the
    # words are in before those speeches end whatever the machine's pace; each reply says whether the
    # request it answers carried the words.
    members_may_speak = threading.Event()

    def answer(body: dict[str, Any]) -> str:
        said, heard = reply(body), QUESTION in json.dumps(body)
        if said == CONCLUSION:  # the chair's summaries and conclusion are JSON
            return said.replace('"done"', '"done, on-call rota noted"') if heard else said
        if not said.startswith("Chair") and not members_may_speak.wait(timeout=300):
            raise AssertionError("the test never let the members speak")
        return f"{said}; on-call rota noted" if heard else said

    token = await live.new_user("ana")
    with FakeLLMServer(api_key=LLM_KEY, reply=answer, reply_tokens=8) as fake:
        async with live.client(token) as http:
            await provider_for(http, fake)
            body = meeting(0, rounds=2)
            body["models"] = {"local": {"provider": "local"}}
            body["default_model"] = "local"
            room_id = await new_room(http, body)
            url = f"{live.url.replace('http', 'ws')}/api/v1/rooms/{room_id}/ws?token={token}"
            events: list[Frame] = []
            replies: list[Frame] = []
            async with websockets.connect(url) as ws, websockets.connect(url) as bystander:
                await ws.send(json.dumps({"type": "run"}))
                async for raw in ws:
                    frame = json.loads(raw)
                    if "seq" not in frame:
                        replies.append(frame)
                        if frame.get("command") == "intervene":
                            members_may_speak.set()
                        continue
                    events.append(frame)
                    if frame["type"] == "turn_started" and frame["turn_id"] == "r1:speech:Ana":
                        bystander.transport.abort()  # a client that vanishes mid-meeting stops nothing (B14)
                        await ws.send(json.dumps({"type": "intervene", "text": QUESTION}))
                    if frame["type"] == "room_completed":
                        break
            messages = (await http.get(f"/rooms/{room_id}/messages", params={"limit": 100})).json()["items"]
    assert len(replies) == 2
    assert replies[0] == {"type": "ack", "command": "run"}
    assert replies[1]["type"] == "ack"
    assert replies[1]["command"] == "intervene"
    assert replies[1]["stop"] is False

    def index(type_: str, **fields: Any) -> int:
        return next(
            i
            for i, e in enumerate(events)
            if e["type"] == type_ and all(e.get(k) == v for k, v in fields.items())
        )

    added = index("intervention_added", text=QUESTION)
    assert index("turn_completed", turn_id="r1:speech:Ana") < added
    assert index("turn_completed", turn_id="r1:speech:Ben") < added
    assert added < index("turn_started", turn_id="r1:summary:Chair")
    order = [(m["kind"], m["speaker"], m["round"]) for m in messages]
    at = next(i for i, m in enumerate(messages) if m["kind"] == "intervention")
    assert messages[at]["text"] == QUESTION
    assert order[at - 2 : at] == [("speech", "Ana", 1), ("speech", "Ben", 1)]
    assert order[at + 1 : at + 4] == [("summary", "Chair", 1), ("speech", "Ana", 2), ("speech", "Ben", 2)]
    said = {(m["kind"], m["speaker"], m["round"]): m["text"] for m in messages}
    assert "on-call rota noted" in said[("summary", "Chair", 1)]  # the moderator's request carried it
    assert "on-call rota noted" in said[("speech", "Ana", 2)]  # so did the next speakers'
    assert "on-call rota noted" in said[("speech", "Ben", 2)]
    assert "on-call rota" not in said[("speech", "Ana", 1)]  # asked for before the words were sent


async def test_websocket_commands_answer_with_what_went_wrong(live: LiveServer) -> None:
    token = await live.new_user("ana")
    other = await live.new_user("ben")
    async with live.client(token) as http:
        room_id = await new_room(http, meeting(300))
        await run(http, room_id)
    base = f"{live.url.replace('http', 'ws')}/api/v1/rooms/{room_id}/ws"
    replies: list[Frame] = []
    events: list[Frame] = []
    async with websockets.connect(f"{base}?token={token}") as ws:
        await ws.send("hello")
        await ws.send(json.dumps({"type": "run"}))
        await ws.send(json.dumps({"type": "intervene", "text": "  "}))
        while len(replies) < 3 or not events or events[-1]["type"] != "room_completed":
            frame = json.loads(await ws.recv())
            (events if "seq" in frame else replies).append(frame)
    assert replies[0]["type"] == "error"
    assert "intervene" in replies[0]["message"]
    assert replies[1]["type"] == "error"  # run: the room runs, or has completed by now
    assert replies[1]["state"] in ("running", "completed")
    assert replies[2]["type"] == "error"
    assert "text" in replies[2]["message"]
    async with websockets.connect(f"{base}?token={token}&follow=false&after=3") as ws:
        finished = [json.loads(raw) async for raw in ws]  # a finished run: the rest, then a normal close
    assert ws.close_code == 1000
    assert [e["seq"] for e in finished] == [e["seq"] for e in events if e["seq"] > 3]
    for query, code in ((f"?token={other}", 4404), ("?token=nope", 4401), ("", 4401)):
        async with websockets.connect(base + query) as ws:
            with pytest.raises(ConnectionClosed) as refused:
                await ws.recv()
        assert refused.value.rcvd is not None
        assert refused.value.rcvd.code == code
