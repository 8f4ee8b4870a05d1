"""What nobody may see or break: other users' things, API keys, the server itself (L15)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from moot.service.logs import ScrubSecrets
from moot.testing.servers import FakeLLMServer

from .helpers import ADMIN_TOKEN, LLM_KEY, LiveServer, provider_for, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

BAD_KEY = "sk-wrong-key-for-the-leak-test-987654"
ROOM = {"task": "Open the office on Sundays?", "max_rounds": 1, "agents": [{"name": "Ana", "model": "local"}]}


async def test_everything_of_another_user_answers_404_L15(
    shared_server: LiveServer, fake_llm: FakeLLMServer
) -> None:
    # covers: L15
    async with shared_server.client(await shared_server.new_user()) as ana:
        provider = await provider_for(ana, fake_llm)
        agent = (await ana.post("/agents", json={"name": "Sceptic", "model": {"provider": "local"}})).json()
        room = (await ana.post("/rooms", json=ROOM)).json()
        await ana.post(f"/rooms/{room['id']}/run")
        await wait_for(ana, room["id"], "completed")
    p, a, r = f"/providers/{provider['id']}", f"/agents/{agent['id']}", f"/rooms/{room['id']}"
    attempts: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", p, None), ("PATCH", p, {"max_tokens": 5}), ("DELETE", p, None), ("POST", f"{p}/test", None),
        ("GET", a, None), ("PATCH", a, {"persona": "mine now"}), ("DELETE", a, None),
        ("GET", r, None), ("DELETE", r, None), ("POST", f"{r}/run", None), ("POST", f"{r}/pause", None),
        ("POST", f"{r}/stop", None), ("POST", f"{r}/messages", {"text": "hello"}), ("GET", f"{r}/messages", None),
        ("GET", f"{r}/export", None), ("GET", f"{r}/events", None),
    ]  # fmt: skip
    async with shared_server.client(await shared_server.new_user()) as bob:
        for method, path, body in attempts:
            answer = await bob.request(method, path, json=body)
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "not_found"
        for listing in ("/providers", "/agents", "/rooms"):
            assert (await bob.get(listing)).json()["total"] == 0
        borrowing = await bob.post("/rooms", json=ROOM)
        assert borrowing.status_code == 422
        assert "you have no provider named 'local'" in borrowing.json()["error"]["message"]
        templated = {**ROOM, "agents": [{"template": "Sceptic", "model": "simulated"}]}
        assert (await bob.post("/rooms", json=templated)).status_code == 422
    async with shared_server.client(ADMIN_TOKEN) as admin:  # admins manage users, not others' rooms
        assert (await admin.get(r)).status_code == 404
    async with shared_server.client(await shared_server.new_user()) as ana_again:
        assert (await ana_again.get(p)).status_code == 404


class _Recorder:
    """Every response the client got, for searching."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        self.responses.append(response)

    def texts(self) -> AsyncIterator[str]:
        async def each() -> AsyncIterator[str]:
            for response in self.responses:
                yield f"{response.status_code} {dict(response.headers)} {response.text}"

        return each()


async def test_no_response_log_line_or_stored_row_holds_an_api_key(
    shared_server: LiveServer, fake_llm: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    recorder = _Recorder()
    token = await shared_server.new_user()
    async with shared_server.client(token, event_hooks={"response": [recorder]}) as ana:
        provider = await provider_for(ana, fake_llm)
        anthropic = await provider_for(ana, fake_llm, name="claude", type="anthropic")
        wrong = await provider_for(ana, fake_llm, name="wrong", key=BAD_KEY)
        for each in (provider, anthropic, wrong):
            await ana.get(f"/providers/{each['id']}")
            await ana.post(f"/providers/{each['id']}/test")
        await ana.get("/providers")
        await ana.patch(f"/providers/{provider['id']}", json={"api_key": LLM_KEY, "name": "local"})
        await ana.post("/providers", json={"name": "local", "type": "openai", "api_key": LLM_KEY})  # 409
        await ana.post("/providers", json={"name": "x y", "type": "openai", "api_key": LLM_KEY})  # 422
        await ana.post(
            "/providers", json={"name": "p", "type": "openai", "api_key": LLM_KEY * 100}
        )  # too long
        await ana.post("/providers", json={"name": "p", "type": "openai", "api_key": 5, "key": LLM_KEY})
        await ana.post("/providers", content=f'{{"api_key": "{LLM_KEY}"'.encode())  # broken JSON
        inline = {**ROOM, "agents": [{"name": "A", "model": {"provider": "openai", "api_key": LLM_KEY}}]}
        await ana.post("/rooms", json=inline)
        room = (
            await ana.post(
                "/rooms", json={**ROOM, "agents": [*ROOM["agents"], {"name": "Bo", "model": "wrong"}]}
            )
        ).json()
        await ana.post(f"/rooms/{room['id']}/run")
        await wait_for(ana, room["id"], "completed")
        for path in ("", "/messages", "/export", "/export?format=json", "/events"):
            await ana.get(f"/rooms/{room['id']}{path}")
        await ana.get(f"{shared_server.url}/metrics")
        await ana.get(f"{shared_server.url}/healthz")
    statuses = {r.status_code for r in recorder.responses}
    assert {200, 201, 409, 422} <= statuses
    async for seen in recorder.texts():
        assert LLM_KEY not in seen
        assert BAD_KEY not in seen
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "POST /api/v1/providers" in logged  # uvicorn's access log was captured
    assert LLM_KEY not in logged
    assert BAD_KEY not in logged
    database = shared_server.database
    engine = create_async_engine(database.url, connect_args=database.connect_args)
    try:
        async with engine.connect() as conn:
            for table, column in (("providers", "api_key_encrypted"), ("rooms", "spec"), ("events", "data"),
                                  ("entries", "data")):  # fmt: skip
                for (value,) in (await conn.execute(text(f"SELECT {column} FROM {table}"))).all():
                    raw = value if isinstance(value, bytes) else value.encode()
                    assert LLM_KEY.encode() not in raw, table
                    assert BAD_KEY.encode() not in raw, table
    finally:
        await engine.dispose()


async def test_bodies_over_the_limit_are_413(shared_server: LiveServer) -> None:
    limit = shared_server.settings.max_body_bytes
    async with shared_server.client(await shared_server.new_user()) as ana:
        declared = await ana.post(
            "/rooms", content=b"{" + b" " * limit + b"}", headers={"content-type": "application/json"}
        )
        assert declared.status_code == 413
        assert declared.json()["error"] == {
            "code": "too_large",
            "message": f"the request body is over the limit of {limit} bytes",
            "details": None,
        }

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"task": "'
            for _ in range(limit // 10_000 + 1):
                yield b"x" * 10_000
            yield b'"}'

        streamed = await ana.post("/rooms", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert streamed.json()["error"]["code"] == "too_large"
        long_task = {**ROOM, "task": "x" * 20_001, "agents": [{"name": "A", "model": "simulated"}]}
        too_long = await ana.post("/rooms", json=long_task)
        assert too_long.status_code == 422
        assert (
            too_long.json()["error"]["message"] == "room: task: String should have at most 20000 characters"
        )


async def test_every_error_is_json_saying_what_was_wrong(shared_server: LiveServer) -> None:
    async with shared_server.client(await shared_server.new_user()) as ana:
        cases: list[tuple[httpx.Response, int, str, str]] = [
            (await ana.get("/nowhere"), 404, "not_found", "no such endpoint"),
            (await ana.put("/rooms"), 405, "method_not_allowed", "this endpoint takes GET, POST, not PUT"),
            (await ana.get("/rooms", params={"limit": 0}), 422, "validation_error", "query.limit:"),
            (await ana.get("/providers/abc"), 422, "validation_error", "path.provider_id:"),
            (await ana.get("/providers/99999999999"), 422, "validation_error", "path.provider_id:"),
            (await ana.post("/rooms", content=b"{nope", headers={"content-type": "application/json"}), 422,
             "validation_error", "body: the body is not valid JSON (Expecting property name enclosed in double quotes at character 1)"),
            (await ana.post("/rooms", json={"agents": []}), 422, "validation_error", "task: Field required"),
            (await ana.get("/rooms/not%20an%20id"), 404, "not_found", "no room 'not an id'"),
        ]  # fmt: skip
    for answer, status, code, words in cases:
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        assert (error["code"], words in error["message"]) == (code, True), error
    async with shared_server.client() as anonymous:
        answer = await anonymous.get("/rooms")
        assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unauthorized")


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "a\\u0000b", "type": "openai"}',
        b'{"name": "ok", "type": "openai", "default_model": "\\ud800"}',
        b'{"name": "ok", "type": "openai", "max_tokens": 1e400}',
        b'{"name": "ok", "type": "openai", "max_tokens": NaN}',
        b'{"name": "ok", "type": "openai", "max_tokens": 99999999999999999999999}',
        b"[" * 100_000,
    ],
)
async def test_strange_input_is_refused_not_a_server_error(body: bytes, shared_server: LiveServer) -> None:
    async with shared_server.client(await shared_server.new_user()) as ana:
        answer = await ana.post("/providers", content=body, headers={"content-type": "application/json"})
        assert 400 <= answer.status_code < 500, answer.text
        assert answer.json()["error"]["code"]
        room = {"task": "a\x00b", "agents": [{"name": "A", "model": {"provider": "simulated", "seed": 1}}]}
        nul = await ana.post("/rooms", json=room)
        assert nul.status_code == 422
        assert nul.json()["error"]["message"] == "room: task: text may not contain NUL characters"
        intervention = await ana.post("/rooms/abc/messages", json={"text": "x\x00"})
        assert intervention.status_code in (404, 422)


async def test_access_log_lines_hide_tokens() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/api/v1/rooms/a/events?after=3&token=moot_secret&x=1", "1.1", 200), None,
    )  # fmt: skip
    assert ScrubSecrets().filter(record)
    assert (
        record.getMessage() == '127.0.0.1:5 - "GET /api/v1/rooms/a/events?after=3&token=***&x=1 HTTP/1.1" 200'
    )
