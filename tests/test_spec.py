"""Room files: what loads, and what a person is told when it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from moot.exceptions import ConfigError, ModelUnavailable
from moot.spec import MAX_ROOM_FILE_BYTES, RoomSpec, load_room

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
        ("task: t\nprotocol: chess\nagents: [{name: A, model: simulated}]", "protocol: Input should be"),
        ("task: t\nagents: [{name: A, model: simulated}, {name: a, model: simulated}]", "used twice"),
        ("task: t\nagents: [{name: A, modle: simulated}]", "agents[0].modle: unknown field 'modle'"),
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


def _error(data: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as info:
        RoomSpec.from_data(data, source="room.yaml")
    return str(info.value)


AGENT = {"name": "A", "model": "simulated"}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"task": "t", "agents": [{"name": "A", "modle": "simulated"}]},
            "agents[0].modle: unknown field 'modle'; did you mean 'model'?",
        ),
        (
            {"task": "t", "protocl": "board", "agents": [AGENT]},
            "protocl: unknown field 'protocl'; did you mean 'protocol'?",
        ),
        (
            {"task": "t", "agents": [{"name": "A", "model": {"provider": "openai", "temprature": 1}}]},
            "agents[0].model.temprature: unknown field 'temprature'; did you mean 'temperature'?",
        ),
        (
            {
                "task": "t",
                "models": {"model": {"provider": "openai", "modle": "x"}},
                "agents": [{"name": "A"}],
            },
            "models.model.modle: unknown field 'modle'; did you mean 'model'?",
        ),
        ({"task": "t", "limits": {"reply_token": 9}, "agents": [AGENT]}, "did you mean 'reply_tokens'?"),
        ({"task": "t", "agents": [{**AGENT, "colur": "red"}]}, "did you mean 'colour'?"),
        (
            {"task": "t", "agents": [{**AGENT, "zzz": 1}]},
            "unknown field 'zzz'; the fields here are active, avatar,",
        ),
    ],
)
def test_hardening_13_a_misspelt_key_says_what_was_meant(data: dict[str, object], expected: str) -> None:
    message = _error(data)
    assert expected in message
    assert "Extra inputs" not in message


def test_hardening_13_a_huge_room_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as file:
        file.write(b"task: t\nagents: [{name: A, model: simulated}]\n# ")
        file.truncate(50 * 1024 * 1024)  # sparse: 50 MB on paper, nothing on disk
    with pytest.raises(ConfigError) as info:
        load_room(path)
    message = str(info.value)
    assert str(path) in message
    assert "50.0 MB" in message
    assert f"at most {MAX_ROOM_FILE_BYTES / 1024 / 1024:.1f} MB" in message


def test_a_room_file_just_under_the_limit_loads(tmp_path: Path) -> None:
    path = tmp_path / "room.yaml"
    body = "task: t\nagents: [{name: A, model: simulated}]\n# "
    path.write_text(body + "x" * (MAX_ROOM_FILE_BYTES - len(body) - 1) + "\n", encoding="utf-8")
    assert load_room(path).task == "t"


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        ({"colour": "blurple"}, "agents[0].colour: 'blurple' is not a colour; use #rrggbb or #rgb"),
        ({"color": "#12345"}, "agents[0].color: '#12345' is not a colour"),
        ({"colour": "bright_red"}, "is not a colour"),
        (
            {"avatar": "a whole sentence about me"},
            "agents[0].avatar: 'a whole sentence about me' is not an avatar",
        ),
        ({"avatar": "a\nb"}, "is not an avatar; use an emoji or a short text"),
        ({"avatar": "javascript:alert(1)"}, "is not an http:// or https:// URL"),
        ({"avatar": "ftp://example.com/a.png"}, "is not an http:// or https:// URL"),
    ],
)
def test_hardening_13_bad_colours_and_avatars_are_refused(agent: dict[str, str], expected: str) -> None:
    assert expected in _error({"task": "t", "agents": [{**AGENT, **agent}]})


def test_hardening_13_colours_are_stored_as_rrggbb_and_avatars_may_be_emoji_text_or_urls() -> None:
    agents = [
        {"name": "A", "colour": "#ABC", "avatar": "🦉"},
        {"name": "B", "color": "Teal", "avatar": "JD"},
        {"name": "C", "colour": "#E6194B", "avatar": "https://example.com/c.png"},
        {"name": "D", "avatar": "👩‍👩‍👧‍👦"},
    ]
    room = RoomSpec.from_data({"task": "t", "default_model": "simulated", "agents": agents})
    assert [a.colour for a in room.agents][:3] == ["#aabbcc", "#008080", "#e6194b"]
    assert [a.avatar for a in room.agents] == ["🦉", "JD", "https://example.com/c.png", "👩‍👩‍👧‍👦"]


def test_hardening_13_a_base_url_must_be_an_http_url() -> None:
    model = {"provider": "openai", "base_url": "localhost:11434/v1"}
    message = _error({"task": "t", "agents": [{"name": "A", "model": model}]})
    assert "agents[0].model.base_url: 'localhost:11434/v1' is not an http:// or https:// URL" in message
    assert "http://127.0.0.1:11434/v1" in message


@pytest.mark.parametrize(
    ("protocol", "agents", "expected"),
    [
        (
            "board",
            [{"name": "Chair", "role": "moderator"}, {"name": "A", "active": False}],
            "no active member",
        ),
        (
            "sequential",
            [{"name": "A", "active": False}, {"name": "B", "active": False}],
            "no agent is active",
        ),
        ("parallel", [{"name": "A", "role": "moderator"}], "no active member"),
    ],
)
def test_hardening_13_a_room_that_cannot_start_says_why(
    protocol: str, agents: list[dict[str, object]], expected: str
) -> None:
    room = RoomSpec.from_data(
        {"task": "t", "protocol": protocol, "default_model": "simulated", "agents": agents}
    )
    problem = room.cannot_run()
    assert problem is not None
    assert expected in problem


def test_rooms_that_can_start_have_no_problem() -> None:
    for protocol in ("board", "sequential", "parallel"):
        room = RoomSpec.from_data(
            {
                "task": "t",
                "protocol": protocol,
                "default_model": "simulated",
                "agents": [{"name": "A"}, {"name": "B"}],
            }
        )
        assert room.cannot_run() is None
    lone = RoomSpec.from_data({"task": "t", "default_model": "simulated", "agents": [{"name": "A"}]})
    assert lone.cannot_run() is None  # one agent thinking aloud, round after round
