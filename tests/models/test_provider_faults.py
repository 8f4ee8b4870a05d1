"""What a misbehaving server does to every adapter alike: echoed keys, malformed chunks, small windows.

Each adapter (OpenAI lean, OpenAI SDK, Anthropic) meets the same fake server faults over real HTTP.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from moot.exceptions import ContextTooLong, ModelError, ModelRequestError, TransientModelError
from moot.models import Message, Model, ModelRequest, Usage
from moot.models.retry import complete, context_overflow
from moot.scrub import remember_secret
from moot.spec import ModelSpec
from moot.testing.servers import FakeLLMServer, Fault, default_reply

from .conftest import Collect

REQUEST = ModelRequest(
    system="You are Ada, a careful engineer.",
    messages=(Message("user", "Shall we ship on Friday?"),),
    max_tokens=300,
)
MakeSpec = Callable[..., ModelSpec]
MakeModel = Callable[[ModelSpec], Model]
# No known key shape: only the adapter remembering the key it sent can keep it out of a message.
CANARY = "canary-7f3a9c1e5b2d4f60aa"

ADAPTERS = {
    "lean": {"provider": "openai", "transport": "lean"},
    "sdk": {"provider": "openai", "transport": "sdk"},
    "anthropic": {"provider": "anthropic"},
}


@pytest.fixture(params=list(ADAPTERS))
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def spec(make_spec: MakeSpec, adapter: str) -> ModelSpec:
    fields = dict(ADAPTERS[adapter])
    return make_spec(fields.pop("provider"), **fields)


def _all_text(error: BaseException) -> str:
    """Everything an error would show: its message, its args and its attributes."""
    return " ".join([str(error), repr(error), *map(str, error.args), *map(str, vars(error).values())])


ECHOES = {
    "status body": Fault.status(500, message="Internal error for key {key}"),
    "rejected body": Fault.status(400, body={"error": {"message": "bad key {key}", "type": "invalid"}}),
    "refused key": Fault.status(401, message="Incorrect API key provided: {key}."),
    "header": Fault.status(503, headers=[("x-error-detail", "key {key} is over quota")]),
    "in-stream error": Fault.stream_error(after_chunks=2, message="upstream refused key {key}"),
    "redirect": Fault.redirect("/v1/echo/{key}?api_key={key}", message="Moved: see /v1/echo/{key}"),
}


@pytest.mark.parametrize("echo", list(ECHOES))
async def test_hardening_1_a_key_echoed_by_the_server_is_in_no_error_message(
    server: FakeLLMServer, make_spec: MakeSpec, make_model: MakeModel, adapter: str, echo: str
) -> None:
    server.api_key = CANARY
    fields = dict(ADAPTERS[adapter])
    spec = make_spec(fields.pop("provider"), api_key=CANARY, max_retries=0, **fields)
    server.faults.append(ECHOES[echo])
    with pytest.raises(ModelError) as caught:
        await complete(make_model(spec), REQUEST, spec)
    assert CANARY not in _all_text(caught.value)
    assert server.requests, "the fault was served"


async def test_hardening_1_an_in_stream_error_says_the_servers_words_without_the_key(
    server: FakeLLMServer, make_spec: MakeSpec, make_model: MakeModel, adapter: str, collect: Collect
) -> None:
    server.api_key = CANARY
    fields = dict(ADAPTERS[adapter])
    model = make_model(make_spec(fields.pop("provider"), api_key=CANARY, **fields))
    server.faults.append(Fault.stream_error(after_chunks=2, message="upstream refused key {key} today"))
    deltas: list[str] = []
    with pytest.raises(TransientModelError, match=r"upstream refused key \*\*\* today") as caught:
        await collect(model, REQUEST, deltas)
    assert CANARY not in str(caught.value)
    assert "".join(deltas) == "the council "


MALFORMED_OPENAI = [
    '{"choices": "nope"}',
    "[null]",
    '{"choices": [{"index": 0, "delta": "text"}]}',
    '{"choices": [{"index": 0, "delta": {"content": 7}}]}',
    "[1, 2]",
    '{"choices": ["not a choice"]}',
    '"a string"',
    '{"choices": [{"index": 0, "delta": {}, "finish_reason": 3}]}',
    '{"choices": [], "usage": "lots"}',
]
MALFORMED_ANTHROPIC = [
    ("content_block_delta", '{"type": "content_block_delta", "index": 0, "delta": "nope"}'),
    ("content_block_delta", "[null]"),
    (
        "content_block_delta",
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 7}}',
    ),
    ("content_block_delta", '"a string"'),
    ("message_delta", '{"type": "message_delta", "delta": "over", "usage": {"output_tokens": 1}}'),
    ("message_start", '{"type": "message_start", "message": [1, 2]}'),
]


def _malformed(adapter: str) -> list[Fault]:
    if adapter == "anthropic":
        return [Fault.chunk(data, after_chunks=2, event=event) for event, data in MALFORMED_ANTHROPIC]
    return [Fault.chunk(data, after_chunks=2) for data in MALFORMED_OPENAI]


async def test_hardening_4_every_malformed_chunk_is_a_transient_error_with_a_plain_message(
    server: FakeLLMServer, spec: ModelSpec, make_model: MakeModel, adapter: str, collect: Collect
) -> None:
    model = make_model(spec)
    for fault in _malformed(adapter):
        server.faults.append(fault)
        with pytest.raises(TransientModelError) as caught:
            await collect(model, REQUEST)
        message = str(caught.value)
        assert "sent a malformed chunk" in message, fault
        assert message.endswith(f"check that {server.url}{'' if adapter == 'anthropic' else '/v1'} speaks "
                                f"the {spec.provider} protocol"), message  # fmt: skip
        assert "a retry may help" in message
        assert not isinstance(caught.value.__cause__, TransientModelError)  # the shape error, kept as cause
    _, completion = await collect(model, REQUEST)  # the same connection pool serves a clean reply after
    assert completion.text == default_reply(20)


async def test_hardening_4_a_malformed_chunk_is_retried_like_a_cut_stream(
    server: FakeLLMServer, spec: ModelSpec, make_model: MakeModel, adapter: str
) -> None:
    server.faults.append(_malformed(adapter)[0])
    completion = await complete(make_model(spec), REQUEST, spec)
    assert completion.text == default_reply(20)
    assert len(server.requests) == 2


async def test_hardening_4_a_server_that_keeps_sending_malformed_chunks_fails_after_the_retries(
    server: FakeLLMServer, spec: ModelSpec, make_model: MakeModel, adapter: str
) -> None:
    server.faults.extend([_malformed(adapter)[1]] * (spec.max_retries + 1))
    with pytest.raises(TransientModelError, match="malformed chunk"):
        await complete(make_model(spec), REQUEST, spec)
    assert len(server.requests) == spec.max_retries + 1


async def test_hardening_4_an_integer_delta_never_reaches_the_consumer(
    server: FakeLLMServer, spec: ModelSpec, make_model: MakeModel, adapter: str, collect: Collect
) -> None:
    if adapter == "anthropic":
        data = '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 7}}'
    else:
        data = '{"choices": [{"index": 0, "delta": {"content": 7}}]}'
    server.faults.append(Fault.chunk(data, after_chunks=1))
    deltas: list[str] = []
    with pytest.raises(TransientModelError, match="malformed chunk"):
        await collect(make_model(spec), REQUEST, deltas)
    assert all(isinstance(delta, str) for delta in deltas)


async def test_hardening_4_usage_that_is_not_a_count_is_estimated_not_fatal(
    server: FakeLLMServer, make_spec: MakeSpec, make_model: MakeModel, collect: Collect
) -> None:
    for transport in ("lean", "sdk"):
        server.report_usage = False
        server.faults.append(
            Fault.chunk('{"choices": [], "usage": {"prompt_tokens": "many"}}', after_chunks=20)
        )
        _, completion = await collect(make_model(make_spec(transport=transport)), REQUEST)
        assert completion.text == default_reply(20)
        assert completion.usage.estimated


# -- item 10: what Anthropic-compatible servers and small windows need ------------------------------------


async def test_hardening_10_anthropic_sends_the_temperature(
    server: FakeLLMServer, make_spec: MakeSpec, make_model: MakeModel, collect: Collect
) -> None:
    model = make_model(make_spec("anthropic", temperature=0.3))
    await collect(model, REQUEST)
    await collect(model, ModelRequest(system="s", messages=REQUEST.messages, temperature=0.9))
    untold = make_model(make_spec("anthropic"))
    await collect(untold, REQUEST)
    assert [sent.body.get("temperature") for sent in server.requests] == [0.3, 0.9, None]


async def test_hardening_10_anthropic_input_tokens_include_the_cached_ones(
    server: FakeLLMServer, make_spec: MakeSpec, make_model: MakeModel, collect: Collect
) -> None:
    server.cache_read_tokens, server.cache_creation_tokens = 1000, 24
    _, completion = await collect(make_model(make_spec("anthropic")), REQUEST)
    [sent] = server.requests
    assert sent.usage is not None
    assert completion.usage == Usage(input_tokens=sent.usage[0] + 1024, output_tokens=sent.usage[1])


@pytest.mark.parametrize("word", ["length", "max_tokens", "model_context_window_exceeded"])
async def test_hardening_10_a_reply_cut_short_says_length_whatever_the_servers_word(
    server: FakeLLMServer, spec: ModelSpec, make_model: MakeModel, collect: Collect, word: str
) -> None:
    server.length_reason = word
    _, completion = await collect(
        make_model(spec), ModelRequest(system="s", messages=REQUEST.messages, max_tokens=5)
    )
    assert completion.text.rstrip() == default_reply(5)
    assert completion.finish_reason == "length"


@pytest.mark.parametrize("style", ["llama.cpp", "openai"])
async def test_hardening_10_a_context_overflow_says_the_servers_real_window(
    server: FakeLLMServer, spec: ModelSpec, make_model: MakeModel, adapter: str, style: str
) -> None:
    server.context_window, server.context_style = 8, "openai" if style == "openai" else "llama.cpp"
    with pytest.raises(ContextTooLong) as caught:
        await complete(make_model(spec), REQUEST, spec)
    assert isinstance(caught.value, ModelRequestError)
    assert not caught.value.retryable
    assert len(server.requests) == 1
    assert caught.value.limit == 8
    assert caught.value.status == 400
    assert "the server's window is 8 tokens" in str(caught.value)


async def test_hardening_10_a_context_overflow_without_a_window_has_no_limit(
    server: FakeLLMServer, make_spec: MakeSpec, make_model: MakeModel
) -> None:
    spec = make_spec(transport="lean")
    body = {
        "error": {"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"}
    }
    server.faults.append(Fault.status(400, body=body))
    with pytest.raises(ContextTooLong) as caught:
        await complete(make_model(spec), REQUEST, spec)
    assert caught.value.limit is None
    assert "did not say its window" in str(caught.value)


async def test_hardening_10_other_rejections_stay_plain_request_errors(
    server: FakeLLMServer, spec: ModelSpec, make_model: MakeModel
) -> None:
    server.faults.append(Fault.status(400, message="temperature must be at most 1"))
    with pytest.raises(ModelRequestError) as caught:
        await complete(make_model(spec), REQUEST, spec)
    assert not isinstance(caught.value, ContextTooLong)
    assert "temperature must be at most 1" in str(caught.value)


def test_hardening_1_no_model_error_holds_a_remembered_key_or_a_key_shaped_text() -> None:
    remember_secret(CANARY)
    for error in (
        ModelError(f"echo {CANARY}"),
        TransientModelError(f"Bearer abc123def456 and {CANARY}", retry_after=1),
        ContextTooLong(f"too long for sk-proj-0123456789abcdef and {CANARY}", limit=8),
    ):
        assert CANARY not in _all_text(error)
        assert "abc123def456" not in str(error)
        assert "0123456789abcdef" not in str(error)


@pytest.mark.parametrize(
    ("body", "window"),
    [
        (
            b'{"error": {"code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": 9, "n_ctx": 4096}}',
            4096,
        ),
        ({"code": 400, "type": "exceed_context_size_error", "n_ctx": 512}, 512),  # as the openai SDK hands it
        ({"error": {"message": "This model's maximum context length is 32768 tokens. However..."}}, 32768),
        (
            {"type": "error", "error": {"message": "prompt is too long: 210000 tokens > 200000 maximum"}},
            200000,
        ),
        ({"message": "context too long", "code": "context_length_exceeded"}, None),
    ],
)
def test_hardening_10_context_overflows_are_recognised_in_every_servers_words(
    body: object, window: int | None
) -> None:
    assert context_overflow(body) == (True, window)


@pytest.mark.parametrize(
    "body", [b"<html>502</html>", {"error": {"message": "bad temperature"}}, [1, 2], None, {"error": "text"}]
)
def test_other_error_bodies_are_no_context_overflow(body: object) -> None:
    assert context_overflow(body) == (False, None)
