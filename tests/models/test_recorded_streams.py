"""Streams as real servers send them, replayed byte for byte from a recording, through both OpenAI
transports and the Anthropic adapter: the wire differences docs/providers.md lists, each handled."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from moot.models import Message, ModelRequest, build_model
from moot.spec import ModelSpec

from .conftest import Collect

REQUEST = ModelRequest(system="s", messages=(Message("user", "Say hi"),), max_tokens=4)


def _chunk(content: str | None, reason: str | None = None) -> str:
    """One chat-completion chunk as llama.cpp writes it (its keys in its order, no spaces)."""
    chunk = {
        "choices": [
            {"finish_reason": reason, "index": 0, "delta": {} if content is None else {"content": content}}
        ],
        "created": 1796043776,
        "id": "c1",
        "model": "SmolLM2.gguf",
        "object": "chat.completion.chunk",
    }
    return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"


# llama.cpp's server (b0, through xllamacpp), recorded: usage in a last chunk of its own with `choices: []`,
# then [DONE]; its Keep-Alive is 5 s, which is why Moot keeps idle connections 3 s at most.
LLAMA_CPP = (
    _chunk(None)
    + _chunk("I")
    + _chunk("'m")
    + _chunk(" glad")
    + _chunk(" you")
    + _chunk(None, "length")
    + 'data: {"choices":[],"created":1796043776,"id":"c1","model":"SmolLM2.gguf","object":"chat.completion.chunk",'
    '"usage":{"completion_tokens":4,"prompt_tokens":32,"total_tokens":36}}\n\n'
    "data: [DONE]\n\n"
)
# Usage inside the finishing chunk, keep-alive comments between events, no [DONE] (servers on sse-starlette).
USAGE_IN_LAST_CHUNK_COMMENTS_NO_DONE = (
    ": ping - 2026-11-30 12:00:00\n\n"
    + _chunk("I")
    + ": ping\n\n"
    + _chunk("'m glad you")
    + 'data: {"choices":[{"finish_reason":"length","index":0,"delta":{}}],"model":"SmolLM2.gguf",'
    '"usage":{"completion_tokens":4,"prompt_tokens":32}}\n\n'
)
# An Anthropic route behind a proxy (litellm) that counts no input and says end_turn for a reply cut by
# max_tokens.
PROXY_MESSAGES = (
    'event: message_start\ndata: {"type":"message_start","message":{"id":"m1","type":"message","role":'
    '"assistant","content":[],"model":"smollm2","stop_reason":null,"usage":{"input_tokens":0,"output_tokens":0}}}\n\n'
    'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"I\'m glad"}}\n\n'
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" you"}}\n\n'
    'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
    '"usage":{"input_tokens":0,"output_tokens":4}}\n\n'
    'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


@asynccontextmanager
async def replaying(body: str) -> AsyncIterator[str]:
    """An HTTP/1.1 server that answers every POST with `body` as an event stream; yields its URL."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        await reader.readexactly(length)
        data = body.encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n"
            + f"content-length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize(
    "recording", [LLAMA_CPP, USAGE_IN_LAST_CHUNK_COMMENTS_NO_DONE], ids=["llama.cpp", "sse-starlette"]
)
@pytest.mark.parametrize("transport", ["lean", "sdk"])
async def test_openai_streams_of_real_servers_give_the_text_the_usage_and_why_it_stopped(
    recording: str, transport: str, collect: Collect
) -> None:
    async with replaying(recording) as url:
        model = build_model(
            ModelSpec.model_validate(
                {
                    "provider": "openai",
                    "model": "m",
                    "base_url": url + "/v1",
                    "api_key": "k",
                    "transport": transport,
                }
            )
        )
        deltas, completion = await collect(model, REQUEST)
        await model.aclose()
    assert "".join(deltas) == completion.text == "I'm glad you"
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (32, 4)
    assert not completion.usage.estimated and completion.finish_reason == "length"


async def test_a_proxy_that_counts_no_input_and_says_end_turn_for_a_cut_reply(collect: Collect) -> None:
    async with replaying(PROXY_MESSAGES) as url:
        model = build_model(
            ModelSpec.model_validate({"provider": "anthropic", "model": "m", "base_url": url, "api_key": "k"})
        )
        _, completion = await collect(model, REQUEST)
        await model.aclose()
    assert completion.text == "I'm glad you"
    assert completion.finish_reason == "length"  # 4 tokens of 4: cut, whatever the proxy said
    assert completion.usage.output_tokens == 4
    assert completion.usage.input_tokens > 0 and completion.usage.estimated  # counted here, and said so
