"""`provider: llamacpp` as a declaration, its errors, and what the OpenAI adapter learns from a server:
which response format it takes for structured answers, and its context window.

The real llama.cpp server with a real model is in tests/peers/.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from moot.engine import Run
from moot.exceptions import ConfigError, ModelUnavailable
from moot.models import Message, ModelRequest, build_model
from moot.models.llamacpp import resolve_model_path
from moot.spec import ModelSpec, RoomSpec
from moot.testing.servers import FakeLLMServer, Fault

from .conftest import Collect

SCHEMA = {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}}


def test_a_local_model_needs_model_path_and_only_it_takes_one() -> None:
    with pytest.raises(ValueError, match="provider llamacpp needs model_path"):
        ModelSpec.model_validate({"provider": "llamacpp"})
    with pytest.raises(ValueError, match=r"model_path, slots: only for provider llamacpp"):
        ModelSpec.model_validate({"provider": "openai", "model_path": "x.gguf", "slots": 2})
    with pytest.raises(ValueError, match="give model_path, not base_url"):
        ModelSpec.model_validate({"provider": "llamacpp", "model_path": "x.gguf", "base_url": "http://h/v1"})
    spec = ModelSpec.model_validate({"provider": "llamacpp", "model_path": "/models/Qwen2.5-0.5B.gguf"})
    assert (spec.label, spec.window, spec.resolve_api_key()) == ("llamacpp:Qwen2.5-0.5B", 4096, None)


def test_llamacpp_colon_file_names_a_local_model_in_a_room() -> None:
    room = RoomSpec.from_data({"task": "t", "agents": [{"name": "A", "model": "llamacpp:SmolLM2.gguf"}]})
    spec = room.model_for(room.agents[0])
    assert (spec.provider, spec.model_path, spec.label) == ("llamacpp", "SmolLM2.gguf", "llamacpp:SmolLM2")
    with pytest.raises(ConfigError, match="write llamacpp:FILE"):
        RoomSpec.from_data({"task": "t", "agents": [{"name": "A", "model": "llamacpp:"}]})


def test_a_missing_file_and_a_file_that_is_not_gguf_say_so(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match=r"no such file: .*nothing\.gguf; .*`moot models`"):
        resolve_model_path(str(tmp_path / "nothing.gguf"))
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(ModelUnavailable, match=r"is not a GGUF file"):
        resolve_model_path(str(text))
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF" + bytes(16))
    assert resolve_model_path(str(model)) == model.resolve()


def test_the_service_folder_confines_model_path(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.gguf").write_bytes(b"GGUF" + bytes(16))
    (tmp_path / "outside.gguf").write_bytes(b"GGUF" + bytes(16))
    within = tmp_path / "models"
    assert resolve_model_path("tiny", within=within) == (within / "tiny.gguf").resolve()
    with pytest.raises(ModelUnavailable, match="inside the server's models folder"):
        resolve_model_path("../outside.gguf", within=within)
    with pytest.raises(ModelUnavailable, match="inside the server's models folder"):
        resolve_model_path(str(tmp_path / "outside.gguf"), within=within)


def test_without_xllamacpp_a_local_model_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # as Python blocks a module: import fails
    spec = ModelSpec.model_validate({"provider": "llamacpp", "model_path": "x.gguf"})
    with pytest.raises(ModelUnavailable, match=r"needs the local extra .*pip install 'moot\[local\]'"):
        build_model(spec)


async def test_a_structured_answer_asks_for_the_schema_then_json_object_then_the_prompt_alone(
    collect: Collect,
) -> None:
    request = ModelRequest(
        system="s", messages=(Message("user", "JSON"),), json_output=True, schema=SCHEMA, schema_name="c"
    )
    async with FakeLLMServer(reply=lambda body: '{"a": "b"}') as server:
        spec = ModelSpec.model_validate(
            {"provider": "openai", "model": "fake-model", "base_url": server.url + "/v1", "api_key": "k"}
        )
        model = build_model(spec)
        server.faults.extend([Fault.status(400, message="response_format json_schema is not supported")])
        _, first = await collect(model, request)
        _, second = await collect(model, request)  # remembered: json_object at once
        server.faults.extend([Fault.status(400, message="response_format is not supported")])
        _, third = await collect(model, request)
        _, fourth = await collect(model, request)
        await model.aclose()
    formats: list[Any] = [r.body.get("response_format") for r in server.requests]
    schema = {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA, "strict": True}}
    assert formats == [
        schema,
        {"type": "json_object"},
        {"type": "json_object"},
        {"type": "json_object"},
        None,
        None,
    ]
    assert first.text == second.text == third.text == fourth.text == '{"a": "b"}'


async def test_a_declared_window_larger_than_the_servers_is_fitted_to_the_server_and_warned() -> None:
    async with FakeLLMServer(reply_tokens=20, context_window=300, announce_window=True) as server:
        room = RoomSpec.from_data(
            {
                "task": "Open-source it?",
                "protocol": "sequential",
                "max_rounds": 4,
                "models": {
                    "m": {
                        "provider": "openai", "model": "fake-model", "base_url": server.url + "/v1",
                        "api_key": "k", "context_window": 8000, "max_tokens": 30,
                    }
                },
                "limits": {"history_share": 0.9},
                "agents": [{"name": "Alice"}, {"name": "Bob"}],
            }
        )  # fmt: skip
        events = [e async for e in Run(room)]
    warnings = [e for e in events if e.type == "room_warning" and e.code == "context_window_differs"]
    assert len(warnings) == 1
    assert "says context_window 8,000 but the server reads 300 tokens" in warnings[0].message
    assert not [e for e in events if e.type in ("turn_restarted", "turn_failed")]  # fitted before asking
    assert events[-1].type == "room_completed"
