"""The Anthropic adapter against a fake server speaking the real Messages API."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from moot.exceptions import ModelAuthError, ModelRequestError, ModelUnavailable, TransientModelError
from moot.models import Message, Model, ModelRequest, Usage, estimate_tokens
from moot.models.anthropic import alternating_turns
from moot.models.retry import complete
from moot.spec import ModelSpec
from moot.testing.servers import FakeLLMServer, Fault, default_reply

from .conftest import Collect

REQUEST = ModelRequest(
    system="You are Ada, a careful engineer.",
    messages=(
        Message("user", "Shall we ship on Friday?"),
        Message("assistant", "Not before the tests pass."),
        Message("user", "They pass now."),
    ),
    max_tokens=300,
)
MakeSpec = Callable[..., ModelSpec]
MakeModel = Callable[[ModelSpec], Model]


@pytest.fixture
def spec(make_spec: MakeSpec) -> ModelSpec:
    return make_spec("anthropic")


@pytest.fixture
def model(make_model: MakeModel, spec: ModelSpec) -> Model:
    return make_model(spec)


async def test_a_stream_yields_the_reply_then_the_provider_usage(
    server: FakeLLMServer, model: Model, collect: Collect, api_key: str
) -> None:
    # covers: L7
    deltas, completion = await collect(model, REQUEST)
    assert "".join(deltas) == completion.text == default_reply(20)
    assert completion.finish_reason == "stop"
    assert completion.model == "fake-model"
    [sent] = server.requests
    assert sent.usage is not None
    assert completion.usage == Usage(input_tokens=sent.usage[0], output_tokens=sent.usage[1])
    assert sent.path == "/v1/messages"
    # anthropic 2.x sends the key as a Bearer token; older SDKs and curl examples use x-api-key
    assert api_key in (
        sent.headers.get("x-api-key"),
        sent.headers.get("authorization", "").removeprefix("Bearer "),
    )
    assert "anthropic-version" in sent.headers
    assert sent.body["system"] == "You are Ada, a careful engineer."
    assert sent.body["messages"] == [{"role": m.role, "content": m.content} for m in REQUEST.messages]
    assert sent.body["max_tokens"] == 300
    assert sent.body["stream"] is True


def test_turns_alternate_from_a_user_turn() -> None:
    messages = (
        Message("assistant", "I open."),
        Message("user", "Bob: yes."),
        Message("user", "Carol: no."),
        Message("assistant", "Then we wait."),
        Message("assistant", "Or vote."),
    )
    assert alternating_turns(messages) == [
        {"role": "user", "content": "Begin."},
        {"role": "assistant", "content": "I open."},
        {"role": "user", "content": "Bob: yes.\n\nCarol: no."},
        {"role": "assistant", "content": "Then we wait.\n\nOr vote."},
    ]
    assert alternating_turns(()) == [{"role": "user", "content": "Begin."}]


async def test_merged_turns_and_no_empty_system_are_sent(
    server: FakeLLMServer, model: Model, collect: Collect
) -> None:
    await collect(model, ModelRequest(system="", messages=(Message("user", "a"), Message("user", "b"))))
    body = server.requests[0].body
    assert body["messages"] == [{"role": "user", "content": "a\n\nb"}]
    assert "system" not in body


async def test_a_reply_cut_short_by_max_tokens_says_length(model: Model, collect: Collect) -> None:
    _, completion = await collect(model, ModelRequest(system="s", messages=REQUEST.messages, max_tokens=5))
    assert completion.text.rstrip() == default_reply(5)
    assert completion.finish_reason == "length"


async def test_missing_usage_is_estimated(server: FakeLLMServer, model: Model, collect: Collect) -> None:
    # covers: L7
    server.report_usage = False
    _, completion = await collect(model, REQUEST)
    assert completion.usage.estimated
    assert completion.usage.output_tokens == estimate_tokens(completion.text)


@pytest.mark.parametrize(
    "fault",
    [
        Fault.status(429, retry_after=0.01),
        Fault.status(429),
        Fault.status(500),
        Fault.status(529),
        Fault.cut(2),
    ],
)
async def test_a_transient_failure_then_success(
    server: FakeLLMServer, model: Model, spec: ModelSpec, fault: Fault
) -> None:
    server.faults.append(fault)
    completion = await complete(model, REQUEST, spec)
    assert completion.text == default_reply(20)
    assert len(server.requests) == 2


async def test_overloaded_every_time_gives_up_after_max_retries(
    server: FakeLLMServer, model: Model, spec: ModelSpec
) -> None:
    server.faults.extend([Fault.status(529)] * 5)
    with pytest.raises(TransientModelError, match="Overloaded") as caught:
        await complete(model, REQUEST, spec)
    assert caught.value.status == 529
    assert len(server.requests) == spec.max_retries + 1


async def test_a_rate_limit_error_carries_retry_after(
    server: FakeLLMServer, model: Model, collect: Collect
) -> None:
    server.faults.append(Fault.status(429, retry_after=7))
    with pytest.raises(TransientModelError, match="rate limited") as caught:
        await collect(model, REQUEST)
    assert caught.value.retry_after == 7


async def test_a_stream_cut_mid_way_is_transient(
    server: FakeLLMServer, model: Model, collect: Collect
) -> None:
    server.faults.append(Fault.cut(after_chunks=2))
    deltas: list[str] = []
    with pytest.raises(TransientModelError, match="mid-reply"):
        await collect(model, REQUEST, deltas)
    assert deltas == ["the ", "council "]


async def test_a_refused_key_is_not_retried_and_not_repeated(
    server: FakeLLMServer, make_spec: MakeSpec, make_model: MakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "sk-ant-wrong-9876543210"
    monkeypatch.setenv("ANTHROPIC_API_KEY", wrong)
    spec = make_spec("anthropic", api_key=None)
    with pytest.raises(ModelAuthError, match="ANTHROPIC_API_KEY") as caught:
        await complete(make_model(spec), REQUEST, spec)
    assert len(server.requests) == 1
    assert caught.value.status == 401
    assert wrong not in str(caught.value)


async def test_an_unknown_model_is_a_request_error_with_the_servers_words(
    server: FakeLLMServer, make_spec: MakeSpec, make_model: MakeModel
) -> None:
    spec = make_spec("anthropic", model="claude-nonexistent")
    server.faults.append(Fault.status(404))
    with pytest.raises(ModelRequestError, match="model: claude-nonexistent"):
        await complete(make_model(spec), REQUEST, spec)
    assert len(server.requests) == 1


async def test_a_refused_connection_is_transient(
    make_spec: MakeSpec, make_model: MakeModel, closed_port: int
) -> None:
    spec = make_spec("anthropic", base_url=f"http://127.0.0.1:{closed_port}", max_retries=1)
    with pytest.raises(TransientModelError, match="cannot reach"):
        await complete(make_model(spec), REQUEST, spec)


async def test_a_silent_server_times_out(
    server: FakeLLMServer, make_spec: MakeSpec, make_model: MakeModel, collect: Collect
) -> None:
    server.faults.append(Fault.hang(3, after_chunks=1))
    with pytest.raises(TransientModelError, match=r"for 0\.2s mid-reply"):
        await collect(make_model(make_spec("anthropic", timeout=0.2)), REQUEST)


async def test_a_missing_key_variable_is_named(
    server: FakeLLMServer, make_spec: MakeSpec, make_model: MakeModel, collect: Collect
) -> None:
    # covers: L3
    model = make_model(make_spec("anthropic", api_key=None, api_key_env="MOOT_UNSET_KEY"))
    with pytest.raises(ModelUnavailable, match="MOOT_UNSET_KEY"):
        await collect(model, REQUEST)
    assert server.requests == []
