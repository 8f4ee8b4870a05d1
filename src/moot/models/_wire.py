"""Streamed POSTs on asyncio's Protocol and httptools' parser: a model's tokens read at a quarter of the CPU.

A model streams one token a chunk, so what taking a chunk in costs is paid once per token, in every room,
for every speaker. On httpx each chunk wakes a reading task and climbs httpcore's and h11's layers (about
80 µs of CPU a token, `bench/read_bench.py`); here the event loop hands the bytes to a Protocol, httptools'
parser (C, the one uvicorn uses) takes out the HTTP framing and calls the stream's parser with the body,
on the loop's own call: about 20 µs (decision 0014).

Only the lean adapter's streamed chat request goes this way, with the policy of every other request
(`moot.models._http`): a 3xx is refused, never followed; where the spec refuses private addresses each name
is resolved and judged here (`moot.models._guard`) and the socket opens to the address judged; TLS uses the
process's context and checks the name. A URL that an HTTP(S)_PROXY setting covers is not sent this way: the
adapter keeps httpx for it (`proxied`). Failures raise httpx's own exceptions, so the adapter reads both
paths' failures alike.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import httptools
import httpx

from moot.models._guard import judged_addresses
from moot.models._http import KEEPALIVE, redirect_refusal, ssl_context
from moot.spec import ModelSpec

__all__ = ["Answer", "Wire", "proxied", "wire_for"]

MAX_IDLE = 20  # kept-alive connections per model
MAX_ERROR_BODY = 1 << 20  # bytes of an error answer kept: enough for any error object
MAX_HEAD = 64 << 10  # bytes of an answer's status line and headers (h11, under httpx, allows 16 KiB)


_PROXY_SETTINGS = tuple(
    name for each in ("http", "https", "all", "no") for name in (f"{each}_proxy", f"{each.upper()}_PROXY")
)


def proxied(url: str) -> bool:
    """Whether httpx sends `url` through a proxy (it mounts one per HTTP(S)_PROXY or ALL_PROXY setting, less
    NO_PROXY's): asked of an httpx client itself, so the two ways never disagree on which requests a proxy
    takes. The answer is kept per URL and settings: a client costs most of a millisecond, and every room asks."""
    return _proxied(url, tuple(os.environ.get(name) for name in _PROXY_SETTINGS))


@functools.lru_cache(maxsize=256)
def _proxied(url: str, settings: tuple[str | None, ...]) -> bool:
    with httpx.Client(verify=ssl_context()) as client:  # mounts a transport per proxy setting, as ours does
        pick = getattr(client, "_transport_for_url", None)
        if pick is None:  # a client of a shape we do not know: keep httpx's way
            return True
        return pick(httpx.URL(url)) is not getattr(client, "_transport", None)


def wire_for(spec: ModelSpec, base_url: str, headers: dict[str, str]) -> Wire | None:
    """The way `spec`'s streamed requests go: a Wire, or None where httpx must send them (a proxy from the
    environment covers base_url, and the spec does not refuse private addresses, which ignores proxies;
    or base_url is no http(s) URL, which httpx then reports)."""
    try:
        scheme = httpx.URL(base_url).scheme
    except httpx.InvalidURL:
        return None
    if scheme not in ("http", "https"):
        return None
    if not spec.refuses_private_addresses and proxied(base_url):
        return None
    return Wire(
        base_url,
        headers,
        timeout=spec.timeout,
        label=spec.label,
        guarded=spec.refuses_private_addresses,
    )


@dataclass(slots=True)
class Answer:
    """The head of an answer, and its body where it was not streamed (a failure status)."""

    status: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass(slots=True)
class _Reply:
    """What one request waits on: its head, then its end."""

    feed: Callable[[bytes], None]
    started: Callable[[], None]  # called as a 2xx answer's head arrives, before its body
    head: asyncio.Future[Answer]
    end: asyncio.Future[None]
    answer: Answer | None = None
    error_body: bytearray = field(default_factory=bytearray)
    until_eof: bool = False  # no length and not chunked: the body ends when the server closes


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: a request at a time, its body parsed as it arrives."""

    def __init__(self, read_timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = read_timeout
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._headers: dict[str, str] = {}
        self.transport: asyncio.Transport | None = None
        self.reply: _Reply | None = None
        self.heard = False  # any byte of the answer to the request in flight
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._head_bytes = 0  # of the answer in flight, while its head is incomplete
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; not always an `asyncio.Transport` subclass (uvloop's, which `moot serve` runs on
        # where installed, is its own type), so it is not checked by class.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        self.heard = True
        if self.reply is None:
            self._fail(httpx.RemoteProtocolError("the server sent bytes with no request in flight"))
            return
        parser = self._parser
        if parser is None:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            return  # a callback failed the reply already
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"the server's answer is not valid HTTP ({exc})"))
            return
        reply = self.reply
        if reply is not None and reply.answer is None:  # still in the head, which the parser holds whole
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._fail(
                    httpx.RemoteProtocolError(f"the server's answer sent over {MAX_HEAD} bytes of headers")
                )

    def eof_received(self) -> bool:
        return False  # close: a half-closed connection serves nothing more

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        self._parser = self.transport = None  # each holds this connection: cycles for the collector otherwise
        reply = self.reply
        if reply is None:
            return
        if reply.answer is not None and reply.until_eof and exc is None:
            self._finish(reply)
            return
        if not self.heard:
            error: Exception = httpx.RemoteProtocolError("the server closed the connection without answering")
        elif reply.answer is None:
            error = httpx.RemoteProtocolError("the server closed the connection mid-answer")
        else:
            error = httpx.RemoteProtocolError("peer closed connection without sending complete message body")
        if isinstance(exc, OSError):
            error = httpx.ReadError(str(exc) or type(exc).__name__)
        self._fail(error)

    # -- httptools' callbacks ---------------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        reply = self.reply
        assert reply is not None
        assert self._parser is not None  # called by the parser itself
        status = self._parser.get_status_code()
        headers, self._headers = self._headers, {}
        if status < 200:
            return  # an informational answer (100 Continue): the real one follows
        reply.answer = Answer(status, headers)
        if status < 300:
            reply.started()
        reply.until_eof = (
            "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "").lower()
        )
        if not reply.head.done():
            reply.head.set_result(reply.answer)

    def on_body(self, body: bytes) -> None:
        reply = self.reply
        assert reply is not None and reply.answer is not None
        if reply.answer.status >= 300:
            if len(reply.error_body) < MAX_ERROR_BODY:
                reply.error_body += body[: MAX_ERROR_BODY - len(reply.error_body)]
            return
        try:
            reply.feed(body)
        except BaseException as exc:
            self._fail(exc)
            raise

    def on_message_complete(self) -> None:
        reply = self.reply
        if reply is None or reply.answer is None:
            return  # the end of an informational answer
        self.reusable = self._parser is not None and self._parser.should_keep_alive()
        self._finish(reply)

    # -- the request in flight --------------------------------------------------------------------------------

    def send(self, request: bytes, feed: Callable[[bytes], None], started: Callable[[], None]) -> _Reply:
        assert self.transport is not None
        loop = self._loop
        self.reply = reply = _Reply(feed, started, loop.create_future(), loop.create_future())
        self.heard = self.reusable = False
        self._head_bytes = 0
        self._last_read = self._loop.time()
        self._timer = self._loop.call_at(self._last_read + self._timeout, self._expire)
        self.transport.write(request)
        return reply

    def _finish(self, reply: _Reply) -> None:
        assert reply.answer is not None
        reply.answer.body = bytes(reply.error_body)
        self.reply = None
        self._stop_timer()
        if not reply.head.done():
            reply.head.set_result(reply.answer)
        if not reply.end.done():
            reply.end.set_result(None)

    def _fail(self, error: BaseException) -> None:
        reply, self.reply = self.reply, None
        self.reusable = False
        self.abort()
        if reply is None:
            return
        for waiter in (reply.head, reply.end):
            if not waiter.done():
                waiter.set_exception(error)
                waiter.exception()  # the end's is retrieved by whoever awaits it, or by nobody

    def _expire(self) -> None:
        """One timer per request, following the last read: no timer made per chunk."""
        self._timer = None
        if self.reply is None:
            return
        due = self._last_read + self._timeout
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._expire)
            return
        self._fail(httpx.ReadTimeout(f"no bytes from the server for {self._timeout:g}s"))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def abort(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()


class Wire:
    """Streamed POSTs to one server for one model: kept-alive connections, one request on each at a time.

    `headers` are sent with every request, as they are: the key among them was refused where it was read
    if it held a line break or another control character (`ModelSpec.resolve_api_key`).
    """

    def __init__(
        self, base_url: str, headers: dict[str, str], *, timeout: float, label: str, guarded: bool
    ) -> None:
        url = httpx.URL(base_url.rstrip("/") + "/")
        self._url = url
        self._host = url.host
        self._tls = url.scheme == "https"
        self._port = url.port or (443 if self._tls else 80)
        self._timeout = timeout
        self._label = label
        self._guarded = guarded
        self._idle: list[_Connection] = []
        authority = url.raw_host.decode("ascii")
        if ":" in authority:
            authority = f"[{authority}]"
        if url.port is not None:
            authority = f"{authority}:{url.port}"
        lines = [f"host: {authority}", "user-agent: moot"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._head = "\r\n".join(lines).encode("utf-8", "replace")

    async def post(
        self, path: str, body: bytes, feed: Callable[[bytes], None], started: Callable[[], None]
    ) -> Answer:
        """Sends `body` to `path` (under base_url). A 2xx answer calls `started`, its body goes to `feed` as
        it arrives, and it returns when it ends; a 4xx or 5xx answer returns whole; a 3xx raises
        NetworkRefused."""
        target = self._url.raw_path.decode("ascii") + path
        request = b"POST %s HTTP/1.1\r\n%s\r\ncontent-length: %d\r\n\r\n%s" % (
            target.encode("ascii"),
            self._head,
            len(body),
            body,
        )
        connection = self._take() or await self._connect()
        reply = connection.send(request, feed, started)
        try:
            answer = await reply.head
            if 300 <= answer.status < 400:
                raise redirect_refusal(
                    self._label, answer.status, str(self._url.join(path)), answer.headers.get("location")
                )
            await reply.end
        except BaseException:
            connection.abort()  # cancelled, timed out or refused mid-answer: the rest of it is unread
            raise
        if connection.reusable and not connection.closed:
            self._keep(connection)
        else:
            connection.abort()
        return answer

    def _take(self) -> _Connection | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < KEEPALIVE:
                return connection
            connection.abort()
        return None

    def _keep(self, connection: _Connection) -> None:
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.append(connection)
        if len(self._idle) > MAX_IDLE:
            self._idle.pop(0).abort()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = ssl_context() if self._tls else None
        try:
            async with asyncio.timeout(self._timeout):
                hosts = await self._addresses()
                last: Exception | None = None
                for host in hosts:
                    try:
                        _, protocol = await loop.create_connection(
                            lambda: _Connection(self._timeout),
                            host,
                            self._port,
                            ssl=tls,
                            server_hostname=self._host if tls else None,
                        )
                        return protocol
                    except (OSError, ssl.SSLError) as exc:
                        last = exc
                assert last is not None
                raise last
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"connecting to {self._host}:{self._port} took longer than {self._timeout:g}s"
            ) from None
        except (OSError, ssl.SSLError, UnicodeError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc

    async def _addresses(self) -> list[str]:
        """Where to open the socket: the name itself (the system resolves it), or, where private addresses
        are refused, the addresses this process resolved and judged."""
        if not self._guarded:
            return [self._host]
        return await judged_addresses(self._host, self._port, self._label)

    def close(self) -> None:
        for connection in self._idle:
            connection.abort()
        self._idle.clear()
