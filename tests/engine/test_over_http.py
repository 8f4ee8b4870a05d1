"""Whole rooms against a local server speaking the real OpenAI and Anthropic wire protocols."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from moot.engine import Run
from moot.spec import RoomSpec
from moot.testing.servers import FakeLLMServer, Fault

from .helpers import of_type, turn_order

KEY = "sk-local-test-key"
NAMES = ("Alice", "Bob", "Carol")


def _speaker_and_round(body: dict[str, Any]) -> tuple[str, str]:
    system = body["system"] if "system" in body else body["messages"][0]["content"]
    system = system if isinstance(system, str) else system[0]["text"]
    name = re.match(r"You are (\w+)", system)
    last = body["messages"][-1]["content"]
    last = last if isinstance(last, str) else last[0]["text"]
    round_ = re.search(r"Round (\d+) of", last)
    return (name.group(1) if name else "?", round_.group(1) if round_ else "0")


def _reply(body: dict[str, Any]) -> str:
    last = body["messages"][-1]["content"]
    last = last if isinstance(last, str) else last[0]["text"]
    if "JSON" in last:
        return (
            '{"summary": "done", "decision_advice": "go", "consensus_points": ["a"], "dissent_points": ["b"]}'
        )
    name, round_ = _speaker_and_round(body)
    return f"{name} argues in round {round_} that we should act"


def _room(server: FakeLLMServer, protocol: str, provider: str, transport: str = "lean") -> RoomSpec:
    model: dict[str, Any] = {
        "provider": provider,
        "model": "fake-model",
        "base_url": server.url + ("/v1" if provider == "openai" else ""),
        "api_key_env": "LOCAL_KEY",
        "max_retries": 2,
        "retry_backoff": 0.01,
    }
    if provider == "openai":
        model["transport"] = transport
    agents: list[dict[str, Any]] = [
        {"name": n, "persona": f"{n} the expert", "model": "local"} for n in NAMES
    ]
    agents.append({"name": "Chair", "role": "moderator", "model": "local"})
    return RoomSpec.from_data(
        {"task": "Should we open-source?", "protocol": protocol, "max_rounds": 2, "models": {"local": model},
         "agents": agents}
    )  # fmt: skip


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LOCAL_KEY", KEY)
    async with FakeLLMServer(api_key=KEY, reply=_reply) as fake:
        yield fake


@pytest.mark.parametrize("transport", ["lean", "sdk"])
async def test_parallel_room_over_openai_wire_follows_L6_and_L9(
    server: FakeLLMServer, transport: str
) -> None:
    server.faults.extend([Fault.status(429, retry_after=0.01)])  # the first request is rate-limited once
    run = Run(_room(server, "parallel", "openai", transport))
    events = [e async for e in run]
    assert events[-1].type == "room_completed", events[-1]
    assert of_type(events, "turn_restarted")  # the 429 was retried, visibly

    speeches = [r for r in server.requests if "Round 2 of" in r.body["messages"][-1]["content"]]
    assert len(speeches) == 3
    for request in speeches:
        name, _ = _speaker_and_round(request.body)
        messages = request.body["messages"]
        assert messages[0]["role"] == "system" and f"You are {name}" in messages[0]["content"]
        assert request.body["stream"] is True and request.body["stream_options"] == {"include_usage": True}
        own = [m for m in messages if m["role"] == "assistant"]
        assert [m["content"] for m in own] == [f"{name} argues in round 1 that we should act"]  # L9
        others = "\n".join(m["content"] for m in messages if m["role"] == "user")
        for other in NAMES:
            if other != name:
                assert f"[{other}] {other} argues in round 1" in others  # L9: named, as user
            assert f"{other} argues in round 2" not in others  # L6: nothing of its own round
    assert request.headers["authorization"] == f"Bearer {KEY}"
    # Usage is the server's own count, not an estimate (L7).
    done = of_type(events, "turn_completed")
    assert done and all(not e.usage.estimated and e.usage.output_tokens > 0 for e in done)
    assert of_type(events, "room_concluded")[0].summary == "done"


async def test_board_meeting_over_anthropic_wire_B5_B8_B11(server: FakeLLMServer) -> None:
    run = Run(_room(server, "board", "anthropic"))
    events = [e async for e in run]
    assert events[-1].type == "room_completed", events[-1]
    assert turn_order(events)[0] == (0, "opening", "Chair")
    assert [e.kind for e in of_type(events, "turn_completed")].count("summary") == 2
    for request in server.requests:  # SDK 2.x sends the key as a Bearer token, older ones as x-api-key
        assert request.path == "/v1/messages"
        assert KEY in (request.headers.get("x-api-key"), request.headers.get("authorization", "")[7:])
    for request in server.requests:
        roles = [m["role"] for m in request.body["messages"]]
        assert roles[0] == "user" and all(a != b for a, b in itertools.pairwise(roles))
    concluded = of_type(events, "room_concluded")[0]
    assert (concluded.summary, concluded.consensus_points) == ("done", ["a"])


async def test_a_wrong_key_fails_the_agent_not_the_room_L3_L12(server: FakeLLMServer) -> None:
    spec = _room(server, "sequential", "openai")
    server.api_key = "another-key"
    run = Run(spec)
    events = [e async for e in run]
    failed = of_type(events, "turn_failed")
    assert {f.error_type for f in failed} == {"ModelAuthError"}
    assert len(failed) == 3  # round 1: every member; then the round of failures ends the discussion
    assert all(KEY not in f.error for f in failed)
    assert len(server.requests) == 4  # three members, then the conclusion; auth errors are not retried
    assert run.result is not None and run.result.status == "error" and run.result.conclusion is not None
