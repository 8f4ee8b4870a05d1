"""The OpenAI-compatible adapters against a fake server speaking the real protocol; both transports alike."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from moot.exceptions import ModelAuthError, ModelRequestError, ModelUnavailable, TransientModelError
from moot.models import Message, Model, ModelRequest, Usage, estimate_tokens
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


@pytest.fixture(params=["lean", "sdk"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def spec(make_spec: MakeSpec, transport: str) -> ModelSpec:
    return make_spec(transport=transport)


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
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {api_key}"
    assert sent.body["model"] == "fake-model"
    assert sent.body["messages"] == [
        {"role": "system", "content": "You are Ada, a careful engineer."},
        {"role": "user", "content": "Shall we ship on Friday?"},
        {"role": "assistant", "content": "Not before the tests pass."},
        {"role": "user", "content": "They pass now."},
    ]
    assert sent.body["max_tokens"] == 300
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert "temperature" not in sent.body
    assert "response_format" not in sent.body


async def test_temperature_json_output_and_the_models_token_cap_are_sent(
    server: FakeLLMServer, make_spec: MakeSpec, make_model: MakeModel, transport: str, collect: Collect
) -> None:
    model = make_model(make_spec(transport=transport, temperature=0.3, max_tokens=100))
    await collect(model, ModelRequest(system="", messages=(Message("user", "Speak"),), max_tokens=500))
    await collect(
        model,
        ModelRequest(system="", messages=(Message("user", "JSON please"),), max_tokens=700, json_output=True),
    )
    speech, answer = server.requests[0].body, server.requests[1].body
    assert speech["temperature"] == answer["temperature"] == 0.3
    assert speech["max_tokens"] == 100  # the model's cap bounds speeches
    assert answer["max_tokens"] == 700  # a structured answer has its own limit: a cut JSON is no answer
    assert answer["response_format"] == {"type": "json_object"}
    assert answer["messages"] == [{"role": "user", "content": "JSON please"}]  # no empty system message


async def test_a_reply_cut_short_by_max_tokens_says_length(model: Model, collect: Collect) -> None:
    _, completion = await collect(model, ModelRequest(system="s", messages=REQUEST.messages, max_tokens=5))
    assert completion.text.rstrip() == default_reply(5)
    assert completion.finish_reason == "length"


async def test_a_slow_server_is_streamed_as_it_comes(
    server: FakeLLMServer, model: Model, collect: Collect
) -> None:
    server.reply_tokens, server.token_delay = 4, 0.03
    deltas, completion = await collect(model, REQUEST)
    assert "".join(deltas) == completion.text == default_reply(4)
    assert len(deltas) > 1  # passed on as it came, not held until the end


async def test_the_lean_transport_joins_what_arrives_together(
    server: FakeLLMServer, make_spec: MakeSpec, make_model: MakeModel, collect: Collect
) -> None:
    server.reply_tokens = 300
    deltas, completion = await collect(make_model(make_spec(transport="lean")), REQUEST)
    assert "".join(deltas) == completion.text == default_reply(300)
    assert len(deltas) < 100  # 300 chunks written back to back reach the consumer in a few reads


async def test_missing_usage_is_estimated(server: FakeLLMServer, model: Model, collect: Collect) -> None:
    # covers: L7
    server.report_usage = False
    _, completion = await collect(model, REQUEST)
    assert completion.usage.estimated
    assert completion.usage.output_tokens == estimate_tokens(completion.text)
    assert completion.usage.input_tokens > 0


async def test_rate_limit_then_success_waits_what_the_server_asked(
    server: FakeLLMServer, make_spec: MakeSpec, make_model: MakeModel, transport: str
) -> None:
    spec = make_spec(transport=transport, retry_max_wait=5)
    server.faults.append(Fault.status(429, retry_after=0.2))
    began = time.monotonic()
    completion = await complete(make_model(spec), REQUEST, spec)
    assert time.monotonic() - began >= 0.19  # asyncio may wake a timer up to its clock resolution early
    assert completion.text == default_reply(20)
    assert len(server.requests) == 2


async def test_a_rate_limit_error_carries_retry_after(
    server: FakeLLMServer, model: Model, collect: Collect
) -> None:
    server.faults.append(Fault.status(429, retry_after=3))
    with pytest.raises(TransientModelError, match="rate limited") as caught:
        await collect(model, REQUEST)
    assert caught.value.retry_after == 3
    assert caught.value.status == 429
    assert "Rate limit reached" in str(caught.value)


@pytest.mark.parametrize("fault", [Fault.status(429), Fault.status(500), Fault.status(503), Fault.cut(3)])
async def test_a_transient_failure_then_success(
    server: FakeLLMServer, model: Model, spec: ModelSpec, fault: Fault
) -> None:
    server.faults.append(fault)
    completion = await complete(model, REQUEST, spec)
    assert completion.text == default_reply(20)
    assert len(server.requests) == 2


async def test_failing_every_time_gives_up_after_max_retries(
    server: FakeLLMServer, model: Model, spec: ModelSpec
) -> None:
    server.faults.extend([Fault.status(500)] * 5)
    with pytest.raises(TransientModelError, match="HTTP 500") as caught:
        await complete(model, REQUEST, spec)
    assert caught.value.status == 500
    assert len(server.requests) == spec.max_retries + 1


async def test_a_stream_cut_mid_way_is_transient(
    server: FakeLLMServer, model: Model, collect: Collect
) -> None:
    server.faults.append(Fault.cut(after_chunks=3))
    deltas: list[str] = []
    with pytest.raises(TransientModelError, match="mid-reply"):
        await collect(model, REQUEST, deltas)
    assert "".join(deltas) == "the council weighs "


async def test_a_refused_key_is_not_retried_and_not_repeated(
    server: FakeLLMServer,
    make_spec: MakeSpec,
    make_model: MakeModel,
    transport: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = "sk-wrong-key-9876543210"
    monkeypatch.setenv("MOOT_TEST_KEY", wrong)
    spec = make_spec(transport=transport, api_key=None, api_key_env="MOOT_TEST_KEY")
    with pytest.raises(ModelAuthError, match="MOOT_TEST_KEY") as caught:
        await complete(make_model(spec), REQUEST, spec)
    assert len(server.requests) == 1
    assert caught.value.status == 401
    assert wrong not in str(caught.value)


async def test_an_unknown_model_is_a_request_error_with_the_servers_words(
    server: FakeLLMServer, make_spec: MakeSpec, make_model: MakeModel, transport: str
) -> None:
    spec = make_spec(transport=transport, model="gpt-nonexistent")
    server.faults.append(Fault.status(404))
    with pytest.raises(ModelRequestError) as caught:
        await complete(make_model(spec), REQUEST, spec)
    assert "The model `gpt-nonexistent` does not exist" in str(caught.value)
    assert caught.value.status == 404
    assert len(server.requests) == 1


async def test_a_refused_connection_is_transient(
    make_spec: MakeSpec, make_model: MakeModel, transport: str, closed_port: int
) -> None:
    spec = make_spec(transport=transport, base_url=f"http://127.0.0.1:{closed_port}/v1", max_retries=1)
    with pytest.raises(TransientModelError, match="cannot reach"):
        await complete(make_model(spec), REQUEST, spec)


@pytest.mark.parametrize(("after_chunks", "where"), [(None, "waiting for the reply"), (2, "mid-reply")])
async def test_a_silent_server_times_out(
    server: FakeLLMServer,
    make_spec: MakeSpec,
    make_model: MakeModel,
    transport: str,
    collect: Collect,
    after_chunks: int | None,
    where: str,
) -> None:
    server.faults.append(Fault.hang(3, after_chunks=after_chunks))
    with pytest.raises(TransientModelError, match=rf"for 0\.2s {where}"):
        await collect(make_model(make_spec(transport=transport, timeout=0.2)), REQUEST)


async def test_a_missing_key_variable_is_named(
    server: FakeLLMServer, make_spec: MakeSpec, make_model: MakeModel, transport: str, collect: Collect
) -> None:
    # covers: L3
    model = make_model(make_spec(transport=transport, api_key=None, api_key_env="MOOT_UNSET_KEY"))
    with pytest.raises(ModelUnavailable, match="MOOT_UNSET_KEY"):
        await collect(model, REQUEST)
    assert server.requests == []


async def test_a_consumer_may_stop_early_and_stream_again(
    server: FakeLLMServer, model: Model, collect: Collect
) -> None:
    server.token_delay = 0.01
    stream = model.stream(REQUEST)
    assert isinstance(await anext(stream), str)
    await stream.aclose()  # type: ignore[attr-defined]
    server.token_delay = 0
    deltas, completion = await collect(model, REQUEST)
    assert "".join(deltas) == completion.text == default_reply(20)
