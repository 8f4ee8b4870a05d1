"""Rooms over HTTP: made from a spec naming stored providers, run in the server, steered, read, exported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from moot.testing.servers import FakeLLMServer

from .helpers import LiveServer, make_settings, provider_for, read_sse, running_server, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

NAMES = ("Ana", "Ben", "Cy")


def room_on(provider: str, protocol: str, **changes: Any) -> dict[str, Any]:
    """Three speakers (and a chair for a board meeting) on a stored provider, or `simulated`."""
    agents: list[dict[str, Any]] = [{"name": n, "persona": f"{n} the expert"} for n in NAMES]
    if protocol == "board":
        agents.insert(0, {"name": "Chair", "role": "moderator"})
    body = {"task": "Should we open-source?", "protocol": protocol, "max_rounds": 2, "agents": agents}
    return {**body, "default_model": provider, **changes}


def slow_room(rounds: int = 50, speed: float = 1000) -> dict[str, Any]:
    """A simulated board meeting long enough to be steered while it runs: fifty rounds go on until the
    test stops it, however slow the machine is."""
    slow = {"provider": "simulated", "seed": 1, "tokens_per_second": speed}
    return room_on("slow", "board", models={"slow": slow}, max_rounds=rounds)


async def new_room(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    answer = await http.post("/rooms", json=body)
    assert answer.status_code == 201, answer.text
    room: dict[str, Any] = answer.json()
    return room


@pytest.mark.parametrize(
    ("protocol", "kind"), [("sequential", "openai"), ("parallel", "openai"), ("board", "anthropic")]
)
async def test_rooms_of_each_protocol_run_to_the_end_on_a_stored_provider_L1_L3_L8_B16(
    protocol: str, kind: str, shared_server: LiveServer, fake_llm: FakeLLMServer
) -> None:
    # covers: L1, L3, L8, B16
    async with shared_server.client(await shared_server.new_user()) as ana:
        await provider_for(ana, fake_llm, type=kind)
        room = await new_room(ana, room_on("local", protocol))
        assert (room["status"], room["round"], room["allowed"]) == ("idle", 0, ["run", "stop", "intervene"])
        assert {a["stored_provider"] for a in room["agents"]} == {"local"}
        assert "api_key" not in json.dumps(room["spec"])
        started = await ana.post(f"/rooms/{room['id']}/run")
        assert started.status_code == 202
        events, ended = await read_sse(ana, room["id"])  # watched live, to the end of the run
        assert ended and events[0]["type"] == "room_started" and events[-1]["type"] == "room_completed"
        assert [e["seq"] for e in events] == sorted(
            {e["seq"] for e in events}
        )  # rising; joined deltas skip seqs
        streamed: dict[str, str] = {}
        for event in events:
            if event["type"] == "turn_delta":
                streamed[event["turn_id"]] = streamed.get(event["turn_id"], "") + event["text"]
        completed = [e for e in events if e["type"] == "turn_completed" and e["kind"] == "speech"]
        assert completed and all(streamed[e["turn_id"]] == e["text"] for e in completed)
        done = await wait_for(ana, room["id"], "completed", "error")
        assert (done["status"], done["round"], done["error"]) == ("completed", 2, None)
        assert (
            done["usage"]["total_tokens"]
            == done["usage"]["input_tokens"] + done["usage"]["output_tokens"]
            > 0
        )
        assert (done["allowed"], done["running_here"]) == ([], False)
        if protocol == "board":
            assert done["conclusion"] == {
                "summary": "done",
                "decision_advice": "go",
                "consensus_points": ["a"],
                "dissent_points": ["b"],
                "positions": [],  # the stored provider's chair gave no positions in its summaries
            }
        entries = (await ana.get(f"/rooms/{room['id']}/messages")).json()
        speeches = [e for e in entries["items"] if e["kind"] == "speech"]
        assert [e["speaker"] for e in speeches] == [*NAMES, *NAMES]
        assert all(e["text"] == f"{e['speaker']} thinks we should act now" for e in speeches)
        assert all(e["usage"]["output_tokens"] > 0 and not e["failed"] for e in speeches)
    assert all(r.headers.get("authorization", r.headers.get("x-api-key", "")).endswith("0123456789")
               for r in fake_llm.requests)  # fmt: skip


async def test_the_transcript_pages_and_exports_as_markdown_and_json(shared_server: LiveServer) -> None:
    async with shared_server.client(await shared_server.new_user()) as ana:
        room = await new_room(ana, room_on("simulated", "sequential", max_rounds=1, title="Open?"))
        await ana.post(f"/rooms/{room['id']}/run")
        await wait_for(ana, room["id"], "completed")
        everything = (await ana.get(f"/rooms/{room['id']}/messages")).json()
        assert [e["kind"] for e in everything["items"]] == ["task", "speech", "speech", "speech"]
        page = (await ana.get(f"/rooms/{room['id']}/messages", params={"limit": 2, "offset": 1})).json()
        assert (page["total"], page["limit"], page["offset"]) == (4, 2, 1)
        assert page["items"] == everything["items"][1:3]
        markdown = await ana.get(f"/rooms/{room['id']}/export")
        assert markdown.headers["content-type"] == "text/markdown; charset=utf-8"
        assert markdown.text.startswith("# Open?")
        assert f'filename="room-{room["id"]}.md"' in markdown.headers["content-disposition"]
        document = (await ana.get(f"/rooms/{room['id']}/export", params={"format": "json"})).json()
        assert (document["room_id"], document["status"], len(document["entries"])) == (
            room["id"],
            "completed",
            4,
        )
        wrong = await ana.get(f"/rooms/{room['id']}/export", params={"format": "pdf"})
        assert wrong.status_code == 422
        listed = (await ana.get("/rooms")).json()
        assert (listed["total"], [r["id"] for r in listed["items"]]) == (1, [room["id"]])


async def test_a_room_is_paused_resumed_and_refuses_what_its_state_does_not_allow_L10_L11(
    shared_server: LiveServer,
) -> None:
    # covers: L10, L11, L14
    async with shared_server.client(await shared_server.new_user()) as ana:
        room = await new_room(ana, slow_room())
        path = f"/rooms/{room['id']}"
        not_running = await ana.post(f"{path}/pause")
        assert not_running.status_code == 409
        assert not_running.json()["error"]["details"] == {
            "state": "idle",
            "allowed": ["run", "stop", "intervene"],
        }
        running = (await ana.post(f"{path}/run")).json()
        assert (running["status"], running["running_here"]) == ("running", True)
        twice = await ana.post(f"{path}/run")
        assert twice.status_code == 409
        assert twice.json()["error"] == {
            "code": "conflict",
            "message": f"room {room['id']} is already running here; you can pause it, stop it or intervene "
            "while it runs",
            "details": {"state": "running", "allowed": ["pause", "stop", "intervene"]},
        }
        busy = await ana.delete(path)
        assert busy.status_code == 409
        assert busy.json()["error"]["details"]["allowed"] == ["pause", "stop"]
        paused = (await ana.post(f"{path}/pause")).json()
        assert (paused["status"], paused["allowed"]) == ("paused", ["run", "stop", "intervene"])
        resumed = (await ana.post(f"{path}/run")).json()
        assert (resumed["status"], resumed["running_here"]) == ("running", True)
        assert (await ana.post(f"{path}/stop")).status_code == 202  # no need to wait for fifty rounds
        done = await wait_for(ana, room["id"], "completed")
        assert done["round"] < 50
        assert done["conclusion"]["summary"]
        again = await ana.post(f"{path}/run")
        assert again.status_code == 409
        assert again.json()["error"]["details"] == {"state": "completed", "allowed": []}
        assert (await ana.post(f"{path}/stop")).status_code == 409
        assert (await ana.post(f"{path}/messages", json={"text": "late"})).status_code == 409
        assert (await ana.delete(path)).status_code == 204
        assert (await ana.get(path)).status_code == 404


@pytest.mark.parametrize("how", ["stop", "message"])
async def test_a_stop_ends_the_discussion_early_with_a_conclusion_B9_B16(
    how: str, shared_server: LiveServer
) -> None:
    # covers: B9, B16
    async with shared_server.client(await shared_server.new_user()) as ana:
        room = await new_room(ana, slow_room())
        await ana.post(f"/rooms/{room['id']}/run")
        if how == "stop":
            assert (await ana.post(f"/rooms/{room['id']}/stop")).status_code == 202
        else:
            said = await ana.post(f"/rooms/{room['id']}/messages", json={"text": "/stop"})
            assert (said.status_code, said.json()["stop"]) == (202, True)
        done = await wait_for(ana, room["id"], "completed")
        assert done["round"] < 50
        assert done["conclusion"]["summary"]


async def test_words_of_a_person_join_the_transcript_B9(shared_server: LiveServer) -> None:
    # covers: B9
    name_token = await shared_server.new_user()
    async with shared_server.client(name_token) as ana:
        me = (await ana.get("/users/me")).json()
        room = await new_room(ana, room_on("simulated", "board", max_rounds=1))
        said = await ana.post(f"/rooms/{room['id']}/messages", json={"text": "Think of the cost."})
        assert said.status_code == 202
        assert (said.json()["author"], said.json()["stop"]) == (me["name"], False)
        empty = await ana.post(f"/rooms/{room['id']}/messages", json={"text": "   "})
        assert empty.status_code == 422
        assert empty.json()["error"]["message"] == "text: an intervention needs some text"
        await ana.post(f"/rooms/{room['id']}/run")
        await wait_for(ana, room["id"], "completed")
        entries = (await ana.get(f"/rooms/{room['id']}/messages", params={"limit": 100})).json()["items"]
        stepped_in = [e for e in entries if e["kind"] == "intervention"]
        assert [(e["speaker"], e["text"]) for e in stepped_in] == [("user", "Think of the cost.")]


async def test_an_agent_whose_provider_is_gone_fails_its_turns_and_the_room_goes_on_L3_L12(
    shared_server: LiveServer, fake_llm: FakeLLMServer
) -> None:
    # covers: L3, L12
    async with shared_server.client(await shared_server.new_user()) as ana:
        provider = await provider_for(ana, fake_llm)
        body = room_on("simulated", "sequential", max_rounds=1)
        body["agents"][1]["model"] = {"provider": "local"}
        room = await new_room(ana, body)
        await ana.delete(f"/providers/{provider['id']}")
        await ana.post(f"/rooms/{room['id']}/run")
        done = await wait_for(ana, room["id"], "completed", "error")
        assert done["status"] == "completed"
        entries = (await ana.get(f"/rooms/{room['id']}/messages")).json()["items"]
        speeches = {e["speaker"]: e for e in entries if e["kind"] == "speech"}
        assert not speeches["Ana"]["failed"] and not speeches["Cy"]["failed"]
        assert speeches["Ben"]["failed"]
        assert "the stored provider 'local' no longer exists" in speeches["Ben"]["error"]


async def test_a_shutdown_pauses_rooms_and_the_next_start_resumes_them(
    shared_server: LiveServer, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    async with running_server(shared_server.database, settings) as first:
        token = await first.new_user()
        async with first.client(token) as ana:
            room = await new_room(ana, slow_room(speed=400))
            await ana.post(f"/rooms/{room['id']}/run")
    async with running_server(shared_server.database, settings) as second, second.client(token) as ana:
        resumed = (await ana.get(f"/rooms/{room['id']}")).json()
        assert (resumed["status"], resumed["running_here"]) == ("running", True)
        await ana.post(f"/rooms/{room['id']}/stop")  # no need to wait for five rounds
        done = await wait_for(ana, room["id"], "completed")
        assert done["conclusion"]["summary"]
        events = await second.app.state.store.events_after(room["id"], 0)
    assert [e.reason for e in events if e.type == "room_paused"] == ["server shutdown"]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"provider": "openai", "api_key": "sk-x"},
            "room: agents[0].model.api_key: a room sent to the server holds no key; store it once",
        ),
        (
            {"provider": "local", "base_url": "http://x"},
            "agents[0].model: you have no provider named 'local'",
        ),
        (
            {"provider": "openai", "api_key_env": "HOME"},
            "agents[0].model: you have no stored openai provider; store one with POST /api/v1/providers",
        ),
        ("openai:gpt-4o", "agents[0].model: you have no stored openai provider"),
        ({"provider": "nope"}, "agents[0].model: you have no provider named 'nope'"),
        ("no such", "agents[0].model: 'no such' is no model"),
    ],
)
async def test_a_model_runs_on_a_stored_provider_never_on_a_key_in_the_room(
    model: Any, message: str, shared_server: LiveServer
) -> None:
    async with shared_server.client(await shared_server.new_user()) as ana:
        body = room_on("simulated", "sequential")
        body["agents"][0]["model"] = model
        answer = await ana.post("/rooms", json=body)
        assert answer.status_code == 422
        assert message in answer.json()["error"]["message"]
        assert "sk-x" not in answer.text


async def test_a_spec_that_does_not_hold_is_422_saying_why(shared_server: LiveServer) -> None:
    async with shared_server.client(await shared_server.new_user()) as ana:
        twice = room_on("simulated", "sequential", agents=[{"name": "A"}, {"name": "a"}])
        answer = await ana.post("/rooms", json=twice)
        assert answer.status_code == 422
        assert answer.json()["error"] == {
            "code": "invalid",
            "message": "room: agents[1].name: 'a' is used twice; names must be unique",
            "details": None,
        }
        no_model = {"task": "t", "agents": [{"name": "A"}, {"name": "B", "model": "simulated"}]}
        assert "names no model" in (await ana.post("/rooms", json=no_model)).json()["error"]["message"]


async def test_health_and_metrics(shared_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=shared_server.url) as http:
        health = (await http.get("/healthz")).json()
        assert (health["status"], health["database"]) == ("ok", "ok")
        metrics = await http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for family in (
        'moot_rooms{status="completed"}',
        'moot_rooms{status="idle"}',
        "moot_rooms_running",
        'moot_turns_total{outcome="completed"}',
        'moot_tokens_total{kind="output"}',
        "moot_cost_usd_total",
        "moot_model_turn_seconds_bucket",
        "moot_stream_clients",
    ):
        assert family in text, family
    completed = next(line for line in text.splitlines() if line.startswith('moot_rooms{status="completed"}'))
    assert float(completed.split()[-1]) >= 1


async def test_a_concluded_room_takes_a_follow_up_question(shared_server: LiveServer) -> None:
    async with shared_server.client(await shared_server.new_user()) as ana:
        room = await new_room(ana, room_on("simulated", "board", max_rounds=1))
        early = await ana.post(f"/rooms/{room['id']}/continue", json={"question": "And then?"})
        assert early.status_code == 409, early.text  # it has not concluded yet
        await ana.post(f"/rooms/{room['id']}/run")
        first = await wait_for(ana, room["id"], "completed")
        asked = await ana.post(f"/rooms/{room['id']}/continue", json={"question": "What if we wait a year?"})
        assert asked.status_code == 202, asked.text
        done = await wait_for(ana, room["id"], "completed")
        assert done["round"] == 2 and done["conclusion"] != first["conclusion"]
        entries = (await ana.get(f"/rooms/{room['id']}/messages", params={"limit": 100})).json()["items"]
        kinds = [(e["kind"], e["round"]) for e in entries if e["kind"] in ("conclusion", "intervention")]
        assert kinds == [("conclusion", 1), ("intervention", 1), ("conclusion", 2)]
        exported = await ana.get(f"/rooms/{room['id']}/export", params={"format": "json"})
        assert [c["number"] for c in exported.json()["conclusions"]] == [1, 2]
