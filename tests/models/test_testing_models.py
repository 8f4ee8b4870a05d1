"""The scripted and function models that engine tests stand on must fail loudly when used wrongly."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from moot.exceptions import ModelAuthError, TransientModelError
from moot.models import Completion, Message, ModelRequest, Usage
from moot.models.testing import Cut, FunctionModel, ScriptedModel


def request(text: str = "hello") -> ModelRequest:
    return ModelRequest(system="be brief", messages=(Message("user", text),))


async def drain(stream: AsyncIterator[str | Completion], into: list[str] | None = None) -> Completion:
    """Reads a stream to its Completion, keeping the deltas in `into` even when the stream raises."""
    deltas = into if into is not None else []
    async for item in stream:
        if isinstance(item, Completion):
            assert "".join(deltas) == item.text
            return item
        deltas.append(item)
    raise AssertionError("the stream ended without a Completion")


async def test_scripted_replies_in_order_and_records_requests() -> None:
    model = ScriptedModel(["first reply, long enough to need several pieces", "second"], chunk=8)
    deltas: list[str] = []
    first = await drain(model.stream(request("one")), deltas)
    second = await drain(model.stream(request("two")))
    assert first.text == "first reply, long enough to need several pieces"
    assert len(deltas) > 3
    assert all(len(d) <= 8 for d in deltas)
    assert second.text == "second"
    assert first.model == "scripted"
    assert [r.messages[-1].content for r in model.requests] == ["one", "two"]
    assert first.usage.estimated
    assert first.usage.input_tokens > 0
    assert first.usage.output_tokens > 0
    model.assert_all_used()


async def test_scripted_error_is_raised_before_any_text() -> None:
    model = ScriptedModel([ModelAuthError("bad key"), "after the error"])
    deltas: list[str] = []
    with pytest.raises(ModelAuthError, match="bad key"):
        await drain(model.stream(request()), deltas)
    assert deltas == []
    assert (await drain(model.stream(request()))).text == "after the error"


async def test_cut_streams_part_of_the_text_then_raises() -> None:
    model = ScriptedModel([Cut("half a sentence and", TransientModelError("connection reset")), "whole"])
    deltas: list[str] = []
    with pytest.raises(TransientModelError, match="connection reset"):
        await drain(model.stream(request()), deltas)
    assert "".join(deltas) == "half a sentence and"
    assert (await drain(model.stream(request()))).text == "whole"


async def test_unexpected_call_fails_loudly() -> None:
    model = ScriptedModel(["only one"], label="chair")
    await drain(model.stream(request()))
    with pytest.raises(AssertionError, match="unexpected call #2 to chair"):
        await drain(model.stream(request("one more")))
    assert len(model.requests) == 2


async def test_unused_steps_fail_assert_all_used() -> None:
    model = ScriptedModel(["used", "never used"])
    await drain(model.stream(request()))
    with pytest.raises(AssertionError, match="1 scripted step"):
        model.assert_all_used()


async def test_steps_are_taken_when_stream_is_called() -> None:
    model = ScriptedModel(["for the first caller", "for the second caller"])
    first, second = model.stream(request("a")), model.stream(request("b"))
    assert (await drain(second)).text == "for the second caller"
    assert (await drain(first)).text == "for the first caller"


async def test_usage_override() -> None:
    usage = Usage(input_tokens=100, output_tokens=7)
    scripted = await drain(ScriptedModel(["x"], usage=usage).stream(request()))
    function = await drain(FunctionModel(lambda r: "y", usage=usage).stream(request()))
    assert scripted.usage == usage
    assert function.usage == usage


async def test_function_model_answers_from_the_request() -> None:
    model = FunctionModel(lambda r: f"you said {r.messages[-1].content}", label="echo", chunk=4)
    deltas: list[str] = []
    done = await drain(model.stream(request("ping")), deltas)
    assert done.text == "you said ping"
    assert done.model == "echo"
    assert done.usage.estimated
    assert deltas == ["you ", "said", " pin", "g"]
    assert [r.messages[-1].content for r in model.requests] == ["ping"]


async def test_function_model_accepts_async_functions() -> None:
    async def reply(req: ModelRequest) -> str:
        return req.system.upper()

    assert (await drain(FunctionModel(reply).stream(request()))).text == "BE BRIEF"


async def test_function_model_delay_paces_pieces() -> None:
    model = FunctionModel(lambda r: "abcdefgh", chunk=2, delay=0.05)
    started = time.monotonic()
    await drain(model.stream(request()))
    assert time.monotonic() - started >= 0.14  # three pauses between four pieces


async def test_function_model_errors_propagate() -> None:
    def broken(req: ModelRequest) -> str:
        raise TransientModelError("rate limited", status=429)

    with pytest.raises(TransientModelError, match="rate limited"):
        await drain(FunctionModel(broken).stream(request()))


def test_chunk_must_be_positive() -> None:
    with pytest.raises(ValueError, match="chunk"):
        ScriptedModel([], chunk=0)
    with pytest.raises(ValueError, match="chunk"):
        FunctionModel(lambda r: "", chunk=0)


async def test_empty_reply_still_completes() -> None:
    deltas: list[str] = []
    done = await drain(ScriptedModel([""]).stream(request()), deltas)
    assert deltas == []
    assert done.text == ""
    assert done.usage.output_tokens == 0
