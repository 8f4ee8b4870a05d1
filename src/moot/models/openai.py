"""Adapters for every OpenAI-compatible server: OpenAI, Ollama, vLLM, llama.cpp, DeepSeek, Qwen.

`OpenAILeanModel` (transport `lean`, the default) streams over one pooled httpx client and parses SSE with
orjson, because the CPU spent per streamed chunk adds up when many agents talk at once. `OpenAISDKModel`
(transport `sdk`) makes the same calls through the official SDK, for servers where its handling matters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, cast

import httpx
import orjson

from moot.exceptions import ContextTooLong, ModelError, ModelRequestError
from moot.models import Completion, Model, ModelRequest, Usage, _windows, estimate_usage
from moot.models._http import httpx_client, raise_refusal, sdk_http_client
from moot.models._windows import credentials_digest
from moot.models._wire import Answer, Wire, wire_for
from moot.models.retry import (
    broken_stream,
    connection_error,
    error_detail,
    malformed_chunk,
    retry_after,
    status_error,
)
from moot.scrub import remember_secret
from moot.spec import ModelSpec

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletionMessageParam

__all__ = ["DEFAULT_BASE_URL", "OpenAILeanModel", "OpenAISDKModel"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Compatible servers' words for a reply cut short, in OpenAI's: the engine reads "length" alone.
_FINISH = {"max_tokens": "length", "model_length": "length", "model_context_window_exceeded": "length"}


def _messages(request: ModelRequest) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": request.system}] if request.system else []
    messages.extend({"role": m.role, "content": m.content} for m in request.messages)
    return messages


def _max_tokens(spec: ModelSpec, request: ModelRequest) -> int:
    """The request's limit, never above the model's own `max_tokens`, which bounds speeches: a structured
    answer (the conclusion) has its own limit, as a cut one is no answer at all."""
    if request.json_output:
        return request.max_tokens
    return min(request.max_tokens, spec.max_tokens or request.max_tokens)


# How each server (by base URL) takes a request for each kind of JSON answer (by schema name), learnt by
# trying: "json_schema" (the schema is enforced, by grammar on llama.cpp and vLLM), "json_object", or
# "prompt" (the instruction alone). A server that rejects one is asked with the next, and that is remembered
# for the rest of the process; per kind, since a server may refuse one schema's keywords and take another's.
FORMAT_MODES: tuple[str, ...] = ("json_schema", "json_object", "prompt")
_formats: dict[tuple[str, str], str] = {}
# A stream line this long without its end is no chunk of a reply (a whole reply in one chunk is far less).
_MAX_LINE = 8 << 20
_RESEND_STALE = 2  # times a request is sent again when the server dropped the connection without an answer


def format_mode(base_url: str, request: ModelRequest) -> str | None:
    """The response format to ask `base_url` for, or None for a request that wants no JSON."""
    if not request.json_output:
        return None
    mode = _formats.get((base_url, request.schema_name), "json_schema")
    if mode == "json_schema" and request.schema is None:
        mode = "json_object"
    return mode


def _response_format(mode: str | None, request: ModelRequest) -> dict[str, Any] | None:
    if mode == "json_schema":
        schema = {"name": request.schema_name, "schema": request.schema, "strict": True}
        return {"type": "json_schema", "json_schema": schema}
    if mode == "json_object":
        return {"type": "json_object"}
    return None


def _refused_format(mode: str | None, error: ModelError) -> bool:
    """Whether `error` may be the server refusing the response format (then the next one is tried)."""
    return (
        mode not in (None, "prompt")
        and isinstance(error, ModelRequestError)
        and not isinstance(error, ContextTooLong)
        and error.status in (400, 422)
    )


def _downgrade(base_url: str, name: str, mode: str) -> None:
    _formats[(base_url, name)] = FORMAT_MODES[FORMAT_MODES.index(mode) + 1]


def _takes_json(base_url: str) -> bool:
    """Whether the server can be asked for JSON by response format: unless it refused even a JSON object."""
    return all(mode != "prompt" for (url, _), mode in _formats.items() if url == base_url)


async def with_formats(
    base_url: str,
    request: ModelRequest,
    attempt: Callable[[str | None], AsyncIterator[str | Completion]],
) -> AsyncIterator[str | Completion]:
    """Streams `attempt(mode)` with the response format `base_url` is known to take; where the server
    refuses it before answering, asks again with the next one and remembers that for the server."""
    while True:
        mode = format_mode(base_url, request)
        yielded = False
        try:
            async for item in attempt(mode):
                yielded = True
                yield item
            return
        except ModelError as exc:
            if yielded or mode is None or not _refused_format(mode, exc):
                raise
            _downgrade(base_url, request.schema_name, mode)


def _temperature(spec: ModelSpec, request: ModelRequest) -> float | None:
    return request.temperature if request.temperature is not None else spec.temperature


def _usage(prompt_tokens: object, completion_tokens: object) -> Usage | None:
    """The provider's usage, or None (then estimated) where a server reported counts that are not counts."""
    prompt_tokens, completion_tokens = prompt_tokens or 0, completion_tokens or 0
    if isinstance(prompt_tokens, int) and isinstance(completion_tokens, int):
        return Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens)
    return None


class _ChatStream:
    """Parses chat-completion SSE bytes; each read's content deltas are joined into one string in `texts`."""

    __slots__ = ("arrived", "done", "finish_reason", "model", "rest", "spec", "started", "texts", "usage")

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.rest = b""  # an incomplete last line, kept for the next read
        self.texts: list[str] = []  # joined by the consumer, which may fall behind by several reads
        self.arrived = asyncio.Event()
        self.started = False  # the server answered 2xx: a failure from here on breaks a reply begun
        self.done = False  # saw data: [DONE]
        self.finish_reason: str | None = None
        self.model = ""
        self.usage: dict[str, Any] | None = None

    def start(self) -> None:
        self.started = True

    def feed(self, data: bytes) -> None:
        """Takes one network read; a chunk of the wrong shape raises TransientModelError, as a cut would."""
        if self.rest:
            data = self.rest + data
        lines = data.split(b"\n")
        self.rest = lines.pop()
        if len(self.rest) > _MAX_LINE:
            raise malformed_chunk(self.spec, self.rest[:200] + b"...")
        text = ""
        for line in lines:
            if line.startswith(b"data: {"):
                chunk = orjson.loads(line[6:])
            elif line.startswith(b"data:") and (payload := line[5:].strip()):
                if payload == b"[DONE]":
                    self.done = True
                    continue
                chunk = orjson.loads(payload)
            else:
                continue  # blank lines between events, comments, event: and id: fields
            # No schema check per chunk (the hot path): a chunk of the wrong shape fails a lookup or a
            # concatenation below, and the few values kept for later are checked where they are kept.
            try:
                choices = chunk.get("choices")
                if choices:
                    choice = choices[0]
                    delta = choice.get("delta")
                    if delta:
                        content = delta.get("content")
                        if content:
                            text += content
                    reason = choice.get("finish_reason")
                    if reason:
                        model = chunk.get("model") or ""
                        if reason.__class__ is not str or model.__class__ is not str:
                            raise TypeError("finish_reason and model are strings")
                        self.finish_reason, self.model = reason, model
                elif "error" in chunk:
                    raise broken_stream(self.spec, error_detail(chunk))
                usage = chunk.get("usage")
                if usage:
                    if usage.__class__ is not dict:
                        raise TypeError("usage is an object")
                    self.usage = usage
            except (AttributeError, TypeError, KeyError, IndexError) as exc:
                raise malformed_chunk(self.spec, line[5:].strip()) from exc
        if text:
            self.texts.append(text)
            self.arrived.set()


class OpenAILeanModel(Model):
    """Chat completions over one pooled httpx client, yielding one delta per batch of network reads.

    A pump task reads the response while the consumer handles the previous delta, so everything that arrived
    meanwhile (one network read, or several when the consumer is slow) reaches it as a single string.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.label = spec.label
        self._client: httpx.AsyncClient | None = None
        self._wire: Wire | None = None  # the streamed requests' way, where no proxy is to be used
        self._key: str | None = None
        self._headers: dict[str, str] | None = None

    def _ready(self) -> None:
        """The key, the headers and the way streamed requests go, on first use: a missing key surfaces from
        stream() as ModelUnavailable. No httpx client is made here: most rooms never need one."""
        if self._headers is None:
            self._key = self.spec.resolve_api_key()
            remember_secret(self._key)  # scrubbed from every text, should a server echo it
            headers = {
                "accept": "text/event-stream",
                "accept-encoding": "identity",  # the body is read raw, so it must not be compressed
                "content-type": "application/json",
            }
            if self._key:
                headers["authorization"] = f"Bearer {self._key}"
            self._wire = wire_for(self.spec, self._base_url(), headers)
            self._headers = headers

    def _http(self) -> httpx.AsyncClient:
        """The pooled httpx client, made when first needed (most of a millisecond of CPU, per room): for the
        server's `/v1/models`, and for the streams a proxy takes."""
        self._ready()
        if self._client is None:
            self._client = httpx_client(
                self.spec, base_url=self._base_url(), headers=self._headers, timeout=self.spec.timeout
            )
        return self._client

    def _base_url(self) -> str:
        return self.spec.base_url or DEFAULT_BASE_URL

    async def server_window(self) -> int | None:
        """The window a server named by base_url states in `/v1/models`: llama.cpp's `meta.n_ctx` (each
        slot's), vLLM's `max_model_len`. A hosted API's default (no base_url) is not asked. The answer is
        kept for the process a few minutes, and rooms that start together share one request (`_windows`)."""
        if not self.spec.base_url:
            return None
        try:
            self._ready()
        except ModelError:  # a missing key: the turn reports it
            return None
        key = (
            "openai-models",
            self._base_url(),
            self.spec.name,
            credentials_digest(self._key),
            self.spec.refuses_private_addresses,
        )
        return cast("int | None", await _windows.ANSWERS.get(key, self._ask_window))

    async def _ask_window(self) -> object:
        """The window in the server's `/v1/models` (None where it states none); UNANSWERED where it did not
        answer, so that the next room asks again."""
        try:
            response = await self._http().get("models", timeout=10)
            if response.status_code != 200:
                return _windows.UNANSWERED
            return _window_in_models(response.json(), self.spec.name)
        except (httpx.HTTPError, ValueError, ModelError, RuntimeError):  # RuntimeError: a client closed
            return _windows.UNANSWERED  # by the room that asked first, while others wait on its request

    def _body(self, request: ModelRequest, mode: str | None = None) -> bytes:
        payload: dict[str, Any] = {
            "model": self.spec.name,
            "messages": _messages(request),
            "max_tokens": _max_tokens(self.spec, request),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        temperature = _temperature(self.spec, request)
        if temperature is not None:
            payload["temperature"] = temperature
        response_format = _response_format(mode, request)
        if response_format is not None:
            payload["response_format"] = response_format
        return orjson.dumps(payload)

    def structured_output(self) -> bool:
        return _takes_json(self._base_url())

    def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
        return with_formats(self._base_url(), request, lambda mode: self._stream(request, mode))

    async def _stream(self, request: ModelRequest, mode: str | None) -> AsyncIterator[str | Completion]:
        self._ready()
        state = _ChatStream(self.spec)
        pump = asyncio.create_task(self._pump(self._body(request, mode), state))
        texts, arrived = state.texts, state.arrived
        parts: list[str] = []
        try:
            while True:
                await arrived.wait()
                arrived.clear()
                finished = pump.done()  # checked before taking texts: all of a finished pump's are there
                if texts:
                    text = texts[0] if len(texts) == 1 else "".join(texts)
                    texts.clear()
                    parts.append(text)
                    yield text
                if finished:
                    break
            pump.result()
        finally:
            if not pump.done():
                pump.cancel()
                await asyncio.wait((pump,))
            if not pump.cancelled():
                pump.exception()  # marks it retrieved: a consumer that stopped early wants no log of it
        text = "".join(parts)
        usage = state.usage
        reported = _usage(usage.get("prompt_tokens"), usage.get("completion_tokens")) if usage else None
        yield Completion(
            text=text,
            usage=reported or estimate_usage(request, text),
            finish_reason=_FINISH.get(state.finish_reason or "stop", state.finish_reason or "stop"),
            model=state.model or self.spec.name,
        )

    async def _pump(self, body: bytes, state: _ChatStream) -> None:
        spec = self.spec
        resent = 0
        try:
            while True:
                try:
                    answer = await self._post(body, state)
                    break
                except httpx.RemoteProtocolError:
                    # A kept-alive connection the server closed just as the request went out on it (no
                    # answer at all): sent again at once, on a fresh connection, as browsers do.
                    if state.started or resent == _RESEND_STALE:
                        raise
                    resent += 1
        except httpx.TimeoutException as exc:
            raise connection_error(spec, exc, started=state.started, timed_out=True) from exc
        except httpx.RequestError as exc:
            raise connection_error(spec, exc, started=state.started) from exc
        except orjson.JSONDecodeError as exc:
            raise broken_stream(spec, f"unreadable data ({exc})") from exc
        finally:
            state.arrived.set()
        if answer is not None:
            raise status_error(
                spec,
                answer.status,
                error_detail(answer.body),
                retry_after=retry_after(answer.headers),
                key=self._key,
                body=answer.body,
            )
        if not state.done and state.finish_reason is None:
            raise broken_stream(spec)

    async def _post(self, body: bytes, state: _ChatStream) -> Answer | None:
        """Streams the answer's body into `state`; a failure status's answer is returned whole."""
        if self._wire is not None:
            answer = await self._wire.post("chat/completions", body, state.feed, state.start)
            return answer if answer.status >= 400 else None
        async with self._http().stream("POST", "chat/completions", content=body) as response:
            if response.status_code >= 400:
                error = await response.aread()
                return Answer(response.status_code, dict(response.headers), error)
            state.start()
            feed = state.feed
            async for raw in response.aiter_raw():
                feed(raw)
        return None

    async def aclose(self) -> None:
        if self._wire is not None:
            self._wire.close()
            self._wire = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _window_in_models(data: object, name: str) -> int | None:
    """The context window in a `/v1/models` answer: llama.cpp's `meta.n_ctx`, vLLM's `max_model_len`."""
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        return None
    entries = [m for m in models if isinstance(m, dict)]
    named = [m for m in entries if m.get("id") == name] or (entries if len(entries) == 1 else [])
    for entry in named:
        meta = entry.get("meta")
        window = meta.get("n_ctx") if isinstance(meta, dict) else entry.get("max_model_len")
        if isinstance(window, int) and window > 0:
            return window
    return None


class OpenAISDKModel(Model):
    """Chat completions through the official `openai` SDK, with its retries off: Moot retries itself."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.label = spec.label
        self._client: AsyncOpenAI | None = None
        self._key: str | None = None

    def _connect(self) -> AsyncOpenAI:
        """The client, made on first use: a missing key surfaces from stream() as ModelUnavailable."""
        if self._client is None:
            import openai
            from openai import AsyncOpenAI

            self._key = self.spec.resolve_api_key()
            remember_secret(self._key)  # scrubbed from every text, should a server echo it
            self._client = AsyncOpenAI(
                api_key=self._key or "not-needed",
                base_url=self._base_url(),
                timeout=self.spec.timeout,
                max_retries=0,
                http_client=sdk_http_client(self.spec, openai.DefaultAsyncHttpxClient),
            )
        return self._client

    def _base_url(self) -> str:
        return self.spec.base_url or DEFAULT_BASE_URL

    def structured_output(self) -> bool:
        return _takes_json(self._base_url())

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
        async for item in with_formats(self._base_url(), request, lambda mode: self._stream(request, mode)):
            yield item

    async def _stream(self, request: ModelRequest, mode: str | None) -> AsyncIterator[str | Completion]:
        import openai

        client, spec = self._connect(), self.spec
        response_format = _response_format(mode, request)
        temperature = _temperature(spec, request)
        parts: list[str] = []
        usage: Usage | None = None
        finish_reason: str | None = None
        model = ""
        started = False
        try:
            response = await client.chat.completions.create(
                model=spec.name,
                messages=cast("list[ChatCompletionMessageParam]", _messages(request)),
                max_tokens=_max_tokens(spec, request),
                temperature=openai.omit if temperature is None else temperature,
                response_format=cast("Any", response_format) if response_format else openai.omit,
                stream=True,
                stream_options={"include_usage": True},
            )
            started = True
            async with response:
                async for chunk in response:
                    # The SDK builds chunks without validating them: a wrong shape shows up here.
                    content: object = None
                    try:
                        choices = getattr(chunk, "choices", None)  # a usage-only chunk may have none
                        if choices:
                            choice = choices[0]
                            content = choice.delta.content
                            if content is not None and content.__class__ is not str:
                                raise TypeError("content is a string")
                            if choice.finish_reason:
                                named = getattr(chunk, "model", None) or ""
                                if choice.finish_reason.__class__ is not str or named.__class__ is not str:
                                    raise TypeError("finish_reason and model are strings")
                                finish_reason, model = choice.finish_reason, named
                        if chunk.usage:
                            usage = _usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                    except (AttributeError, TypeError, KeyError, IndexError) as exc:
                        raise malformed_chunk(spec, chunk) from exc
                    if content:
                        text = cast("str", content)
                        parts.append(text)
                        yield text
        except openai.APIStatusError as exc:
            headers = exc.response.headers
            raise status_error(
                spec,
                exc.status_code,
                error_detail(exc.body),
                retry_after=retry_after(headers),
                key=self._key,
                body=exc.body,
            ) from exc
        except openai.APITimeoutError as exc:
            raise connection_error(spec, exc, started=started, timed_out=True) from exc
        except openai.APIConnectionError as exc:
            raise_refusal(exc)
            raise connection_error(spec, exc, started=started) from exc
        except openai.APIError as exc:  # an error object inside the stream
            raise broken_stream(spec, error_detail(exc.body) or exc.message) from exc
        if finish_reason is None:
            raise broken_stream(spec)
        text = "".join(parts)
        yield Completion(
            text=text,
            usage=usage or estimate_usage(request, text),
            finish_reason=_FINISH.get(finish_reason, finish_reason),
            model=model or spec.name,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
