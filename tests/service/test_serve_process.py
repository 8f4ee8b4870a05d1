"""`moot serve` as a real process: killed mid-discussion, started again, the room goes on to its end."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from moot.store import Store
from moot.testing.servers import FakeLLMServer

ADMIN = "moot_process-admin-token"
ROOM = {
    "task": "Should we open-source?",
    "protocol": "board",
    "max_rounds": 2,
    "models": {"slow": {"provider": "simulated", "seed": 2, "tokens_per_second": 80}},
    "default_model": "slow",
    "agents": [
        {"name": "Chair", "role": "moderator"},
        {"name": "Ana", "persona": "a cautious CFO"},
        {"name": "Ben", "persona": "an ambitious CTO"},
    ],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(data_dir: Path, port: int, **settings: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MOOT_DATA_DIR": str(data_dir), "MOOT_ADMIN_TOKEN": ADMIN, **settings}
    env.pop("MOOT_DATABASE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "moot.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.TransportError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _room(http: httpx.Client, room_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = http.get(f"/rooms/{room_id}").json()
    return answer


async def _stored_status(data_dir: Path, room_id: str) -> str:
    async with Store.from_url(f"sqlite+aiosqlite:///{data_dir / 'moot.db'}") as store:
        return (await store.get_room(room_id)).status


def _turns(http: httpx.Client, room_id: str) -> list[tuple[int, str, str]]:
    items = http.get(f"/rooms/{room_id}/messages", params={"limit": 100}).json()["items"]
    return [(e["round"], e["kind"], e["speaker"]) for e in items if e["kind"] not in ("task", "intervention")]


@pytest.mark.slow
@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_server_resumes_its_room_on_the_next_start_L10(tmp_path: Path, kill: signal.Signals) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    server = _serve(tmp_path, port)
    try:
        with httpx.Client(base_url=base, headers={"authorization": f"Bearer {ADMIN}"}, timeout=10) as http:
            _wait(lambda: http.get("/users/me").status_code == 200, 30, "the server to start")
            room_id = http.post("/rooms", json=ROOM).json()["id"]
            assert http.post(f"/rooms/{room_id}/run").status_code == 202
            _wait(lambda: len(_turns(http, room_id)) >= 2, 30, "two turns to be stored")
            server.send_signal(kill)
            server.wait(timeout=30)
            status = asyncio.run(_stored_status(tmp_path, room_id))
            assert status == ("paused" if kill == signal.SIGTERM else "running")  # SIGTERM pauses cleanly
            server = _serve(tmp_path, port)
            _wait(lambda: http.get("/users/me").status_code == 200, 30, "the server to start again")
            done = _wait(lambda: _room(http, room_id)["status"] == "completed", 60, "the room to complete")
            assert done
            room = _room(http, room_id)
            assert room["conclusion"]["summary"]
            turns = _turns(http, room_id)
            assert len(turns) == len(set(turns)), "a turn was stored twice"
            assert turns == [
                (0, "opening", "Chair"),
                (1, "speech", "Ana"), (1, "speech", "Ben"), (1, "summary", "Chair"),
                (2, "speech", "Ana"), (2, "speech", "Ben"), (2, "summary", "Chair"),
                (2, "conclusion", "Chair"),
            ]  # fmt: skip
    finally:
        _stop(server)


@pytest.mark.slow
def test_the_server_process_runs_a_room_on_an_openai_compatible_server_B1(tmp_path: Path) -> None:
    """`moot serve` runs on the loop uvicorn picks (uvloop where installed), not the tests' asyncio loop:
    every model call of a real server's room goes through the lean adapter's reader on that loop."""
    port = _free_port()
    fake = FakeLLMServer(api_key="sk-served-0123456789", reply_tokens=6).start_in_thread()
    server = _serve(tmp_path, port, MOOT_BLOCK_PRIVATE_URLS="false")
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}/api/v1",
            headers={"authorization": f"Bearer {ADMIN}"},
            timeout=10,
        ) as http:
            _wait(lambda: http.get("/users/me").status_code == 200, 30, "the server to start")
            provider = {
                "name": "local",
                "type": "openai",
                "base_url": f"{fake.url}/v1",
                "default_model": "fake-model",
                "api_key": "sk-served-0123456789",
            }
            assert http.post("/providers", json=provider).status_code == 201
            room = {
                **ROOM,
                "protocol": "sequential",
                "max_rounds": 1,
                "models": {"served": {"provider": "local", "model": "fake-model"}},
                "default_model": "served",
                "agents": ROOM["agents"][1:],
            }
            answer = http.post("/rooms", json=room)
            assert answer.status_code == 201, answer.text
            room_id = answer.json()["id"]
            assert http.post(f"/rooms/{room_id}/run").status_code == 202
            _wait(lambda: _room(http, room_id)["status"] in ("completed", "error"), 60, "the room to end")
            assert _room(http, room_id)["status"] == "completed", _room(http, room_id)
            items = http.get(f"/rooms/{room_id}/messages", params={"limit": 100}).json()["items"]
            speeches = [e for e in items if e["kind"] == "speech"]
            assert [e["speaker"] for e in speeches] == ["Ana", "Ben"]
            assert all(e["text"] and not e.get("failed") for e in speeches), speeches
            assert len(fake.requests) == 2
    finally:
        _stop(server)
        fake.stop()
