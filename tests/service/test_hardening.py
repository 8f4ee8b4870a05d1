"""What an outside attack on the service found, each closed: rights that outlive a token, unbounded input,
a schema that said more than the API takes, docs that needed the internet, and a room API of its own."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync import client as ws_sync

from moot.store import Store
from moot.testing.servers import FakeLLMServer
from store.fixtures import Database

from .helpers import LLM_KEY, LiveServer, make_settings, provider_for, running_server, wait_for

EXAMPLES = Path(__file__).parents[2] / "examples"
IDLE_ROOM = {
    "task": "Open the office on Sundays?",
    "max_rounds": 1,
    "agents": [{"name": "Ana", "model": {"provider": "simulated", "seed": 1}}],
}


async def new_room(http: httpx.AsyncClient, body: dict[str, Any] | None = None) -> str:
    answer = await http.post("/rooms", json=body or IDLE_ROOM)
    assert answer.status_code == 201, answer.text
    room_id: str = answer.json()["id"]
    return room_id


def socket_url(server: LiveServer, room_id: str, query: str) -> str:
    return f"{server.url.replace('http', 'ws', 1)}/api/v1/rooms/{room_id}/ws?{query}"


async def interventions(server: LiveServer, room_id: str) -> list[str]:
    """The words a room not yet run has taken in."""
    return [words.text for words in await server.app.state.store.pending_interventions(room_id)]


# ---- 6: an open WebSocket loses what its token loses ---------------------------------------------------------


async def _steer_then(server: LiveServer, change: Callable[[int, str], Any]) -> tuple[str, Any]:
    """Opens a socket, intervenes once (accepted), lets `change(user_id, token)` happen, intervenes again.

    Returns the room and what the second intervention got: a reply frame, or the ConnectionClosed.
    """
    token = await server.new_user()
    async with server.client(token) as http:
        me = (await http.get("/users/me")).json()
        room_id = await new_room(http)
    async with websockets.connect(socket_url(server, room_id, f"token={token}")) as ws:
        await ws.send(json.dumps({"type": "intervene", "text": "first words"}))
        first = json.loads(await ws.recv())
        assert (first["type"], first["command"]) == ("ack", "intervene")
        await change(me["id"], token)
        await ws.send(json.dumps({"type": "intervene", "text": "after the change"}))
        try:
            return room_id, json.loads(await ws.recv())
        except ConnectionClosed as closed:
            return room_id, closed


async def test_hardening_6_a_revoked_token_closes_the_socket_at_its_next_message(server: LiveServer) -> None:
    async def revoke(user_id: int, _token: str) -> None:
        async with server.client(server.admin_token) as admin:
            assert (await admin.post(f"/users/{user_id}/token")).status_code == 200

    room_id, outcome = await _steer_then(server, revoke)
    assert isinstance(outcome, ConnectionClosed), outcome
    assert outcome.rcvd is not None
    assert outcome.rcvd.code == 4401
    assert "no longer works" in outcome.rcvd.reason
    assert await interventions(server, room_id) == ["first words"]


async def test_hardening_6_a_user_made_read_only_can_no_longer_steer(server: LiveServer) -> None:
    async def demote(user_id: int, _token: str) -> None:
        async with server.client(server.admin_token) as admin:
            answer = await admin.patch(f"/users/{user_id}", json={"role": "readonly"})
            assert answer.status_code == 200

    room_id, outcome = await _steer_then(server, demote)
    assert outcome["type"] == "error"
    assert outcome["message"] == "your level is readonly; steering a room takes the level member or above"
    assert await interventions(server, room_id) == ["first words"]


async def test_hardening_6_a_deleted_user_loses_the_socket(server: LiveServer) -> None:
    async def delete(user_id: int, _token: str) -> None:
        async with server.client(server.admin_token) as admin:
            assert (await admin.delete(f"/users/{user_id}")).status_code == 204

    room_id, outcome = await _steer_then(server, delete)
    assert isinstance(outcome, ConnectionClosed), outcome
    assert outcome.rcvd is not None
    assert outcome.rcvd.code == 4401
    assert await interventions(server, room_id) == ["first words"]


async def test_hardening_6_a_stream_ends_when_its_token_stops_working(server: LiveServer) -> None:
    server.app.state.rights_recheck = 0  # check before every event, so the test needs no clock
    token = await server.new_user()
    async with server.client(token) as http:
        me = (await http.get("/users/me")).json()
        room_id = await new_room(http)
        async with websockets.connect(socket_url(server, room_id, f"token={token}")) as ws:
            async with server.client(server.admin_token) as admin:
                await admin.post(f"/users/{me['id']}/token")
            await server.app.state.manager.run(room_id)  # events flow: the first one meets the check
            with pytest.raises(ConnectionClosed) as closed:
                await _events_until_closed(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


async def _events_until_closed(ws: websockets.ClientConnection) -> None:
    while True:
        assert "seq" not in json.loads(await ws.recv()), "an event reached a revoked token"


# ---- 9: what the attack sent -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "query"),
    [
        ("9" * 5000, None),
        (str(2**63), None),
        ("-1", None),
        ("١٢", None),  # digits, but not ASCII ones
        (None, str(2**63 + 5)),
        (None, "abc"),
        (None, "1" * 5000),
    ],
)
async def test_hardening_9_a_resume_point_that_is_no_seq_answers_400(
    header: str | None, query: str | None, server: LiveServer
) -> None:
    token = await server.new_user()
    async with server.client(token) as http:
        room_id = await new_room(http)
        headers = {"Last-Event-ID": header.encode()} if header is not None else {}
        params = {"after": query} if query is not None else {}
        answer = await http.get(f"/rooms/{room_id}/events", headers=headers, params=params)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "bad_request"
    assert "must be the seq of an event, a whole number from 0 to 2147483647" in error["message"]
    async with websockets.connect(socket_url(server, room_id, f"token={token}&after={2**63}")) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4400


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        (b"\x00\x01binary", 1003, "binary frames are not taken"),
        ("[" * 5000 + "]" * 5000, 1007, "nested too deeply"),
        (json.dumps({"type": "intervene", "text": "x" * 200_000}), 1009, "at most"),
    ],
)
async def test_hardening_9_a_frame_the_socket_cannot_take_closes_it_with_a_code_and_a_reason(
    frame: bytes | str, code: int, reason: str, server: LiveServer
) -> None:
    token = await server.new_user()
    async with server.client(token) as http:
        room_id = await new_room(http)
    async with websockets.connect(socket_url(server, room_id, f"token={token}")) as ws:
        await ws.send(frame)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None, "the server dropped the connection without a close frame"
    assert closed.value.rcvd.code == code
    assert reason in closed.value.rcvd.reason


async def test_hardening_9_interventions_are_limited_per_room_and_per_user_with_a_clear_429(
    database: Database, store_factory: Callable[[], Store], tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, interventions_per_room=3, interventions_per_user=5, intervention_window=3600
    )
    async with running_server(database, settings) as server:
        token = await server.new_user()
        async with server.client(token) as http:
            first, second = await new_room(http), await new_room(http)
            for n in range(3):
                said = await http.post(f"/rooms/{first}/messages", json={"text": f"point {n}"})
                assert said.status_code == 202, said.text
            room_full = await http.post(f"/rooms/{first}/messages", json={"text": "one more"})
            assert room_full.status_code == 429
            assert room_full.json()["error"]["code"] == "rate_limited"
            assert "this room takes at most 3 interventions in 3600 s" in room_full.json()["error"]["message"]
            assert 0 < int(room_full.headers["Retry-After"]) <= 3600
            for n in range(2):  # the user's five: three in the first room, two here
                assert (
                    await http.post(f"/rooms/{second}/messages", json={"text": f"p{n}"})
                ).status_code == 202
            user_full = await http.post(f"/rooms/{second}/messages", json={"text": "and more"})
            assert user_full.status_code == 429
            assert "you may send at most 5 interventions" in user_full.json()["error"]["message"]
        async with websockets.connect(socket_url(server, second, f"token={token}")) as ws:
            await ws.send(json.dumps({"type": "intervene", "text": "over the socket"}))
            reply = json.loads(await ws.recv())
        assert (reply["type"], reply["command"]) == ("error", "intervene")
        assert "you may send at most 5 interventions" in reply["message"]
        assert reply["retry_after"] > 0
        assert len(await interventions(server, first)) == 3
        assert len(await interventions(server, second)) == 2


def _nullable(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "null" or any(_nullable(s) for s in schema.get("anyOf", []))


async def test_hardening_9_a_field_the_schema_calls_nullable_takes_null_and_no_other(
    server: LiveServer, fake_llm: FakeLLMServer
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        components = (await http.get("/openapi.json")).json()["components"]["schemas"]
    async with server.client(await server.new_user()) as ana:
        provider = await provider_for(ana, fake_llm)
        agent = (await ana.post("/agents", json={"name": "Sceptic", "persona": "doubts"})).json()
        for schema, path in (("ProviderUpdate", f"/providers/{provider['id']}"), ("AgentUpdate", f"/agents/{agent['id']}")):  # fmt: skip
            properties = components[schema]["properties"]
            assert properties
            for field, field_schema in properties.items():
                answer = await ana.patch(path, json={field: None})
                expected = 200 if _nullable(field_schema) else 422
                assert answer.status_code == expected, (schema, field, answer.text)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/rooms", {**IDLE_ROOM, "agents": [{"name": "A", "model": {"provider": "simulated", "temperature": False}}]}),
        ("/rooms", {**IDLE_ROOM, "max_rounds": True}),
        ("/rooms", {**IDLE_ROOM, "limits": {"reply_tokens": True}}),
        ("/agents", {"name": "A", "model": {"provider": "simulated", "seed": True}}),
        ("/providers", {"name": "p", "type": "openai", "max_tokens": True}),
    ],
)  # fmt: skip
async def test_hardening_9_true_or_false_is_no_number(
    path: str, body: dict[str, Any], server: LiveServer
) -> None:
    async with server.client(await server.new_user()) as ana:
        answer = await ana.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert "give a number, not " in answer.json()["error"]["message"]


async def test_hardening_9_a_405_names_every_method_of_the_path(server: LiveServer) -> None:
    async with server.client(await server.new_user()) as ana:
        room_id = await new_room(ana)
        for method, path, allowed in (
            ("PUT", "/rooms", "GET, POST"),
            ("PUT", f"/rooms/{room_id}", "GET, DELETE"),
            ("DELETE", f"/rooms/{room_id}/messages", "GET, POST"),
        ):
            answer = await ana.request(method, path)
            assert answer.status_code == 405
            assert answer.headers["allow"] == allowed
            assert answer.json()["error"]["message"].startswith(
                f"this endpoint takes {allowed}, not {method}"
            )


# ---- 13: a newcomer's browser ------------------------------------------------------------------------------------

_ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\(\s*['"]?([^'")]+)""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_hardening_13_the_docs_load_only_from_this_server(page: str, server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.get(page)
        assert answer.status_code == 200
        html = answer.text
        assert "http://" not in html
        assert "https://" not in html  # no CDN, no Google Fonts, no online validator
        assets = [a or b for a, b in _ASSET.findall(html)]
        assert len(assets) >= 2  # the script and a stylesheet or icon
        for asset in assets:
            assert asset.startswith("/") and not asset.startswith("//"), asset
            served = await http.get(asset)
            assert served.status_code == 200, asset
            assert len(served.content) > 500, asset
        scripts = [a for a in assets if a.endswith(".js")]
        assert scripts
        for script in scripts:
            kind = (await http.get(script)).headers["content-type"].split(";")[0]
            assert kind in ("text/javascript", "application/javascript")
        assert (await http.get("/openapi.json")).status_code == 200


async def test_hardening_13_the_login_url_opens_a_page_in_a_browser_and_json_for_programs(
    server: LiveServer,
) -> None:
    async with httpx.AsyncClient(base_url=server.api) as http:
        params = {"token": server.admin_token}
        browser = await http.get(
            "/users/me", params=params, headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        )
        assert browser.status_code == 200
        assert browser.headers["content-type"].startswith("text/html")
        assert "Signed in as admin" in browser.text
        assert 'href="/docs"' in browser.text
        assert server.admin_token not in browser.text
        assert browser.headers["cache-control"] == "no-store"
        for accept in ("application/json", "*/*", None):
            headers = {"accept": accept} if accept else {}
            program = await http.get("/users/me", params=params, headers=headers)
            assert program.headers["content-type"] == "application/json"
            assert program.json()["name"] == "admin"


# ---- 14: one room document everywhere ----------------------------------------------------------------------------


async def test_hardening_14_a_room_file_posts_as_it_is_and_runs_on_stored_keys_never_the_servers_env(
    server: LiveServer, fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's own environment holds keys; a room naming them must not get them sent anywhere.
    monkeypatch.setenv("OLLAMA_API_KEY", "sk-server-env-ollama-0000000001")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-server-env-0000000002")
    text = (EXAMPLES / "mixed.yaml").read_text(encoding="utf-8")
    text = text.replace("http://127.0.0.1:11434/v1", f"{fake_llm.url}/v1")  # where this test's server is
    async with server.client(await server.new_user()) as ana:
        await provider_for(ana, fake_llm, name="ollama", type="openai")
        await provider_for(ana, fake_llm, name="claude-account", type="anthropic")
        posted = await ana.post("/rooms", content=text.encode(), headers={"content-type": "application/yaml"})
        assert posted.status_code == 201, posted.text
        room = posted.json()
        spec = room["spec"]
        assert {name: m.get("stored_provider") for name, m in spec["models"].items()} == {
            "local": "ollama",
            "claude": "claude-account",
            "sim": None,
        }
        assert "api_key_env" not in json.dumps(spec)
        assert "base_url" not in json.dumps(spec)  # the stored provider's URL is used when it runs
        assert {a["name"]: a["stored_provider"] for a in room["agents"]} == {
            "Chair": "claude-account",
            "Rosa": "ollama",
            "Sam": "claude-account",
            "Devi": None,
        }
        await ana.post(f"/rooms/{room['id']}/run")
        done = await wait_for(ana, room["id"], "completed", "error")
        assert (done["status"], done["error"]) == ("completed", None)
        entries = (await ana.get(f"/rooms/{room['id']}/messages", params={"limit": 100})).json()["items"]
    speeches = [e for e in entries if e["kind"] == "speech"]
    assert speeches and not any(e["failed"] for e in speeches)
    assert fake_llm.requests
    for request in fake_llm.requests:
        sent = request.headers.get("authorization", request.headers.get("x-api-key", ""))
        assert sent.endswith(LLM_KEY), sent
        assert "server-env" not in json.dumps(dict(request.headers))


async def test_hardening_14_json_and_yaml_give_the_same_room_and_colour_is_one_word(
    server: LiveServer,
) -> None:
    document = {
        "task": "Rename the product?",
        "models": {"sim": {"provider": "simulated", "seed": 4}},
        "agents": [{"name": "Ana", "model": "sim", "color": "teal"}, {"name": "Ben", "model": "simulated"}],
    }
    async with server.client(await server.new_user()) as ana:
        as_json = (await ana.post("/rooms", json=document)).json()
        as_yaml = await ana.post(
            "/rooms", content=yaml.safe_dump(document).encode(), headers={"content-type": "text/yaml"}
        )
        assert as_yaml.status_code == 201, as_yaml.text
        assert as_yaml.json()["spec"] == as_json["spec"]
        assert as_json["spec"]["agents"][0]["colour"] == "#008080"
        assert "color" not in json.dumps(as_json["spec"])
        assert as_json["agents"][0]["colour"] == "#008080"
        bomb = "a: &a [x, x]\nb: &b [*a, *a]\ntask: *b\nagents: []\n"
        refused = await ana.post(
            "/rooms", content=bomb.encode(), headers={"content-type": "application/yaml"}
        )
        assert refused.status_code == 422
        assert "aliases (*name) are not taken here" in refused.json()["error"]["message"]
        xml = await ana.post("/rooms", content=b"<room/>", headers={"content-type": "application/xml"})
        assert xml.status_code == 415
        typo = await ana.post("/rooms", json={**document, "max_round": 2})
        assert typo.status_code == 422
        assert (
            typo.json()["error"]["message"]
            == "room: max_round: unknown field 'max_round'; did you mean 'max_rounds'?"
        )


async def test_hardening_14_a_model_by_type_finds_the_one_stored_provider_or_says_which(
    server: LiveServer, fake_llm: FakeLLMServer
) -> None:
    room = {"task": "t", "agents": [{"name": "A", "model": "openai:gpt-4o"}]}
    async with server.client(await server.new_user()) as ana:
        await provider_for(ana, fake_llm, name="first")
        found = (await ana.post("/rooms", json=room)).json()
        assert found["agents"][0]["stored_provider"] == "first"
        assert found["agents"][0]["model"] == "openai:gpt-4o"
        await provider_for(ana, fake_llm, name="second")
        both = await ana.post("/rooms", json=room)
        assert both.status_code == 422
        assert (
            "agents[0].model: you have 2 openai providers (first, second); name one of them"
            in (both.json()["error"]["message"])
        )
        by_url = {
            **room,
            "agents": [{"name": "A", "model": {"provider": "openai", "base_url": "http://elsewhere:1/v1"}}],
        }
        elsewhere = await ana.post("/rooms", json=by_url)
        assert elsewhere.status_code == 422
        assert (
            "you have no stored openai provider with base_url http://elsewhere:1/v1"
            in (elsewhere.json()["error"]["message"])
        )


# ---- 5: no token in any log line ------------------------------------------------------------------------------


def test_hardening_5_moot_serve_logs_no_token_at_debug_level(tmp_path: Path) -> None:
    """A real `moot serve` at debug level, with tokens in every place a client puts them."""
    admin = "not-shaped-like-a-token-but-secret-4f2a9c"  # only remembering it can hide it
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "MOOT_DATA_DIR": str(tmp_path), "MOOT_ADMIN_TOKEN": admin}
    env.pop("MOOT_DATABASE_URL", None)
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moot.cli", "serve", "--port", str(port), "--log-level", "debug"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=f"{base}/api/v1", timeout=10) as http:
                _until_up(http, server)
                made = http.post("/users", json={"name": "ana"}, params={"token": admin})
                assert made.status_code == 201, made.text
                token = made.json()["token"]
                room = http.post("/rooms", json=IDLE_ROOM, headers={"authorization": f"Bearer {token}"})
                room_id = room.json()["id"]
                http.get(f"/rooms/{room_id}/events", params={"token": token})
                http.get("/users/me", params={"token": "moot_Guessed0123456789abcdefghij"})
                url = f"ws://127.0.0.1:{port}/api/v1/rooms/{room_id}/ws?token={token}"
                with ws_sync.connect(url) as ws:
                    ws.send(json.dumps({"type": "intervene", "text": f"my token is {token}"}))
                    assert json.loads(ws.recv())["type"] == "ack"
                    ws.send(b"binary")  # closes it, logged on the way
                    with pytest.raises(ConnectionClosed):
                        ws.recv()
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
    logged = log.read_text(encoding="utf-8", errors="replace")
    assert "WebSocket /api/v1/rooms/" in logged  # the connection lines were written, at debug level
    assert "DEBUG" in logged
    for secret in (token, admin, "moot_Guessed0123456789abcdefghij"):
        assert secret not in logged
    assert "token=***" in logged


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _until_up(http: httpx.Client, server: subprocess.Popen[bytes]) -> None:
    """Waits for the server to answer (or to die): a cold start is slow on a busy machine."""
    for _ in range(1200):
        assert server.poll() is None, "moot serve exited"
        try:
            if http.get("/users/me").status_code == 401:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("moot serve did not start within two minutes")
