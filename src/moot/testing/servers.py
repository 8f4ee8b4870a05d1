"""A fake LLM server speaking the OpenAI and Anthropic wire protocols over real HTTP/1.1.

Adapters are tested against real sockets, real SSE framing and the providers' real error bodies instead of
mocks, so what passes here fails the same way a provider makes it fail. It is written on raw asyncio streams
because a benchmark also runs it as a separate process and it must not be the bottleneck there: a streamed
chunk costs one bytes formatting and one write.

    async with FakeLLMServer(reply_tokens=5) as server:     # in the running event loop
        server.faults.extend([Fault.status(429, retry_after=0.1), Fault.cut(after_chunks=2)])
        server.faults.append(Fault.stream_error(after_chunks=3, message="bad key {key}"))  # echoes the key
        ...                                                  # OpenAI base_url: server.url + "/v1"

    server = FakeLLMServer().start_in_thread()               # for synchronous code; server.stop() after

    python -m moot.testing.servers --port 0 --reply-tokens 200 --token-delay 0.005   # prints its URL first
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, Self

import orjson

__all__ = ["FakeLLMServer", "Fault", "RecordedRequest", "Reply", "default_reply", "main"]

Reply = Callable[[dict[str, Any]], str]
"""Makes the reply text from the request's JSON body."""

_WORDS = ("the", "council", "weighs", "each", "option", "with", "care", "before", "it", "decides")
_PIECE = re.compile(r"\s*\S+\s*")  # one "token": a word with the spaces around it, so pieces join to the text

_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
_LAST_CHUNK = b"0\r\n\r\n"

# status -> (type, code, message) as OpenAI sends them; {model} and {key} are filled in.
_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys.",
    ),
    403: ("invalid_request_error", "model_not_found", "Project does not have access to model `{model}`"),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    408: ("timeout", None, "Request timed out."),
    422: ("invalid_request_error", None, "Unprocessable request."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for {model} on requests per min (RPM): Limit 3, Used 3, Requested 1.",
    ),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
}
_OPENAI_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
# status -> (type, message) as Anthropic sends them.
_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: {model}"),
    408: ("timeout_error", "Request timed out."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def default_reply(tokens: int) -> str:
    """A deterministic text of `tokens` words: the same count always gives the same text."""
    return " ".join(_WORDS[i % len(_WORDS)] for i in range(tokens))


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted misbehaviour; the server takes one from `server.faults` per request, in order.

    `after_chunks` counts text chunks: the events that open a stream (role, message_start) always go out.
    `{key}` in a message, a body, a header or a location is replaced by the key the client sent, the way a
    careless server echoes it.
    """

    kind: Literal["ok", "status", "cut", "hang", "stream_error", "chunk", "redirect"]
    code: int = 200
    retry_after: float | str | None = None
    message: str | None = None
    after_chunks: int | None = None
    seconds: float = 0.0
    body: Any = None  # a whole error body instead of the provider's usual one
    headers: tuple[tuple[str, str], ...] = ()  # extra response headers
    data: bytes = b""  # a raw SSE data payload
    event: str = "content_block_delta"  # the SSE event name of `data` on the Anthropic protocol
    location: str = ""

    @classmethod
    def ok(cls) -> Fault:
        """Serves this request normally, to aim the next fault at a later request."""
        return cls("ok")

    @classmethod
    def status(
        cls,
        code: int,
        *,
        retry_after: float | str | None = None,
        message: str | None = None,
        body: Any = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Fault:
        """Answers with the provider's real error body (or `body`); `retry_after` in seconds or an HTTP date."""
        return cls(
            "status", code=code, retry_after=retry_after, message=message, body=body, headers=tuple(headers)
        )

    @classmethod
    def stream_error(cls, after_chunks: int = 0, *, message: str | None = None, body: Any = None) -> Fault:
        """Sends an error event inside a stream that began well (`data: {"error": ...}`), then ends it."""
        return cls("stream_error", after_chunks=after_chunks, message=message, body=body)

    @classmethod
    def chunk(cls, data: bytes | str, *, after_chunks: int = 0, event: str = "content_block_delta") -> Fault:
        """Slips one raw `data:` payload into the stream (a malformed chunk, say), then streams on."""
        raw = data.encode() if isinstance(data, str) else data
        return cls("chunk", after_chunks=after_chunks, data=raw, event=event)

    @classmethod
    def redirect(
        cls,
        location: str,
        *,
        code: int = 307,
        message: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Fault:
        """Answers with a redirect to `location`, with `message` as its body."""
        return cls("redirect", code=code, location=location, message=message, headers=tuple(headers))

    @classmethod
    def cut(cls, after_chunks: int = 0) -> Fault:
        """Aborts the connection mid-stream with no terminating chunk; a non-streamed request gets nothing."""
        return cls("cut", after_chunks=after_chunks)

    @classmethod
    def hang(cls, seconds: float, *, after_chunks: int | None = None) -> Fault:
        """Goes silent for `seconds` before answering, or mid-stream after `after_chunks`, then goes on."""
        return cls("hang", seconds=seconds, after_chunks=after_chunks)


@dataclass(slots=True)
class RecordedRequest:
    """What a client sent, for assertions; `usage` is the (input, output) tokens the server counted."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any
    usage: tuple[int, int] | None = None


class FakeLLMServer:
    """Serves `POST /v1/chat/completions`, `POST /v1/messages` and `GET /v1/models`, streamed or not.

    Settings are plain attributes and may change between requests. With `api_key` set, requests must carry it
    (OpenAI: `Authorization: Bearer`; Anthropic: `x-api-key` or Bearer) or get 401. `report_usage=False` never sends
    usage, as some local servers do. Replies honour `max_tokens` (one word is one token) and stop with
    `length` / `max_tokens` when cut short. With `context_window` set, a prompt of more words than that is
    refused the way the server of `context_style` refuses it (llama.cpp or OpenAI; Anthropic on its
    protocol). Anthropic replies report `cache_read_tokens` and `cache_creation_tokens` when they are set.
    `length_reason` is the word for a reply cut by `max_tokens` (default: the protocol's own).
    `announce_window` states `context_window` in `GET /v1/models` as llama.cpp does (`meta.n_ctx`).
    `response_formats` (e.g. `["json_object", "text"]`) refuses any other `response_format` type with a 400, as
    servers without structured outputs do; by default every one is taken (and ignored: replies are the same).
    `GET /v1/models` takes no fault and is not recorded: faults and `requests` are the model calls'; it is
    counted in `models_asked`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        reply: Reply | None = None,
        reply_tokens: int = 20,
        tokens_per_chunk: int = 1,
        ttft: float = 0.0,
        token_delay: float = 0.0,
        api_key: str | None = None,
        report_usage: bool = True,
        record: bool = True,
        models: Sequence[str] = ("fake-model",),
        context_window: int | None = None,
        context_style: Literal["llama.cpp", "openai"] = "llama.cpp",
        cache_read_tokens: int = 0,
        cache_creation_tokens: int = 0,
        length_reason: str | None = None,
        announce_window: bool = False,
        response_formats: Sequence[str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.tls = tls
        self.port = port
        self.reply = reply
        self.reply_tokens = reply_tokens
        self.tokens_per_chunk = max(1, tokens_per_chunk)
        self.ttft = ttft
        self.token_delay = token_delay
        self.api_key = api_key
        self.report_usage = report_usage
        self.record = record
        self.models = tuple(models)
        self.context_window = context_window
        self.context_style = context_style
        self.cache_read_tokens = cache_read_tokens
        self.cache_creation_tokens = cache_creation_tokens
        self.length_reason = length_reason
        self.announce_window = announce_window
        self.response_formats = tuple(response_formats) if response_formats is not None else None
        self.faults: deque[Fault] = deque()
        self.requests: list[RecordedRequest] = []
        self.models_asked = 0  # GET /v1/models requests answered
        self._count = 0
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self.connections_opened = 0  # TCP connections accepted, for tests of connection reuse
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """`http://host:port` (`https` with `tls`); an OpenAI client's base_url is this plus `/v1`."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    # -- running ---------------------------------------------------------------------------------------------

    async def start(self) -> Self:
        """Listens in the running event loop; port 0 picks a free port, shown in `url` afterwards."""
        self._server = await asyncio.start_server(self._connection, self.host, self.port, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        """Stops listening and drops open connections, hanging ones included."""
        if self._server is None:
            return
        self._server.close()
        for task, writer in list(self._connections.items()):
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def start_in_thread(self) -> Self:
        """Serves from a background thread with its own event loop, for synchronous code; `stop()` ends it."""
        started = threading.Event()

        def run() -> None:
            try:
                asyncio.run(self._serve_in_thread(started))
            except Exception as exc:  # handed to the caller below rather than lost in the thread
                self._thread_error = exc
                started.set()

        self._thread = threading.Thread(target=run, name="fake-llm-server", daemon=True)
        self._thread.start()
        started.wait()
        if self._thread_error is not None:
            self._thread.join()
            self._thread = None
            raise self._thread_error
        return self

    def stop(self) -> None:
        """Ends a server started with `start_in_thread()` and waits for its thread."""
        if self._thread is None or self._loop is None or self._stopping is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join()
        self._thread = None

    def __enter__(self) -> Self:
        return self.start_in_thread()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _serve_in_thread(self, started: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            await self.start()
        finally:
            started.set()
        try:
            await self._stopping.wait()
        finally:
            await self.aclose()

    # -- HTTP/1.1 --------------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        self.connections_opened += 1
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client went away or sent something that is not HTTP: drop the connection
        except asyncio.CancelledError:
            pass  # the server is closing; returning keeps asyncio's connection callback from logging it
        finally:
            del self._connections[task]
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Reads one request and answers it; False when the connection should close."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # closed between requests, as keep-alive clients do
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        raw = await reader.readexactly(length) if length else b""
        if "://" in target:  # absolute form, as sent to a proxy: the server serves its path
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        keep_alive = await self._handle(method, target.partition("?")[0], headers, raw, reader, writer)
        return keep_alive and headers.get("connection", "").lower() != "close"

    async def _handle(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        raw: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        self._count += 1
        anthropic = path == "/v1/messages" or "anthropic-version" in headers
        body: Any = None
        if raw:
            with contextlib.suppress(orjson.JSONDecodeError):
                body = orjson.loads(raw)
        if method == "GET" and path == "/v1/models":
            # Asked by adapters before a room's first turn (for the context window): answered at once, so that
            # faults and recorded requests stay those of model calls.
            self.models_asked += 1
            if self.api_key is not None and not self._authorized(headers, anthropic):
                await self._error(writer, anthropic, 401, headers, "")
            else:
                await _send_json(writer, 200, self._model_list(anthropic))
            return True
        request = RecordedRequest(method, path, headers, body)
        if self.record:
            self.requests.append(request)
        model = str(body.get("model") or "") if isinstance(body, dict) else ""
        try:
            fault: Fault | None = self.faults.popleft()
        except IndexError:
            fault = None
        key = _sent_key(headers)
        if fault is not None and fault.kind == "status":
            await self._error(
                writer, anthropic, fault.code, headers, model, fault.message, fault.retry_after, fault, key
            )
            return True
        if fault is not None and fault.kind == "redirect":
            extra = f"location: {_echo(fault.location, key)}\r\n" + _header_lines(fault.headers, key)
            body = _echo(fault.message or f"Redirecting to {fault.location}", key).encode()
            await _send(writer, fault.code, body, "text/plain", extra)
            return True
        streamed = isinstance(body, dict) and bool(body.get("stream"))
        if fault is not None and fault.kind == "cut" and not streamed:
            writer.transport.abort()
            return False
        if fault is not None and fault.kind == "hang" and (fault.after_chunks is None or not streamed):
            if await _client_left(reader, fault.seconds):
                return False
            fault = None
        if self.api_key is not None and not self._authorized(headers, anthropic):
            await self._error(writer, anthropic, 401, headers, model)
            return True
        if method == "POST" and path in ("/v1/chat/completions", "/v1/messages"):
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                await self._error(writer, anthropic, 400, headers, model, "We could not parse the JSON body.")
                return True
            if self.context_window is not None and _prompt_tokens(body) > self.context_window:
                await self._too_long(writer, anthropic, _prompt_tokens(body))
                return True
            asked = body.get("response_format")
            kind = asked.get("type") if isinstance(asked, dict) else None
            if self.response_formats is not None and kind is not None and kind not in self.response_formats:
                message = f"'response_format.type' must be one of {', '.join(self.response_formats)}"
                await self._error(writer, anthropic, 400, headers, model, message)
                return True
            injected = _injected(fault, anthropic, key)
            if anthropic:
                return await self._anthropic(body, request, reader, writer, fault, injected)
            return await self._openai(body, request, reader, writer, fault, injected)
        if method == "GET" and path == "/v1/models":
            await _send_json(writer, 200, self._model_list(anthropic))
            return True
        await self._error(writer, anthropic, 404, headers, model, f"Invalid URL ({method} {path})")
        return True

    def _authorized(self, headers: dict[str, str], anthropic: bool) -> bool:
        bearer = headers.get("authorization") == f"Bearer {self.api_key}"
        if anthropic:  # x-api-key, or Bearer as the anthropic SDK sends keys since 2.x
            return bearer or headers.get("x-api-key") == self.api_key
        return bearer

    async def _error(
        self,
        writer: asyncio.StreamWriter,
        anthropic: bool,
        status: int,
        headers: dict[str, str],
        model: str,
        message: str | None = None,
        retry_after: float | str | None = None,
        fault: Fault | None = None,
        key: str = "",
    ) -> None:
        """Writes the error body the real provider sends for `status`, or the fault's own."""
        message = _echo(message, key) if message else message
        if fault is not None and fault.body is not None:
            body: dict[str, Any] = orjson.loads(_echo(orjson.dumps(fault.body).decode(), key))
        elif anthropic:
            kind, default = _ANTHROPIC_ERRORS.get(
                status, ("api_error" if status >= 500 else "invalid_request_error", "Error.")
            )
            error: dict[str, Any] = {"type": kind, "message": message or default.format(model=model)}
            body = {"type": "error", "error": error, "request_id": f"req_fake{self._count}"}
        else:
            kind, code, default = _OPENAI_ERRORS.get(
                status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
            )
            key = headers.get("authorization", "").removeprefix("Bearer ").strip()
            if status == 401 and not key:
                default = _OPENAI_NO_KEY
            text = message or default.format(model=model, key=_mask(key))
            body = {"error": {"message": text, "type": kind, "param": None, "code": code}}
        extra = ""
        if retry_after is not None:
            value = retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
            extra = f"retry-after: {value}\r\n"
        if fault is not None:
            extra += _header_lines(fault.headers, key)
        await _send_json(writer, status, body, extra)

    async def _too_long(self, writer: asyncio.StreamWriter, anthropic: bool, prompt: int) -> None:
        """Refuses a prompt longer than `context_window` with the server's real words and body."""
        window = self.context_window
        body: dict[str, Any]
        if anthropic:
            message = f"prompt is too long: {prompt} tokens > {window} maximum"
            error: dict[str, Any] = {"type": "invalid_request_error", "message": message}
            body = {"type": "error", "error": error, "request_id": f"req_fake{self._count}"}
        elif self.context_style == "openai":
            message = (
                f"This model's maximum context length is {window} tokens. However, your messages resulted in "
                f"{prompt} tokens. Please reduce the length of the messages."
            )
            error = {"message": message, "type": "invalid_request_error", "param": "messages"}
            body = {"error": {**error, "code": "context_length_exceeded"}}
        else:
            message = "the request exceeds the available context size, try increasing it"
            error = {"code": 400, "message": message, "type": "exceed_context_size_error"}
            body = {"error": {**error, "n_prompt_tokens": prompt, "n_ctx": window}}
        await _send_json(writer, 400, body)

    def _model_list(self, anthropic: bool) -> dict[str, Any]:
        if anthropic:
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                for m in self.models
            ]
            first, last = (self.models[0], self.models[-1]) if self.models else (None, None)
            return {"data": data, "has_more": False, "first_id": first, "last_id": last}
        listed: list[dict[str, Any]] = [
            {"id": m, "object": "model", "created": 0, "owned_by": "moot"} for m in self.models
        ]
        if self.announce_window and self.context_window is not None:
            for entry in listed:  # llama.cpp states each slot's window here
                entry["meta"] = {"n_ctx": self.context_window, "n_ctx_train": self.context_window * 4}
        return {"object": "list", "data": listed}

    # -- replies ---------------------------------------------------------------------------------------------

    def _plan(self, body: dict[str, Any], request: RecordedRequest) -> tuple[list[str], int, int, bool]:
        """The reply in chunks, the input and output token counts, and whether max_tokens cut it short."""
        text = self.reply(body) if self.reply is not None else default_reply(self.reply_tokens)
        words = _PIECE.findall(text) or ([text] if text else [])
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        truncated = isinstance(limit, int) and len(words) > limit
        if truncated:
            words = words[:limit]
        step = self.tokens_per_chunk
        chunks = words if step == 1 else ["".join(words[i : i + step]) for i in range(0, len(words), step)]
        input_tokens = _prompt_tokens(body)
        request.usage = (input_tokens, len(words))
        return chunks, input_tokens, len(words), truncated

    async def _openai(
        self,
        body: dict[str, Any],
        request: RecordedRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fault: Fault | None,
        injected: bytes = b"",
    ) -> bool:
        chunks, input_tokens, output_tokens, truncated = self._plan(body, request)
        finish = (self.length_reason or "length") if truncated else "stop"
        model = str(body.get("model") or self.models[0])
        meta = {"id": f"chatcmpl-fake{self._count}", "created": int(time.time()), "model": model}
        usage = {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }
        if not body.get("stream"):
            await self._generate(len(chunks))
            message = {"role": "assistant", "content": "".join(chunks), "refusal": None}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            reply: dict[str, Any] = {**meta, "object": "chat.completion", "choices": [choice]}
            if self.report_usage:
                reply["usage"] = usage
            await _send_json(writer, 200, reply)
            return True
        include_usage = self.report_usage and bool((body.get("stream_options") or {}).get("include_usage"))
        head = (
            b"data: "
            + orjson.dumps({**meta, "object": "chat.completion.chunk"})[:-1]
            + b',"choices":[{"index":0,'
        )
        close = b'}],"usage":null}\n\n' if include_usage else b"}]}\n\n"
        prefix = head + b'"delta":{"content":'
        suffix = b'},"logprobs":null,"finish_reason":null' + close
        opening = _frame(
            head + b'"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null' + close
        )
        ending = _frame(
            head + b'"delta":{},"logprobs":null,"finish_reason":"' + finish.encode() + b'"' + close
        )
        if include_usage:
            last = {**meta, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            ending += _frame(b"data: " + orjson.dumps(last) + b"\n\n")
        ending += _frame(b"data: [DONE]\n\n")
        fixed = len(prefix) + len(suffix)
        frames = [_frame_parts(fixed, prefix, orjson.dumps(chunk), suffix) for chunk in chunks]
        return await self._stream(reader, writer, opening, frames, ending, fault, injected)

    async def _anthropic(
        self,
        body: dict[str, Any],
        request: RecordedRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fault: Fault | None,
        injected: bytes = b"",
    ) -> bool:
        chunks, input_tokens, output_tokens, truncated = self._plan(body, request)
        stop_reason = (self.length_reason or "max_tokens") if truncated else "end_turn"
        message: dict[str, Any] = {
            "id": f"msg_fake{self._count}",
            "type": "message",
            "role": "assistant",
            "model": str(body.get("model") or self.models[0]),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        cache: dict[str, int] = {}
        if self.cache_read_tokens or self.cache_creation_tokens:
            cache = {
                "cache_read_input_tokens": self.cache_read_tokens,
                "cache_creation_input_tokens": self.cache_creation_tokens,
            }
        if not body.get("stream"):
            await self._generate(len(chunks))
            message.update(content=[{"type": "text", "text": "".join(chunks)}], stop_reason=stop_reason)
            if self.report_usage:
                message["usage"] = {"input_tokens": input_tokens, "output_tokens": output_tokens, **cache}
            await _send_json(writer, 200, message)
            return True
        if self.report_usage:
            message["usage"] = {"input_tokens": input_tokens, "output_tokens": 1, **cache}
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        }
        if self.report_usage:
            delta["usage"] = {"output_tokens": output_tokens}
        opening = (
            _event("message_start", {"type": "message_start", "message": message})
            + _event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
            + _event("ping", {"type": "ping"})
        )
        ending = (
            _event("content_block_stop", {"type": "content_block_stop", "index": 0})
            + _event("message_delta", delta)
            + _event("message_stop", {"type": "message_stop"})
        )
        prefix = (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":'
        )
        suffix = b"}}\n\n"
        fixed = len(prefix) + len(suffix)
        frames = [_frame_parts(fixed, prefix, orjson.dumps(chunk), suffix) for chunk in chunks]
        return await self._stream(reader, writer, opening, frames, ending, fault, injected)

    async def _generate(self, chunks: int) -> None:
        """Takes as long as streaming would have: a non-streamed reply arrives when generation ends."""
        seconds = self.ttft + self.token_delay * max(0, chunks - 1)
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def _stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        opening: bytes,
        frames: list[bytes],
        ending: bytes,
        fault: Fault | None,
        injected: bytes = b"",
    ) -> bool:
        """Sends the SSE response one HTTP chunk per event, playing a stream fault where it falls.

        `injected` is the event a `stream_error` (after which the stream ends) or a `chunk` fault sends.
        """
        if self.ttft > 0:
            await asyncio.sleep(self.ttft)
        writer.write(_SSE_HEAD + opening)
        at = None  # where a cut or hang falls; past the last chunk means just before the ending
        if fault is not None and fault.after_chunks is not None and fault.kind != "status":
            at = min(fault.after_chunks, len(frames))
        delay = self.token_delay
        start = time.monotonic()
        for index in range(len(frames) + 1):
            if index == at and fault is not None:
                if fault.kind == "cut":
                    await _flush(writer)
                    writer.transport.abort()
                    return False
                if fault.kind == "stream_error":
                    writer.write(injected + _LAST_CHUNK)
                    await writer.drain()
                    return True
                if fault.kind == "chunk":
                    writer.write(injected)
                elif await _client_left(reader, fault.seconds):
                    return False
            if index == len(frames):
                break
            if delay > 0 and index:  # paced to deadlines, so sleep overheads do not add up over a reply
                await asyncio.sleep(max(0.0, start + index * delay - time.monotonic()))
            writer.write(frames[index])
            await writer.drain()
        writer.write(ending + _LAST_CHUNK)
        await writer.drain()
        return True


def _prompt_tokens(body: dict[str, Any]) -> int:
    """Input tokens as the server counts them: words in the system prompt and every message."""
    count = len(str(body.get("system") or "").split())
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            count += len(str(message.get("content") or "").split())
    return count


def _sent_key(headers: dict[str, str]) -> str:
    """The key the client sent, in whichever header its protocol uses."""
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()


def _echo(text: str, key: str) -> str:
    return text.replace("{key}", key)


def _header_lines(headers: Sequence[tuple[str, str]], key: str) -> str:
    return "".join(f"{name}: {_echo(value, key)}\r\n" for name, value in headers)


def _injected(fault: Fault | None, anthropic: bool, key: str) -> bytes:
    """The SSE event a `stream_error` or `chunk` fault slips into the stream, framed as one HTTP chunk."""
    if fault is None:
        return b""
    if fault.kind == "chunk":
        event = b"event: " + fault.event.encode() + b"\n" if anthropic else b""
        return _frame(event + b"data: " + _echo(fault.data.decode(), key).encode() + b"\n\n")
    if fault.kind != "stream_error":
        return b""
    body: Any
    if fault.body is not None:
        body = orjson.loads(_echo(orjson.dumps(fault.body).decode(), key))
    elif anthropic:
        error = {"type": "overloaded_error", "message": _echo(fault.message or "Overloaded", key)}
        body = {"type": "error", "error": error}
    else:
        message = _echo(fault.message or _OPENAI_ERRORS[500][2], key)
        body = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    if anthropic:
        return _event("error", body)
    return _frame(b"data: " + orjson.dumps(body) + b"\n\n")


def _mask(key: str) -> str:
    """A key as OpenAI echoes it: the ends only."""
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}" if len(key) > 10 else "*" * len(key)


def _frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def _frame_parts(fixed: int, prefix: bytes, middle: bytes, suffix: bytes) -> bytes:
    return b"%x\r\n%b%b%b\r\n" % (fixed + len(middle), prefix, middle, suffix)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return _frame(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")


async def _send_json(writer: asyncio.StreamWriter, status: int, body: Any, extra_headers: str = "") -> None:
    await _send(writer, status, orjson.dumps(body), "application/json", extra_headers)


async def _send(
    writer: asyncio.StreamWriter, status: int, data: bytes, content_type: str, extra_headers: str = ""
) -> None:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Overloaded" if status == 529 else "Error"
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(data)}\r\n{extra_headers}\r\n"
    )
    writer.write(head.encode("latin-1") + data)
    await writer.drain()


async def _flush(writer: asyncio.StreamWriter) -> None:
    """Waits until everything written has left, so an abort right after loses none of it."""
    writer.transport.set_write_buffer_limits(high=0)
    await writer.drain()


async def _client_left(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Waits `seconds`; True as soon as the client closes the connection (it sends nothing meanwhile)."""
    try:
        await asyncio.wait_for(reader.read(), seconds)
    except TimeoutError:
        return False
    return True


async def _serve_until_signal(server: FakeLLMServer) -> None:
    async with server:
        print(server.url, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the server as a process until SIGINT or SIGTERM; its URL is the first line on stdout."""
    parser = argparse.ArgumentParser(
        prog="python -m moot.testing.servers",
        description="A fake OpenAI/Anthropic server for tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--reply-tokens", type=int, default=20, help="words in each reply")
    parser.add_argument("--tokens-per-chunk", type=int, default=1)
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds before the first chunk")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--api-key", help="the key clients must send (default: any)")
    parser.add_argument("--no-usage", action="store_true", help="never report token usage")
    parser.add_argument("--record", action="store_true", help="keep every request in memory")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop: uvloop costs a load generator less CPU per chunk (it must be installed)",
    )
    args = parser.parse_args(argv)
    server = FakeLLMServer(
        host=args.host,
        port=args.port,
        reply_tokens=args.reply_tokens,
        tokens_per_chunk=args.tokens_per_chunk,
        ttft=args.ttft,
        token_delay=args.token_delay,
        api_key=args.api_key,
        report_usage=not args.no_usage,
        record=args.record,
    )
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve_until_signal(server))


if __name__ == "__main__":
    main()
