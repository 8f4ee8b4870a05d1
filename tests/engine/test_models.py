"""Which model speaks: one adapter per model per run, windows servers report, and honest fallbacks (B13)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from moot.cli import app
from moot.spec import RoomSpec
from moot.testing.servers import FakeLLMServer

from .helpers import of_type, room, run_all

KEY = "sk-local-test-key"
BROKEN = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "NOPE_KEY"}


def _local(server: FakeLLMServer, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "openai", "model": "fake-model", "base_url": server.url + "/v1", "api_key_env": "LOCAL_KEY",
        "max_retries": 0, **extra,
    }  # fmt: skip


async def test_hardening_10_a_provider_model_string_is_built_once_per_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    async with FakeLLMServer(api_key=KEY, reply_tokens=3) as server:
        monkeypatch.setenv(
            "ANTHROPIC_BASE_URL", server.url
        )  # where `anthropic:MODEL` goes without a base_url
        spec = RoomSpec.from_data(
            {"task": "Open-source it?", "protocol": "sequential", "max_rounds": 3,
             "agents": [{"name": n, "model": "anthropic:fake-model"} for n in ("Alice", "Bob")]}
        )  # fmt: skip
        _, events = await run_all(spec)
        opened = server.connections_opened

    assert len(of_type(events, "turn_completed")) == 6 and not of_type(events, "turn_failed")
    assert opened == 1  # one adapter for the one model: its connection is kept and reused, turn after turn


async def test_hardening_10_a_window_the_server_reports_is_remembered_and_compressed_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOCAL_KEY", KEY)
    window = 400
    async with FakeLLMServer(api_key=KEY, reply_tokens=30, context_window=window) as server:
        spec = room(
            "sequential",
            rounds=4,
            models={"m": _local(server, max_tokens=40)},
            limits={"history_share": 0.9},
        )  # the room declares no window: the model's default (128k) is far larger than the server's
        run, events = await run_all(spec)
        prompts = [_words(r.body) for r in server.requests if r.path.endswith("/chat/completions")]

    assert not of_type(events, "turn_failed"), of_type(events, "turn_failed")
    assert events[-1].type == "room_completed"
    refits = [e for e in of_type(events, "turn_restarted") if f"reads at most {window}" in e.reason]
    assert len(refits) == 1  # refused once; every later request was made to fit
    assert sum(1 for p in prompts if p > window) == 1
    assert of_type(events, "history_compressed")
    assert len([e for e in run.transcript if e.kind == "speech" and not e.failed]) == 12


def _words(body: Any) -> int:
    return sum(len(str(m.get("content") or "").split()) for m in body["messages"])


async def test_hardening_12_a_real_model_never_silently_becomes_the_simulated_one() -> None:
    spec = room(
        "board", names=("Alice", "Bob"), moderator="Chair", rounds=1,
        models={"broken": BROKEN, "sim": {"provider": "simulated"}},
        agents=[{"name": "Alice", "model": "broken"}, {"name": "Bob", "model": "sim"},
                {"name": "Chair", "role": "moderator", "model": "sim"}],
    )  # fmt: skip
    run, events = await run_all(spec)

    [alice] = [e for e in run.transcript if e.speaker == "Alice" and e.kind == "speech"]
    assert alice.failed and alice.text == "(no model could answer for Alice)"  # B13's placeholder
    [failed] = of_type(events, "turn_failed")
    assert failed.speaker == "Alice" and failed.error.startswith("(no model could answer for Alice)")
    assert "NOPE_KEY" in failed.error  # what to fix: Alice's own model
    assert not [e for e in of_type(events, "turn_restarted") if e.speaker == "Alice"]
    assert run.result is not None and run.result.substituted == {}
    assert not [w for w in of_type(events, "room_warning") if w.code == "models_substituted"]


async def test_hardening_12_an_agent_heard_through_another_model_is_named_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOCAL_KEY", KEY)
    async with FakeLLMServer(api_key=KEY, reply_tokens=4) as server:
        spec = room(
            "board", names=("Alice", "Bob"), moderator="Chair", rounds=1,
            models={"broken": BROKEN, "local": _local(server)},
            agents=[{"name": "Alice", "model": "broken"}, {"name": "Bob", "model": "local"},
                    {"name": "Chair", "role": "moderator", "model": "local"}],
        )  # fmt: skip
        run, events = await run_all(spec)

    [alice] = [e for e in run.transcript if e.speaker == "Alice" and e.kind == "speech"]
    assert not alice.failed and alice.model == "openai:fake-model"
    [warning] = [w for w in of_type(events, "room_warning") if w.code == "models_substituted"]
    assert "Alice through openai:fake-model instead of openai:gpt-4o-mini" in warning.message
    assert events.index(warning) == len(events) - 2 and events[-1].type == "room_completed"
    assert run.result is not None and run.result.substituted == {"Alice": "openai:fake-model"}


def test_hardening_12_moot_run_strict_fails_a_run_where_an_agent_spoke_through_another_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_KEY", KEY)
    monkeypatch.delenv("NOPE_KEY", raising=False)
    server = FakeLLMServer(api_key=KEY, reply_tokens=4).start_in_thread()
    try:
        data = {
            "task": "Open-source it?", "protocol": "board", "max_rounds": 1,
            "models": {"broken": BROKEN, "local": _local(server)},
            "agents": [{"name": "Alice", "model": "broken"}, {"name": "Bob", "model": "local"},
                       {"name": "Chair", "role": "moderator", "model": "local"}],
        }  # fmt: skip
        path = tmp_path / "room.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        runner = CliRunner()
        lenient = runner.invoke(app, ["run", str(path), "--json"])
        strict = runner.invoke(app, ["run", str(path), "--json", "--strict"])
    finally:
        server.stop()

    assert lenient.exit_code == 0, lenient.output
    assert strict.exit_code == 1, strict.output
    for result in (lenient, strict):
        assert (
            '"code":"models_substituted"' in result.stdout
            and "Alice through openai:fake-model" in result.stdout
        )
