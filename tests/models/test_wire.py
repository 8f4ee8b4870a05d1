"""The lean adapter's own HTTP reader (`moot.models._wire`) against raw servers framing answers every way
HTTP/1.1 allows, and against servers that send what no reply should: too much, too long, or not HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import orjson
import pytest

from moot.exceptions import ModelRequestError, ModelUnavailable, TransientModelError
from moot.models import Completion, Message, Model, ModelRequest, build_model
from moot.models.openai import OpenAILeanModel
from moot.spec import ModelSpec
from moot.testing.servers import FakeLLMServer

from .conftest import KEY, Collect

REQUEST = ModelRequest(system="", messages=(Message("user", "Ship it?"),), max_tokens=50)
WORDS = ("Not ", "before ", "the ", "tests ", "pass.")
Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

pytestmark = pytest.mark.timeout(60)


def _sse(words: tuple[str, ...] = WORDS) -> bytes:
    chunks = [{"model": "m", "choices": [{"index": 0, "delta": {"content": word}}]} for word in words]
    chunks.append({"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks) + b"data: [DONE]\n\n"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (by its content-length), as a real server reads it."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


class RawServer:
    """A TCP server whose every request gets `answer`; it counts connections and keeps what it was sent."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                self.requests.append(await _read_request(reader))
                await self.answer(reader, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def raw_server(answer: Answer) -> AsyncIterator[RawServer]:
    raw = RawServer(answer)
    server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
    raw.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    async with server:
        yield raw
        server.close()


def _model(url: str, **fields: object) -> Model:
    data = {
        "provider": "openai",
        "model": "m",
        "base_url": url,
        "api_key": KEY,
        "timeout": 5,
        "max_retries": 0,
    }
    data.update(fields)
    return build_model(ModelSpec.model_validate(data))


async def _failure(answer: Answer, collect: Collect, error: type[Exception], match: str) -> Exception:
    """What a stream from a server answering with `answer` fails with (checked to be an `error` saying
    `match`)."""
    async with raw_server(answer) as server:
        model = _model(server.url)
        try:
            with pytest.raises(error, match=match) as caught:
                await collect(model, REQUEST)
        finally:
            await model.aclose()
    return caught.value


async def _two_streams(answer: Answer, collect: Collect) -> tuple[RawServer, list[Completion]]:
    """Two streams in turn from a server answering with `answer`, each checked to arrive whole."""
    completions = []
    async with raw_server(answer) as server:
        model = _model(server.url)
        try:
            for _ in range(2):
                deltas, completion = await collect(model, REQUEST)
                assert "".join(deltas) == completion.text == "".join(WORDS)
                completions.append(completion)
        finally:
            await model.aclose()
    return server, completions


def chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


FRAMINGS: dict[str, Callable[[bytes], bytes]] = {
    # the body in chunks of 7 bytes: lines and even the chunk-size lines split across reads
    "chunked": lambda body: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked(body, 7),
    "content-length": lambda body: b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body),
    "until the server closes": lambda body: (
        b"HTTP/1.0 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + body
    ),
    "after 100 Continue": lambda body: (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    ),
}


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_an_answer_framed_any_way_http_allows_arrives_whole(framing: str, collect: Collect) -> None:
    """covers: L3. Each framing, written a few bytes at a time; the reply is whole, the connection is kept
    only where the answer's end is known without closing (so a second stream opens a second one otherwise)."""
    frame = FRAMINGS[framing]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = frame(_sse())
        for start in range(0, len(data), 11):
            writer.write(data[start : start + 11])
            await writer.drain()
        if framing == "until the server closes":
            writer.close()

    server, completions = await _two_streams(answer, collect)
    assert [completion.finish_reason for completion in completions] == ["stop", "stop"]
    assert server.connections == (2 if framing == "until the server closes" else 1)
    head = server.requests[0].split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"authorization: Bearer {KEY}" in head.split("\r\n")


async def test_the_lean_adapter_reads_on_its_own_reader_and_keeps_httpx_where_a_proxy_is_set(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch, collect: Collect
) -> None:
    """The default stream goes over the reader (one kept-alive connection for two streams); with
    HTTP_PROXY covering base_url the adapter sends through httpx, which takes the proxy (the proxy test in
    test_net shows it is used)."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    spec = ModelSpec.model_validate(
        {"provider": "openai", "model": "fake-model", "base_url": server.url + "/v1", "api_key": KEY}
    )
    direct = OpenAILeanModel(spec)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    proxied = OpenAILeanModel(spec)
    try:
        monkeypatch.delenv("HTTP_PROXY")
        for _ in range(2):
            deltas, completion = await collect(direct, REQUEST)
            assert "".join(deltas) == completion.text != ""
        assert direct._wire is not None
        assert direct._client is None  # the wire took every stream: no httpx client was made
        assert server.connections_opened == 1
        monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
        proxied._ready()
        assert proxied._wire is None
    finally:
        await direct.aclose()
        await proxied.aclose()


@pytest.mark.parametrize("key", ["sk-abc\r\nx-injected: 1", "sk-abc\ndef", "sk-\x00abc"])
async def test_a_key_with_a_line_break_is_refused_before_any_request_naming_its_source_not_its_value(
    key: str, collect: Collect
) -> None:
    """A key that would end the authorization header early (and start an attacker's header) is never sent."""
    sent: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sent.append(b"answered")
        writer.close()

    async with raw_server(answer) as server:
        model = _model(server.url, api_key=key)
        try:
            with pytest.raises(ModelUnavailable) as caught:
                await collect(model, REQUEST)
        finally:
            await model.aclose()
    assert "api_key holds a line break or another control character" in str(caught.value)
    assert "sk-" not in str(caught.value)
    assert server.connections == 0 and not sent


async def test_a_key_with_blanks_around_it_is_sent_without_them(collect: Collect) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(FRAMINGS["content-length"](_sse()))
        await writer.drain()

    async with raw_server(answer) as server:
        model = _model(server.url, api_key=f"  {KEY}\n")
        try:
            await collect(model, REQUEST)
        finally:
            await model.aclose()
    assert f"authorization: Bearer {KEY}\r\n".encode() in server.requests[0]


async def test_a_line_with_no_end_is_a_malformed_chunk_not_a_growing_buffer(collect: Collect) -> None:
    """A server streaming one endless line is cut off past 8 MiB with the transient error of a bad chunk."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        block = b"x" * (1 << 20)
        for _ in range(12):
            writer.write(b"%x\r\n%s\r\n" % (len(block), block))
            await writer.drain()
        writer.close()

    caught = await _failure(answer, collect, TransientModelError, "malformed chunk")
    assert len(str(caught)) < 1000


async def test_a_huge_error_answer_is_read_only_so_far_and_reported(collect: Collect) -> None:
    """A 400 whose body is 4 MiB: the error arrives with the server's words, and what is kept is bounded."""
    detail = {"error": {"message": "bad request: " + "y" * (4 << 20)}}
    body = orjson.dumps(detail)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: %d\r\n\r\n" % len(body))
        writer.write(body)
        await writer.drain()

    caught = await _failure(answer, collect, ModelRequestError, "bad request")
    assert len(str(caught)) < 2000


async def test_an_answer_whose_headers_never_end_is_cut_off(collect: Collect) -> None:
    """Header lines without end: refused past 64 KiB, not held until memory runs out."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        line = b"x-padding: " + b"p" * 1000 + b"\r\n"
        for _ in range(1000):  # a megabyte of headers, unless the client hangs up first
            writer.write(line)
            await writer.drain()

    await _failure(answer, collect, TransientModelError, "over 65536 bytes of headers")


@pytest.mark.parametrize(
    "garbage",
    [b"SSH-2.0-OpenSSH_9.6\r\n", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"],
    ids=["not http", "a broken chunk size"],
)
async def test_an_answer_that_is_not_http_is_a_transient_error(garbage: bytes, collect: Collect) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(garbage)
        await writer.drain()
        await reader.read()  # until the client hangs up

    await _failure(answer, collect, TransientModelError, "not valid HTTP")


async def test_a_connection_the_server_dropped_while_idle_is_not_reused(collect: Collect) -> None:
    """The server answers with a kept-alive connection, then closes it: the next stream opens a new one
    and is answered, with nothing sent twice."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(FRAMINGS["content-length"](_sse()))
        await writer.drain()
        writer.close()  # after the answer: the client sees its connection closed while idle

    server, _ = await _two_streams(answer, collect)
    assert server.connections == 2
    assert len(server.requests) == 2
