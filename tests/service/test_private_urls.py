"""MOOT_BLOCK_PRIVATE_URLS holds where the connection opens: rooms on a stored provider whose public-looking
name rebinds to loopback, or whose server redirects to loopback, never reach the loopback server.

The fake provider listens on 127.0.0.1, where any request that got past the guard would land; the names
resolve through a fake network the test controls (moot.testing.network).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from moot.models._guard import using_network
from moot.store import Store
from moot.testing.network import FakeNetwork, Redirector
from moot.testing.servers import FakeLLMServer
from store.fixtures import Database

from .helpers import LLM_KEY, LiveServer, make_settings, read_sse, running_server, wait_for

PUBLIC = "1.2.3.4"  # what the fake network's public names resolve to


@pytest.fixture
async def blocking(
    database: Database, store_factory: Callable[[], Store], tmp_path: Path
) -> AsyncIterator[LiveServer]:
    """A server with MOOT_BLOCK_PRIVATE_URLS on."""
    async with running_server(database, make_settings(tmp_path, block_private_urls=True)) as live:
        yield live


async def stored_provider(http: httpx.AsyncClient, kind: str, base_url: str) -> dict[str, Any]:
    body = {
        "name": "llm",
        "type": kind,
        "base_url": base_url,
        "default_model": "fake-model",
        "api_key": LLM_KEY,
    }
    answer = await http.post("/providers", json=body)
    assert answer.status_code == 201, answer.text
    provider: dict[str, Any] = answer.json()
    return provider


async def run_room(http: httpx.AsyncClient, before_run: Callable[[], None]) -> list[dict[str, Any]]:
    """Runs a one-round room, two speakers on the stored provider 'llm' and one simulated (so that the room
    does not fail for want of any speech); returns its turn_failed events."""
    body = {
        "task": "Should we open-source?",
        "protocol": "sequential",
        "max_rounds": 1,
        "default_model": "llm",
        "agents": [{"name": "Ana"}, {"name": "Ben"}, {"name": "Cy", "model": "simulated"}],
    }
    created = await http.post("/rooms", json=body)
    assert created.status_code == 201, created.text
    room_id = created.json()["id"]
    before_run()
    assert (await http.post(f"/rooms/{room_id}/run")).status_code == 202
    done = await wait_for(http, room_id, "completed", "error")
    assert done["status"] == "completed", done[
        "error"
    ]  # failed turns, not a failed room: the room goes on (L12)
    events, ended = await read_sse(http, room_id)
    assert ended
    failed = [event for event in events if event["type"] == "turn_failed"]
    assert [event["speaker"] for event in failed] == ["Ana", "Ben"]
    return failed


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_hardening_2_a_provider_name_rebound_to_loopback_after_its_check_is_refused_at_connect(
    kind: str, blocking: LiveServer, fake_llm: FakeLLMServer
) -> None:
    network = FakeNetwork({"llm.example": [PUBLIC]})
    base_url = f"http://llm.example:{fake_llm.port}" + ("/v1" if kind == "openai" else "")
    with using_network(network):
        async with blocking.client(await blocking.new_user()) as http:
            provider = await stored_provider(http, kind, base_url)  # checked: public
            # the name answers public to the check as the room starts, and 127.0.0.1 from then on
            failed = await run_room(http, lambda: network.answer("llm.example", [PUBLIC], ["127.0.0.1"]))

            network.answer("llm.example", [PUBLIC], ["127.0.0.1"])  # the provider test is checked the same
            tried = (await http.post(f"/providers/{provider['id']}/test")).json()
    refused = "not connecting: 'llm.example' resolves to 127.0.0.1, a loopback address"
    assert all(refused in event["error"] and "MOOT_BLOCK_PRIVATE_URLS" in event["error"] for event in failed)
    assert (tried["ok"], tried["problem"]) == (False, "refused")
    assert refused in tried["message"]
    assert fake_llm.requests == []  # listening on 127.0.0.1 all along, and reached by nothing
    assert ("llm.example", ["127.0.0.1"]) in network.lookups  # a connection was tried there, and refused


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_hardening_2_a_provider_that_redirects_to_loopback_never_gets_the_request_there(
    kind: str, blocking: LiveServer, fake_llm: FakeLLMServer
) -> None:
    network = FakeNetwork({"api.example": [PUBLIC]}, routes={PUBLIC: "127.0.0.1"})
    async with Redirector(fake_llm.url) as redirector:  # public, by the fake network's routing
        base_url = f"http://api.example:{redirector.port}" + ("/v1" if kind == "openai" else "")
        with using_network(network):
            async with blocking.client(await blocking.new_user()) as http:
                await stored_provider(http, kind, base_url)
                failed = await run_room(http, lambda: None)
    path = "/v1/chat/completions" if kind == "openai" else "/v1/messages"
    said = f"the server answered with a redirect (HTTP 307) to {fake_llm.url}{path}"
    assert all(said in e["error"] and "set base_url to the final address" in e["error"] for e in failed)
    assert all("moved" not in event["error"] for event in failed)  # the redirect's body is not shown
    calls = [r for r in redirector.requests if r.startswith("POST")]  # (GET /v1/models: the window)
    assert len(calls) == 2  # one request for each turn, not retried
    assert fake_llm.requests == []
