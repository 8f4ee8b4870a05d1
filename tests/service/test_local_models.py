"""A GGUF model run by the server itself (provider llamacpp): off unless the operator names a folder, and
then only files in that folder, never a path a user sends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from store.fixtures import Database

from .helpers import LiveServer, make_settings, running_server
from .test_rooms import room_on

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.mark.parametrize("model", [{"provider": "llamacpp", "model_path": "tiny.gguf"}, "llamacpp:tiny"])
async def test_local_models_are_refused_unless_the_operator_turns_them_on(
    model: Any, shared_server: LiveServer
) -> None:
    async with shared_server.client(await shared_server.new_user()) as ana:
        body = room_on("simulated", "sequential")
        body["agents"][0]["model"] = model
        answer = await ana.post("/rooms", json=body)
    assert answer.status_code == 422
    assert answer.json()["error"]["message"] == (
        "agents[0].model: provider llamacpp (a GGUF model run on this server) is off here; the "
        "operator turns it on with MOOT_LOCAL_MODELS_DIR, a folder of GGUF files that model_path then names"
    )


async def test_with_a_models_folder_only_its_files_are_taken(database: Database, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "tiny.gguf").write_bytes(b"GGUF" + bytes(16))
    (tmp_path / "secret.gguf").write_bytes(b"GGUF" + bytes(16))
    async with (
        running_server(database, make_settings(tmp_path, local_models_dir=folder)) as server,
        server.client(await server.new_user()) as ana,
    ):
        answers = {}
        for path in ("tiny", "../secret.gguf", str(tmp_path / "secret.gguf"), "missing.gguf"):
            body = room_on("simulated", "sequential")
            body["agents"][0]["model"] = {"provider": "llamacpp", "model_path": path}
            answer = await ana.post("/rooms", json=body)
            answers[path] = (answer.status_code, (answer.json().get("error") or {}).get("message", ""))
    assert answers["tiny"][0] == 201
    assert "must name a file inside the server's models folder" in answers["../secret.gguf"][1]
    assert "must name a file inside the server's models folder" in answers[str(tmp_path / "secret.gguf")][1]
    assert "no such file: missing.gguf" in answers["missing.gguf"][1]
