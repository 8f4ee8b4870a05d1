"""Model connections on asyncio's own streams (moot.models._net): TLS, proxies from the environment, the
private-address guard on top, and the errors httpx maps — each over a real server."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable

import httpcore
import pytest
import trustme

from moot.models import Message, Model, ModelRequest
from moot.models._http import ssl_context
from moot.models._net import AsyncioBackend
from moot.spec import ModelSpec
from moot.testing.servers import FakeLLMServer

from .conftest import KEY, Collect

REQUEST = ModelRequest(system="You are Ada.", messages=(Message("user", "Ship it?"),), max_tokens=5)
TRANSPORTS = [("openai", "lean"), ("openai", "sdk"), ("anthropic", "lean")]


@pytest.fixture(scope="module")
def test_ca() -> trustme.CA:
    """A CA of the test's own, trusted by the adapters' TLS context for this process's tests."""
    ca = trustme.CA()
    ca.configure_trust(ssl_context())
    return ca


@pytest.fixture
async def tls_server(test_ca: trustme.CA) -> AsyncIterator[FakeLLMServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    test_ca.issue_cert("127.0.0.1").configure_cert(context)
    async with FakeLLMServer(api_key=KEY, tls=context, reply_tokens=6) as fake:
        yield fake


def _spec(server: FakeLLMServer, provider: str, transport: str) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "provider": provider,
            "transport": transport,
            "model": "fake-model",
            "base_url": server.url + "/v1" if provider == "openai" else server.url,
            "api_key": KEY,
            "timeout": 5,
            "max_retries": 0,
        }
    )


@pytest.mark.parametrize(("provider", "transport"), TRANSPORTS)
async def test_a_stream_over_tls_arrives_whole_on_every_transport(
    tls_server: FakeLLMServer,
    make_model: Callable[[ModelSpec], Model],
    collect: Collect,
    provider: str,
    transport: str,
) -> None:
    deltas, completion = await collect(make_model(_spec(tls_server, provider, transport)), REQUEST)
    assert tls_server.url.startswith("https://")
    assert "".join(deltas) == completion.text
    assert len(completion.text.split()) == REQUEST.max_tokens  # the server stops at the limit
    assert len(tls_server.requests) == 1


async def test_a_server_whose_certificate_is_not_trusted_is_refused(
    make_model: Callable[[ModelSpec], Model], collect: Collect
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)  # a CA nobody trusts
    async with FakeLLMServer(api_key=KEY, tls=context) as untrusted:
        with pytest.raises(Exception, match=r"(?i)certificate|ssl"):
            await collect(make_model(_spec(untrusted, "openai", "lean")), REQUEST)
        assert untrusted.requests == []


async def test_http_proxy_from_the_environment_is_still_used(
    server: FakeLLMServer,
    make_model: Callable[[ModelSpec], Model],
    collect: Collect,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Connections go through asyncio's streams without giving up httpx's HTTP(S)_PROXY support: the model's
    name does not resolve, so only the proxy (the fake server, taking the absolute-form request) can answer."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    spec = ModelSpec.model_validate(
        {"provider": "openai", "model": "fake-model", "base_url": "http://model.invalid/v1", "api_key": KEY}
    )
    deltas, completion = await collect(make_model(spec), REQUEST)
    assert "".join(deltas) == completion.text != ""
    assert [request.path for request in server.requests] == ["/v1/chat/completions"]


async def test_an_idle_connection_the_server_closed_reads_as_readable_and_reads_end() -> None:
    """What httpcore asks before reusing a pooled connection: readable once the server has closed it."""
    closed = asyncio.Event()

    async def close_after_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        writer.close()
        closed.set()

    listener = await asyncio.start_server(close_after_hello, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    stream = await AsyncioBackend(httpcore).connect_tcp("127.0.0.1", port, timeout=5)
    try:
        assert stream.get_extra_info("is_readable") is False
        assert stream.get_extra_info("server_addr")[1] == port
        await stream.write(b"hello", timeout=5)
        await closed.wait()
        assert await stream.read(100, timeout=5) == b""
        assert stream.get_extra_info("is_readable") is True
    finally:
        await stream.aclose()
        listener.close()


async def test_connect_and_read_failures_are_httpcores_own_errors() -> None:
    """httpx maps only its httpcore's exceptions to httpx.ConnectError / ReadTimeout, which the adapters
    turn into retryable model errors."""
    backend = AsyncioBackend(httpcore)
    accepted: list[asyncio.StreamWriter] = []
    listener = await asyncio.start_server(lambda _, writer: accepted.append(writer), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    stream = await backend.connect_tcp("127.0.0.1", port, timeout=5)
    try:
        with pytest.raises(httpcore.ReadTimeout):
            await stream.read(100, timeout=0.01)  # the listener never writes
    finally:
        await stream.aclose()
        for writer in accepted:
            writer.close()
        listener.close()
        await listener.wait_closed()
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("127.0.0.1", port, timeout=5)  # nothing listens there any more


async def test_a_read_times_out_by_its_own_deadline_with_one_timer_per_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each read moves the deadline on; the connection's one timer, firing at an old deadline, follows it
    rather than ending a read still within its time. The loop's clock is driven by hand."""
    loop = asyncio.get_running_loop()
    offset = [0.0]
    real_time = loop.time
    monkeypatch.setattr(loop, "time", lambda: real_time() + offset[0])
    sends: asyncio.Queue[bytes] = asyncio.Queue()
    accepted: list[asyncio.StreamWriter] = []

    async def send_on_demand(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        while True:
            writer.write(await sends.get())

    listener = await asyncio.start_server(send_on_demand, "127.0.0.1", 0)
    stream = await AsyncioBackend(httpcore).connect_tcp("127.0.0.1", listener.sockets[0].getsockname()[1])
    try:
        first = asyncio.ensure_future(stream.read(10, timeout=5))
        await asyncio.sleep(0)  # waiting now: the timer is set for the first deadline
        offset[0] += 3
        await sends.put(b"a")
        assert await first == b"a"
        second = asyncio.ensure_future(stream.read(10, timeout=5))  # its deadline: 3 + 5
        await asyncio.sleep(0)
        offset[0] += 3  # past the first deadline (5), within the second's (8)
        passed = asyncio.Event()
        loop.call_at(loop.time(), passed.set)  # runs after the stream's timer, due earlier
        await passed.wait()
        assert not second.done()
        await sends.put(b"b")
        assert await second == b"b"
        third = asyncio.ensure_future(stream.read(10, timeout=5))
        await asyncio.sleep(0)
        offset[0] += 10
        with pytest.raises(httpcore.ReadTimeout, match="for 5s"):
            await third
        await sends.put(b"c")  # the connection still reads what comes after
        assert await stream.read(10, timeout=5) == b"c"
    finally:
        await stream.aclose()
        for writer in accepted:
            writer.close()
        listener.close()


async def test_a_read_cancelled_from_outside_is_cancelled_not_timed_out() -> None:
    accepted: list[asyncio.StreamWriter] = []
    listener = await asyncio.start_server(lambda _, writer: accepted.append(writer), "127.0.0.1", 0)
    stream = await AsyncioBackend(httpcore).connect_tcp("127.0.0.1", listener.sockets[0].getsockname()[1])
    try:
        reading = asyncio.ensure_future(stream.read(10, timeout=60))
        await asyncio.sleep(0)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
    finally:
        await stream.aclose()
        for writer in accepted:
            writer.close()
        listener.close()
