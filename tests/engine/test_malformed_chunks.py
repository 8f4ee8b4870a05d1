"""One wrong-shaped chunk from one model fails that turn, after its retries, and the room goes on (L12)."""

from __future__ import annotations

from typing import Any

import pytest

from moot.engine import Run
from moot.spec import RoomSpec
from moot.testing.servers import FakeLLMServer, Fault

from .helpers import of_type

KEY = "sk-local-test-key"


def _room(server: FakeLLMServer, adapter: str) -> RoomSpec:
    model: dict[str, Any] = {
        "provider": "anthropic" if adapter == "anthropic" else "openai",
        "model": "fake-model",
        "base_url": server.url + ("" if adapter == "anthropic" else "/v1"),
        "api_key_env": "LOCAL_KEY",
        "max_retries": 2,
        "retry_backoff": 0.01,
    }
    if adapter != "anthropic":
        model["transport"] = adapter
    agents = [{"name": n, "persona": f"{n} the expert", "model": "local"} for n in ("Alice", "Bob", "Carol")]
    return RoomSpec.from_data(
        {"task": "Should we open-source?", "protocol": "sequential", "max_rounds": 1,
         "models": {"local": model}, "agents": agents}
    )  # fmt: skip


SHAPES = {
    "lean": '{"choices": "nope"}',
    "sdk": "[null]",
    "anthropic": '{"type": "content_block_delta", "index": 0, "delta": "nope"}',
}


@pytest.mark.parametrize("adapter", ["lean", "sdk", "anthropic"])
async def test_hardening_4_malformed_chunk_is_a_failed_turn_and_the_room_goes_on(
    monkeypatch: pytest.MonkeyPatch, adapter: str
) -> None:
    monkeypatch.setenv("LOCAL_KEY", KEY)
    async with FakeLLMServer(api_key=KEY) as server:
        # Alice speaks; every attempt of Bob's turn gets a malformed chunk; then Carol speaks.
        server.faults.extend([Fault.ok(), *[Fault.chunk(SHAPES[adapter], after_chunks=1)] * 3])
        run = Run(_room(server, adapter))
        events = [e async for e in run]

    assert events[-1].type == "room_completed", events[-1]
    restarted = of_type(events, "turn_restarted")
    assert [(e.speaker, e.attempt) for e in restarted] == [("Bob", 2), ("Bob", 3)]  # retried like a cut
    assert all("sent a malformed chunk" in e.reason for e in restarted)
    [failed] = of_type(events, "turn_failed")
    assert failed.speaker == "Bob"
    assert failed.error_type == "TransientModelError"
    assert "sent a malformed chunk" in failed.error
    assert "a retry may help" in failed.error
    assert [e.speaker for e in of_type(events, "turn_completed")] == ["Alice", "Carol"]
    assert run.result is not None and run.result.status == "completed"
