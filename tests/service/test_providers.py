"""Stored providers (L3): keys encrypted at rest and never shown, a trial call that says what is wrong."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from moot.service import create_app
from moot.testing.servers import FakeLLMServer, Fault

from .helpers import LLM_KEY, LiveServer, make_settings, provider_for, running_server, serve

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_a_provider_is_stored_with_its_key_encrypted_and_never_returned_L3(
    shared_server: LiveServer, fake_llm: FakeLLMServer
) -> None:
    # covers: L3
    async with shared_server.client(await shared_server.new_user()) as ana:
        created = await provider_for(ana, fake_llm)
        assert created["has_api_key"] is True
        assert "api_key" not in created
        assert created["default_model"] == "fake-model"
        assert (await ana.get(f"/providers/{created['id']}")).json() == created
        listed = (await ana.get("/providers")).json()
        assert (listed["total"], listed["items"]) == (1, [created])
    engine = create_async_engine(shared_server.database.url, connect_args=shared_server.database.connect_args)
    try:
        async with engine.connect() as conn:
            query = text("SELECT api_key_encrypted FROM providers WHERE id = :id")
            stored = (await conn.execute(query, {"id": created["id"]})).scalar_one()
    finally:
        await engine.dispose()
    assert LLM_KEY.encode() not in stored
    assert stored.startswith(b"gAAAAA")  # a Fernet token


async def test_an_update_changes_only_what_it_names(
    shared_server: LiveServer, fake_llm: FakeLLMServer
) -> None:
    async with shared_server.client(await shared_server.new_user()) as ana:
        provider = await provider_for(ana, fake_llm)
        path = f"/providers/{provider['id']}"
        renamed = (await ana.patch(path, json={"name": "renamed", "max_tokens": 50})).json()
        assert (renamed["name"], renamed["max_tokens"], renamed["has_api_key"]) == ("renamed", 50, True)
        assert renamed["base_url"] == provider["base_url"]
        cleared = (await ana.patch(path, json={"api_key": None, "default_model": None})).json()
        assert (cleared["has_api_key"], cleared["default_model"]) == (False, None)
        refused = await ana.patch(path, json={"name": None})
        assert refused.status_code == 422
        assert "name cannot be null" in refused.json()["error"]["message"]
        assert (await ana.delete(path)).status_code == 204
        assert (await ana.get(path)).status_code == 404
        assert (await ana.delete(path)).status_code == 404


async def test_names_are_unique_per_user_and_simulated_is_reserved(
    shared_server: LiveServer, fake_llm: FakeLLMServer
) -> None:
    ana, bob = await shared_server.new_user(), await shared_server.new_user()
    async with shared_server.client(ana) as http_ana, shared_server.client(bob) as http_bob:
        await provider_for(http_ana, fake_llm)
        await provider_for(http_bob, fake_llm)  # the same name, another owner
        taken = await http_ana.post("/providers", json={"name": "local", "type": "anthropic"})
        assert taken.status_code == 409
        assert taken.json()["error"]["message"].startswith("you already have a provider named 'local'")
        reserved = await http_ana.post("/providers", json={"name": "Simulated", "type": "openai"})
        assert reserved.status_code == 422
        other = (await http_ana.post("/providers", json={"name": "other", "type": "openai"})).json()
        renamed = await http_ana.patch(f"/providers/{other['id']}", json={"name": "local"})
        assert renamed.status_code == 409


async def test_trying_a_provider_reports_ok_with_the_latency(
    shared_server: LiveServer, fake_llm: FakeLLMServer
) -> None:
    async with shared_server.client(await shared_server.new_user()) as ana:
        for kind in ("openai", "anthropic"):
            provider = await provider_for(ana, fake_llm, name=kind, type=kind)
            result = (await ana.post(f"/providers/{provider['id']}/test")).json()
            assert result["ok"] is True, result
            assert result["model"] == "fake-model"
            assert result["latency_ms"] >= 0
    assert fake_llm.requests[-1].body["max_tokens"] == 1


async def test_trying_a_provider_says_what_is_wrong(
    shared_server: LiveServer, fake_llm: FakeLLMServer
) -> None:
    async with shared_server.client(await shared_server.new_user()) as ana:
        bad_key = await provider_for(ana, fake_llm, name="bad-key", key="sk-wrong-key-0123456789")
        result = (await ana.post(f"/providers/{bad_key['id']}/test")).json()
        assert (result["ok"], result["problem"]) == (False, "bad_key")
        assert "refused the key" in result["message"]
        assert "sk-wrong-key-0123456789" not in result["message"]

        fake_llm.faults.append(Fault.status(404))
        good = await provider_for(ana, fake_llm, name="good")
        result = (await ana.post(f"/providers/{good['id']}/test")).json()
        assert (result["ok"], result["problem"]) == (False, "unknown_model")
        assert "check the model name 'fake-model'" in result["message"]

        body = {"name": "gone", "type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"}
        gone = (await ana.post("/providers", json=body)).json()
        result = (await ana.post(f"/providers/{gone['id']}/test")).json()
        assert (result["ok"], result["problem"]) == (False, "unreachable")
        assert "cannot reach http://127.0.0.1:9/v1" in result["message"]


PRIVATE = (
    "http://127.0.0.1:8080/v1", "http://localhost:11434/v1", "http://10.0.0.8/v1", "http://192.168.1.2",
    "http://[::1]:80/v1", "http://169.254.169.254/latest", "http://0.0.0.0:8000",
)  # fmt: skip


async def test_private_urls_are_refused_when_blocked(
    shared_server: LiveServer, fake_llm: FakeLLMServer, tmp_path: Path
) -> None:
    ana = await shared_server.new_user()
    async with shared_server.client(ana) as http:
        for index, url in enumerate(PRIVATE):  # by default, local servers are fine
            body = {"name": f"p{index}", "type": "openai", "base_url": url}
            assert (await http.post("/providers", json=body)).status_code == 201
        local = await provider_for(http, fake_llm)
    settings = make_settings(tmp_path, block_private_urls=True, secret_key=shared_server.settings.secret_key)
    async with running_server(shared_server.database, settings) as blocking, blocking.client(ana) as http:
        for url in PRIVATE:
            refused = await http.post("/providers", json={"name": "new", "type": "openai", "base_url": url})
            assert refused.status_code == 422, url
            assert "MOOT_BLOCK_PRIVATE_URLS" in refused.json()["error"]["message"]
        public = {"name": "public", "type": "openai", "base_url": "https://8.8.8.8/v1"}
        created = await http.post("/providers", json=public)
        assert created.status_code == 201
        moved = await http.patch(f"/providers/{created.json()['id']}", json={"base_url": PRIVATE[0]})
        assert moved.status_code == 422
        result = (await http.post(f"/providers/{local['id']}/test")).json()
    assert (result["ok"], result["problem"]) == (False, "refused")
    assert fake_llm.requests == []


async def test_a_key_stored_under_another_secret_key_is_reported(
    shared_server: LiveServer, fake_llm: FakeLLMServer, tmp_path: Path
) -> None:
    ana = await shared_server.new_user()
    async with shared_server.client(ana) as http:
        local = await provider_for(http, fake_llm)
    settings = make_settings(tmp_path)  # another secret key
    async with running_server(shared_server.database, settings) as other, other.client(ana) as http:
        result = (await http.post(f"/providers/{local['id']}/test")).json()
    assert (result["ok"], result["problem"]) == (False, "refused")
    assert "the secret key changed since it was stored" in result["message"]


async def test_a_base_url_must_be_a_plain_http_url(shared_server: LiveServer) -> None:
    async with shared_server.client(await shared_server.new_user()) as ana:
        for url, words in (
            ("ftp://example.com", "is not an http:// or https:// URL"),
            ("http://user:secret@example.com/v1", "put no credentials in the URL"),
            ("http://example.com:port/v1", "is not a valid URL"),
            ("http://[::1/v1", "is not a valid URL"),
        ):
            answer = await ana.post("/providers", json={"name": "p", "type": "openai", "base_url": url})
            assert answer.status_code == 422
            assert words in answer.json()["error"]["message"]


async def test_a_secret_key_is_generated_into_the_data_directory_with_mode_0600(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, secret_key=None, database_url=f"sqlite:///{tmp_path / 'moot.db'}")
    _url, stop = await serve(create_app(settings))
    await stop()
    key_file = settings.secret_key_file
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    first = key_file.read_bytes()
    _url, stop = await serve(create_app(settings))
    await stop()
    assert key_file.read_bytes() == first
