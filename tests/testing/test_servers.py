"""The fake LLM server: what the official SDKs read from it, its fault script, and its three ways to run."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Literal

import anthropic
import httpx
import openai
import pytest

from moot.testing.servers import FakeLLMServer, Fault, default_reply

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "Shall we ship?"}]}


async def test_openai_sdk_reads_a_whole_reply_and_a_model_list() -> None:
    async with (
        FakeLLMServer(reply_tokens=6) as server,
        openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="any", max_retries=0) as client,
    ):
        reply = await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "Shall we ship?"}]
        )
        models = await client.models.list()
    assert reply.choices[0].message.content == default_reply(6)
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 6)
    assert [m.id for m in models.data] == ["fake-model"]


async def test_anthropic_sdk_reads_a_whole_reply() -> None:
    async with (
        FakeLLMServer(reply_tokens=6) as server,
        anthropic.AsyncAnthropic(base_url=server.url, api_key="any", max_retries=0) as client,
    ):
        reply = await client.messages.create(
            model="fake-model", max_tokens=4, messages=[{"role": "user", "content": "Shall we ship?"}]
        )
    assert reply.content[0].type == "text"
    assert reply.content[0].text.rstrip() == default_reply(4)
    assert reply.stop_reason == "max_tokens"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (3, 4)


async def test_chunks_carry_several_tokens_when_asked() -> None:
    async with (
        FakeLLMServer(reply_tokens=7, tokens_per_chunk=3) as server,
        openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="any", max_retries=0) as client,
    ):
        stream = await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "go"}], stream=True
        )
        deltas = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
    assert deltas == ["", "the council weighs ", "each option with ", "care", None]


async def test_faults_are_taken_one_per_request_in_order() -> None:
    async with FakeLLMServer(api_key="right") as server, httpx.AsyncClient(base_url=server.url) as client:
        server.faults.extend([Fault.ok(), Fault.status(503, retry_after=2, message="busy")])
        auth = {"authorization": "Bearer right"}
        first = await client.post("/v1/chat/completions", json=CHAT, headers=auth)
        second = await client.post("/v1/chat/completions", json=CHAT, headers=auth)
        third = await client.post("/v1/chat/completions", json=CHAT)
        unknown = await client.post("/v1/nothing", json=CHAT, headers=auth)
    assert first.status_code == 200
    assert (second.status_code, second.headers["retry-after"]) == (503, "2")
    assert second.json()["error"] == {"message": "busy", "type": "server_error", "param": None, "code": None}
    assert third.status_code == 401
    assert "You didn't provide an API key" in third.json()["error"]["message"]
    assert unknown.status_code == 404
    assert [r.path for r in server.requests] == ["/v1/chat/completions"] * 3 + ["/v1/nothing"]


async def test_faults_echo_the_key_the_client_sent_as_careless_servers_do() -> None:
    async with FakeLLMServer() as server, httpx.AsyncClient(base_url=server.url) as client:
        server.faults.extend(
            [
                Fault.status(500, message="bad {key}", headers=[("x-detail", "for {key}")]),
                Fault.redirect("/v1/elsewhere?key={key}", message="moved {key}"),
                Fault.stream_error(after_chunks=1, message="refused {key}"),
                Fault.chunk('{"choices": "{key}"}', after_chunks=1),
            ]
        )
        auth = {"authorization": "Bearer my-key-123"}
        status = await client.post("/v1/chat/completions", json=CHAT, headers=auth)
        moved = await client.post("/v1/chat/completions", json=CHAT, headers=auth)
        streamed = {**CHAT, "stream": True}
        in_stream = await client.post("/v1/chat/completions", json=streamed, headers=auth)
        odd = await client.post("/v1/messages", json=streamed, headers={"x-api-key": "my-key-123"})
    assert status.json()["error"]["message"] == "bad my-key-123"
    assert status.headers["x-detail"] == "for my-key-123"
    assert (moved.status_code, moved.headers["location"], moved.text) == (
        307,
        "/v1/elsewhere?key=my-key-123",
        "moved my-key-123",
    )
    assert 'data: {"error":{"message":"refused my-key-123"' in in_stream.text
    assert "[DONE]" not in in_stream.text  # the error ends the stream
    assert 'event: content_block_delta\ndata: {"choices": "my-key-123"}' in odd.text
    assert odd.text.rstrip().endswith('data: {"type":"message_stop"}')  # the stream goes on after it


@pytest.mark.parametrize(
    ("style", "path", "words"),
    [
        (
            "llama.cpp",
            "/v1/chat/completions",
            '"type":"exceed_context_size_error","n_prompt_tokens":3,"n_ctx":2',
        ),
        ("openai", "/v1/chat/completions", "maximum context length is 2 tokens"),
        ("llama.cpp", "/v1/messages", "prompt is too long: 3 tokens > 2 maximum"),
    ],
)
async def test_a_prompt_longer_than_the_context_window_is_refused_in_the_servers_words(
    style: Literal["llama.cpp", "openai"], path: str, words: str
) -> None:
    async with (
        FakeLLMServer(context_window=2, context_style=style) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        refused = await client.post(path, json=CHAT)
        server.context_window = 3
        fits = await client.post(path, json=CHAT)
    assert refused.status_code == 400
    assert words in refused.text
    assert fits.status_code == 200


async def test_ttft_delays_the_first_chunk() -> None:
    async with (
        FakeLLMServer(ttft=0.15, reply_tokens=2) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        began = time.monotonic()
        reply = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert time.monotonic() - began >= 0.14  # asyncio may wake a timer up to its clock resolution early
    assert reply.text.endswith("data: [DONE]\n\n")


async def test_a_hang_ends_when_the_client_gives_up() -> None:
    async with FakeLLMServer() as server, httpx.AsyncClient(base_url=server.url, timeout=0.1) as client:
        server.faults.append(Fault.hang(30))
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/v1/chat/completions", json=CHAT)
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200


def test_runs_in_a_thread_for_synchronous_code() -> None:
    with FakeLLMServer(reply_tokens=3) as server:
        reply = httpx.post(server.url + "/v1/chat/completions", json=CHAT)
    assert reply.json()["choices"][0]["message"]["content"] == default_reply(3)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_runs_as_a_process_that_prints_its_url_first(loop: str) -> None:
    command = [
        sys.executable,
        "-m",
        "moot.testing.servers",
        "--port",
        "0",
        "--reply-tokens",
        "3",
        "--no-usage",
        "--loop",
        loop,
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        try:
            url = process.stdout.readline().strip()
            reply = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=5).json()
        finally:
            process.terminate()
    assert url.startswith("http://127.0.0.1:")
    assert reply["choices"][0]["message"]["content"] == default_reply(3)
    assert "usage" not in reply
    assert process.returncode == 0
