"""Retrying what a retry may mend, and turning provider failures into Moot's exceptions.

The mapping lives beside the retry policy because it is what decides retryability: every adapter raises
through it, so the engine sees one vocabulary (ModelAuthError, ModelRequestError, TransientModelError)
whatever the provider, and every message says what to do next.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType

import orjson

from moot import tracing
from moot.exceptions import (
    ContextTooLong,
    ModelAuthError,
    ModelError,
    ModelRequestError,
    TransientModelError,
)
from moot.models import Completion, Model, ModelRequest
from moot.scrub import scrub
from moot.spec import ModelSpec

__all__ = [
    "broken_stream",
    "complete",
    "connection_error",
    "context_overflow",
    "error_detail",
    "malformed_chunk",
    "retry_after",
    "retrying",
    "status_error",
]

_DEFAULT_URL = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
_DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def retrying(spec: ModelSpec, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> Attempts:
    """Retries TransientModelError up to `spec.max_retries` times; anything else goes straight through.

    Waits what the server asked (Retry-After), else `retry_backoff` doubled each time; never more than
    `retry_max_wait`. The last error is re-raised as itself, not wrapped. `sleep` waits between attempts.
    """
    return Attempts(spec, sleep)


class Attempts:
    """`async for attempt in retrying(spec): with attempt: ...`: the body runs until it ends without a
    TransientModelError, or the attempts run out and the last error is raised.

    The shape of tenacity's `AsyncRetrying`, written here because tenacity leaves 34 objects in reference
    cycles per call (its state points back at its retrier): one per model call, in every room, and each
    full collection of a busy server walks them (decision 0002). Nothing here points back at itself, and
    the error kept between attempts is let go of as it is raised.
    """

    __slots__ = ("_error", "_made", "_sleep", "_spec", "_succeeded")

    def __init__(self, spec: ModelSpec, sleep: Callable[[float], Awaitable[None]]) -> None:
        self._spec = spec
        self._sleep = sleep
        self._made = 0
        self._error: TransientModelError | None = None  # the last attempt's, until the next one
        self._succeeded = False

    def __aiter__(self) -> Attempts:
        return self

    async def __anext__(self) -> _Attempt:
        if self._succeeded:
            raise StopAsyncIteration
        error, self._error = self._error, None
        if error is not None:
            if self._made > self._spec.max_retries:
                raise error
            await self._sleep(self._wait(error))
        self._made += 1
        return _Attempt(self)

    def _wait(self, error: TransientModelError) -> float:
        spec = self._spec
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), spec.retry_max_wait)
        return float(min(spec.retry_backoff * 2 ** (self._made - 1), spec.retry_max_wait))


class _Attempt:
    """One attempt: a TransientModelError leaving it is kept for the next one; anything else goes on."""

    __slots__ = ("_attempts",)

    def __init__(self, attempts: Attempts) -> None:
        self._attempts = attempts

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _tb: TracebackType | None
    ) -> bool:
        if error is None:
            self._attempts._succeeded = True
            return False
        if isinstance(error, TransientModelError):
            self._attempts._error = error
            return True
        return False


async def complete(model: Model, request: ModelRequest, spec: ModelSpec) -> Completion:
    """The finished reply of a call nobody watches stream, retried like a streamed turn."""
    async for attempt in retrying(spec):
        with attempt, tracing.model_call(spec, request) as call:  # a span per attempt, as in a turn
            return call.done(await _final(model, request))
    raise AssertionError("unreachable: retrying() re-raises the last error")


async def _final(model: Model, request: ModelRequest) -> Completion:
    completion: Completion | None = None
    async for item in model.stream(request):
        if isinstance(item, Completion):
            completion = item
    if completion is None:
        raise ModelError(f"{model.label}: the stream ended without a Completion (an adapter bug)")
    return completion


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked to wait, from Retry-After in seconds or as an HTTP date; None if absent."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_detail(body: object) -> str:
    """The server's own words from an error body, whatever its shape (OpenAI, Anthropic, Ollama, vLLM).

    Scrubbed and capped: a server may echo the key it was sent, or send a whole HTML page.
    """
    body = _parsed(body)
    message: object = body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") or inner.get("detail") if isinstance(inner, dict) else inner
        message = message or body.get("message") or body.get("detail") or body
    return scrub(" ".join(str(message or "").split()), limit=500)


def _parsed(body: object) -> object:
    """A JSON error body as Python objects; bytes that are not JSON as text."""
    if not isinstance(body, bytes):
        return body
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


_WINDOW_WORDS = (
    re.compile(r"maximum context length is (\d+)"),  # OpenAI, vLLM
    re.compile(r"prompt is too long: \d+ tokens > (\d+)"),  # Anthropic
)


def context_overflow(body: object) -> tuple[bool, int | None]:
    """Whether an error body says the prompt exceeds the context window, and the window if it names it.

    Knows llama.cpp's `exceed_context_size_error` (with `n_ctx`), OpenAI's `context_length_exceeded`, and
    the words OpenAI, vLLM and Anthropic use. The SDKs hand over either the whole body or its `error`.
    """
    body = _parsed(body)
    inner = body.get("error", body) if isinstance(body, dict) else body
    if not isinstance(inner, dict):
        return False, None
    if inner.get("type") == "exceed_context_size_error":
        window = inner.get("n_ctx")
        return True, window if isinstance(window, int) and window > 0 else None
    message = str(inner.get("message") or "")
    for words in _WINDOW_WORDS:
        if found := words.search(message):
            return True, int(found.group(1))
    return inner.get("code") == "context_length_exceeded", None


def status_error(
    spec: ModelSpec,
    status: int,
    detail: str,
    *,
    retry_after: float | None = None,
    key: str | None = None,
    body: object = None,
) -> ModelError:
    """The Moot error for an HTTP failure status; `body` (the error body) tells a context overflow apart.

    The server's words are scrubbed (`key` and every remembered secret) when the error is made.
    """
    if key:
        detail = detail.replace(key, "***")
    label, url = spec.label, _url(spec)
    said = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    if status in (400, 413, 422):
        too_long, window = context_overflow(body)
        if too_long:
            told = (
                f"the server's window is {window} tokens" if window else "the server did not say its window"
            )
            return ContextTooLong(
                f"{label}: the prompt is longer than the model's context window ({said}); {told}: set the "
                "model's context_window to fit it, or shorten the task and persona texts",
                model=label,
                status=status,
                limit=window,
            )
    if status in (401, 403):
        return ModelAuthError(
            f"{label}: the server refused the key ({said}); check that {_key_source(spec)} holds a valid key "
            f"for {url}",
            model=label,
            status=status,
        )
    if status == 429:
        return TransientModelError(
            f"{label}: rate limited ({said}); a retry after a pause may help; if it persists, "
            "run fewer agents at once or raise the account's rate limit",
            model=label,
            status=status,
            retry_after=retry_after,
        )
    if status in (408, 409) or status >= 500:
        return TransientModelError(
            f"{label}: the server failed ({said}); a retry may help; if it persists, check the server {url}",
            model=label,
            status=status,
            retry_after=retry_after,
        )
    if status == 404:
        return ModelRequestError(
            f"{label}: not found ({said}); check the model name '{spec.name}' and the base_url {url}",
            model=label,
            status=status,
        )
    return ModelRequestError(
        f"{label}: the server rejected the request ({said}); check the model name and its settings "
        "(max_tokens, temperature)",
        model=label,
        status=status,
    )


def connection_error(
    spec: ModelSpec, error: BaseException, *, started: bool, timed_out: bool = False
) -> TransientModelError:
    """A timeout, a refused connection or a connection lost mid-reply; `started`: the reply had begun."""
    cause = error.__cause__ or error  # an SDK's wrapper hides the transport's more telling message
    detail = str(cause) or type(cause).__name__
    label, url = spec.label, _url(spec)
    if timed_out:
        where = "mid-reply" if started else "waiting for the reply"
        message = (
            f"{label}: nothing from {url} for {spec.timeout:g}s {where}; a retry may help; "
            "for a slow model raise its timeout"
        )
    elif started:
        message = f"{label}: the connection broke mid-reply ({detail}); a retry may help"
    else:
        message = (
            f"{label}: cannot reach {url} ({detail}); check that the server is running and base_url is right"
        )
    return TransientModelError(message, model=label)


def malformed_chunk(spec: ModelSpec, chunk: object) -> TransientModelError:
    """A stream event of the wrong shape (a list, a string where an object belongs): retried like a cut."""
    shown = chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else str(chunk)
    return TransientModelError(
        f"{spec.label}: the server sent a malformed chunk: {scrub(shown, limit=200)}; a retry may help; if "
        f"it persists, check that {_url(spec)} speaks the {spec.provider} protocol",
        model=spec.label,
    )


def broken_stream(spec: ModelSpec, detail: str = "") -> TransientModelError:
    """A stream that ended before the reply was complete, or that carried an error event."""
    said = f": {detail}" if detail else ""
    return TransientModelError(
        f"{spec.label}: the stream ended before the reply was complete{said}; a retry may help",
        model=spec.label,
    )


def _url(spec: ModelSpec) -> str:
    return spec.base_url or _DEFAULT_URL.get(spec.provider, spec.provider)


def _key_source(spec: ModelSpec) -> str:
    if spec.api_key is not None:
        return "the model's api_key"
    return f"the variable {spec.api_key_env or _DEFAULT_KEY_ENV.get(spec.provider, 'holding the key')}"
