"""Agent templates (L2): reusable agents owned by a user, used in rooms by name, with overrides."""

from __future__ import annotations

import pytest

from moot.testing.servers import FakeLLMServer

from .helpers import LiveServer, provider_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

SCEPTIC = {
    "name": "Sceptic",
    "persona": "doubts every plan",
    "thinking_style": "looks for what breaks",
    "color": "#123456",
    "model": {"provider": "simulated", "seed": 3},
}


async def test_a_template_is_stored_listed_changed_and_deleted_L2(shared_server: LiveServer) -> None:
    # covers: L2
    async with shared_server.client(await shared_server.new_user()) as ana:
        created = await ana.post("/agents", json=SCEPTIC)
        assert created.status_code == 201
        template = created.json()
        assert (template["name"], template["colour"], template["role"]) == ("Sceptic", "#123456", "member")
        assert template["model"] == {"provider": "simulated", "seed": 3}
        assert template["speaking_style"] == ""
        path = f"/agents/{template['id']}"
        assert (await ana.get(path)).json() == template
        listed = (await ana.get("/agents")).json()
        assert (listed["total"], listed["items"]) == (1, [template])
        changed = (await ana.patch(path, json={"persona": "doubts less", "model": None})).json()
        assert (changed["persona"], changed["model"], changed["thinking_style"]) == (
            "doubts less",
            None,
            "looks for what breaks",
        )
        assert (await ana.patch(path, json={"persona": None})).status_code == 422
        taken = await ana.post("/agents", json={"name": "Sceptic"})
        assert taken.status_code == 409
        assert (await ana.delete(path)).status_code == 204
        assert (await ana.get(path)).status_code == 404


async def test_a_template_must_name_a_provider_of_its_owner(
    shared_server: LiveServer, fake_llm: FakeLLMServer
) -> None:
    async with shared_server.client(await shared_server.new_user()) as ana:
        refused = await ana.post("/agents", json={"name": "A", "model": {"provider": "local"}})
        assert refused.status_code == 422
        assert refused.json()["error"]["message"].startswith("model: you have no provider named 'local'")
        await provider_for(ana, fake_llm)
        assert (
            await ana.post("/agents", json={"name": "A", "model": {"provider": "local"}})
        ).status_code == 201
        bad_name = await ana.post("/agents", json={"name": "A [x]"})
        assert bad_name.status_code == 422
        assert "without brackets" in bad_name.json()["error"]["message"]


async def test_a_room_takes_agents_from_templates_with_overrides_L2(
    shared_server: LiveServer, fake_llm: FakeLLMServer
) -> None:
    # covers: L2
    async with shared_server.client(await shared_server.new_user()) as ana:
        await provider_for(ana, fake_llm)
        await ana.post("/agents", json=SCEPTIC)
        await ana.post("/agents", json={"name": "Chair", "role": "moderator", "model": {"provider": "local"}})
        body = {
            "task": "Ship on Friday?",
            "protocol": "board",
            "agents": [
                {"template": "Chair"},
                {"template": "Sceptic", "name": "Doubter", "persona": "doubts even more"},
                {"template": "Sceptic", "name": "Other", "model": "local:other-model"},
            ],
        }
        created = await ana.post("/rooms", json=body)
        assert created.status_code == 201, created.text
        room = created.json()
        agents = {a["name"]: a for a in room["agents"]}
        assert list(agents) == ["Chair", "Doubter", "Other"]
        assert (agents["Chair"]["role"], agents["Chair"]["model"]) == ("moderator", "openai:fake-model")
        assert agents["Chair"]["stored_provider"] == "local"
        assert agents["Doubter"]["model"] == "simulated:simulated"
        assert agents["Other"]["model"] == "openai:other-model"
        spec = {a["name"]: a for a in room["spec"]["agents"]}
        assert spec["Doubter"]["persona"] == "doubts even more"
        assert spec["Doubter"]["thinking_style"] == "looks for what breaks"
        assert spec["Doubter"]["colour"] == "#123456"  # `color` is taken in, `colour` comes out
        missing = await ana.post("/rooms", json={**body, "agents": [{"template": "Nobody"}]})
        assert missing.status_code == 422
        assert missing.json()["error"]["message"].startswith(
            "agents[0].template: you have no agent template named 'Nobody'"
        )
