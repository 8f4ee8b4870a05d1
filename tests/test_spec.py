"""Room files: what loads, and what a person is told when it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from moot.exceptions import ConfigError, ModelUnavailable
from moot.spec import RoomSpec, load_room

CONTRACT = """
task: Should we open-source our engine?
protocol: parallel            # sequential | parallel | board
max_rounds: 2
language: en                  # en | zh
models:
  local: {provider: openai, base_url: "http://127.0.0.1:8000/v1", api_key_env: LOCAL_KEY, model: some-model}
  sim: {provider: simulated}
agents:
  - {name: Alice, persona: "A cautious CFO", model: local}
  - {name: Bob, persona: "An ambitious CTO", model: local}
  - {name: Chair, role: moderator, persona: "A neutral chair", model: sim}
"""


def test_the_contract_room_file_loads_L1_L2_B1(tmp_path: Path) -> None:
    path = tmp_path / "room.yaml"
    path.write_text(CONTRACT)
    room = load_room(path)
    assert (room.protocol, room.max_rounds, room.language) == ("parallel", 2, "en")
    alice, bob, chair = room.agents
    assert room.model_for(alice) is room.model_for(bob)  # declared once, shared
    assert room.model_for(alice).label == "openai:some-model"
    assert room.moderator is chair and [a.name for a in room.members] == ["Alice", "Bob"]
    assert len({a.colour for a in room.agents}) == 3  # every agent gets its own colour


def test_json_room_files_and_every_agent_field_load_L2_B2(tmp_path: Path) -> None:
    path = tmp_path / "room.json"
    path.write_text(
        '{"task": "t", "protocol": "board", "agents": [{"name": "Ann", "model": "simulated", "avatar": "🦉",'
        ' "color": "#123456", "persona": "p", "thinking_style": "t", "speaking_style": "s",'
        ' "decision_framework": "d", "system_prompt": "You are Ann.", "active": false, "role": "moderator"},'
        ' {"name": "Ben", "model": {"provider": "anthropic", "model": "claude-x", "max_tokens": 300,'
        ' "temperature": 0.2}}]}'
    )
    room = load_room(path)
    ann, ben = room.agents
    assert (ann.colour, ann.avatar, ann.active, ann.decision_framework) == ("#123456", "🦉", False, "d")
    assert room.model_for(ben).label == "anthropic:claude-x" and room.model_for(ben).max_tokens == 300
    assert room.moderator is ben  # B3: the declared moderator is inactive; the first active agent stands in


def test_provider_default_model_is_used_when_none_is_named_L2_L3() -> None:
    room = RoomSpec.from_data({"task": "t", "agents": [{"name": "A", "model": "openai"}]})
    assert room.model_for(room.agents[0]).label == "openai:gpt-4o-mini"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("task: t\nagents: [{name: A, model: nope}]", "agents[0].model: unknown model 'nope'"),
        ("task: t\nagents: [{name: A, model: {provider: foo}}]", "agents[0].model.provider: Input should be"),
        ("task: t\nprotocol: debate\nagents: [{name: A, model: simulated}]", "protocol: Input should be"),
        ("task: t\nagents: [{name: A, model: simulated}, {name: a, model: simulated}]", "used twice"),
        ("task: t\nagents: [{name: A, modle: simulated}]", "agents[0].modle: Extra inputs are not permitted"),
        (
            "task: t\nmax_rounds: 0\nagents: [{name: A, model: simulated}]",
            "max_rounds: Input should be greater",
        ),
        ("agents: [{name: A, model: simulated}]", "task: Field required"),
        ("task: [unclosed", "not valid YAML"),
        ("- just a list", "a room is a mapping"),
    ],
)
def test_bad_room_files_name_the_file_the_field_and_what_is_allowed(
    tmp_path: Path, body: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_room(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_room(tmp_path / "absent.yaml")


def test_api_key_comes_from_the_named_variable_and_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    room = RoomSpec.from_data(
        {"task": "t", "agents": [{"name": "A", "model": {"provider": "openai", "api_key_env": "MY_KEY"}}]}
    )
    spec = room.model_for(room.agents[0])
    with pytest.raises(ModelUnavailable, match="export MY_KEY"):
        spec.resolve_api_key()
    monkeypatch.setenv("MY_KEY", "sk-123")
    assert spec.resolve_api_key() == "sk-123"
    assert "sk-123" not in repr(spec)
