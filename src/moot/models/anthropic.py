"""The adapter for Anthropic's Messages API, on the official `anthropic` SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Literal

from moot.models import Completion, Message, Model, ModelRequest, Usage, estimate_usage
from moot.models._http import raise_refusal, sdk_http_client
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
    from anthropic import AsyncAnthropic
    from anthropic.types import MessageParam

__all__ = ["AnthropicModel", "alternating_turns"]

# One vocabulary for the engine whatever the provider: OpenAI's words for why a reply stopped.
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
}
_OPENING = "Begin."  # the user turn Anthropic requires before a conversation that opens with the assistant
# Input Anthropic reads from its prompt cache is counted apart from `input_tokens`, but read all the same.
_CACHED_INPUT = ("cache_read_input_tokens", "cache_creation_input_tokens")


def alternating_turns(messages: tuple[Message, ...]) -> list[MessageParam]:
    """User and assistant turns alternating from a user turn, as Anthropic requires.

    Neighbouring messages of one role are joined with a blank line; a conversation that is empty or opens
    with the assistant gets a short user turn first.
    """
    merged: list[tuple[Literal["user", "assistant"], list[str]]] = []
    for message in messages:
        if merged and merged[-1][0] == message.role:
            merged[-1][1].append(message.content)
        else:
            merged.append((message.role, [message.content]))
    if not merged or merged[0][0] != "user":
        merged.insert(0, ("user", [_OPENING]))
    turns: list[MessageParam] = []
    for role, texts in merged:
        content = "\n\n".join(texts)
        turns.append(
            {"role": "user", "content": content}
            if role == "user"
            else {"role": "assistant", "content": content}
        )
    return turns


def _input_tokens(usage: object) -> int | None:
    """Every input token of a usage object, cached ones included; None where it reports none."""
    counted = getattr(usage, "input_tokens", None)
    if counted is None:
        return None
    if counted.__class__ is not int:
        raise TypeError("input_tokens is a count")
    for name in _CACHED_INPUT:
        cached = getattr(usage, name, None)
        if cached.__class__ is int:
            counted += cached
    return int(counted)


class _Reading:
    """What a stream has told so far besides its text; `read` takes one event and returns its text, if any.

    The SDK builds events without validating them, so a wrong shape shows up here as an AttributeError or
    a TypeError, which the caller turns into a malformed-chunk error.
    """

    __slots__ = ("finished", "input_tokens", "model", "output_tokens", "stop_reason")

    def __init__(self) -> None:
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.stop_reason: str | None = None
        self.model = ""
        self.finished = False

    def read(self, event: object) -> str | None:
        kind = getattr(event, "type", None)
        if kind == "content_block_delta":
            delta = event.delta  # type: ignore[attr-defined]
            if delta.type == "text_delta":
                text = delta.text
                if text.__class__ is not str:
                    raise TypeError("text is a string")
                return str(text)
        elif kind == "message_start":
            message = event.message  # type: ignore[attr-defined]
            model = message.model
            if model.__class__ is not str:
                raise TypeError("model is a string")
            self.model = model
            self.input_tokens = _input_tokens(getattr(message, "usage", None))  # absent from some servers
        elif kind == "message_delta":
            stop_reason = event.delta.stop_reason  # type: ignore[attr-defined]
            if stop_reason is not None and stop_reason.__class__ is not str:
                raise TypeError("stop_reason is a string")
            self.stop_reason = stop_reason
            usage = getattr(event, "usage", None)
            output = getattr(usage, "output_tokens", None)
            if output is not None and output.__class__ is not int:
                raise TypeError("output_tokens is a count")
            self.output_tokens = output
            counted = _input_tokens(usage)  # some servers count the input only at the end
            if counted:
                self.input_tokens = counted
        elif kind == "message_stop":
            self.finished = True
        elif kind is None:
            raise TypeError("an event has a type")
        return None


class AnthropicModel(Model):
    """Streams Messages API events, with the SDK's retries off: Moot retries itself."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.label = spec.label
        self._client: AsyncAnthropic | None = None
        self._key: str | None = None

    def _connect(self) -> AsyncAnthropic:
        """The client, made on first use: a missing key surfaces from stream() as ModelUnavailable."""
        if self._client is None:
            import anthropic
            from anthropic import AsyncAnthropic

            self._key = self.spec.resolve_api_key()
            remember_secret(self._key)  # scrubbed from every text, should a server echo it
            self._client = AsyncAnthropic(
                api_key=self._key,
                base_url=self.spec.base_url,
                timeout=self.spec.timeout,
                max_retries=0,
                http_client=sdk_http_client(self.spec, anthropic.DefaultAsyncHttpxClient),
            )
        return self._client

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
        import anthropic
        import httpx2  # the SDK's transport: it lets errors from a stream already under way through unwrapped

        client, spec = self._connect(), self.spec
        temperature = request.temperature if request.temperature is not None else spec.temperature
        limit = (  # the model's cap bounds speeches; a structured answer has its own limit
            request.max_tokens
            if request.json_output
            else min(request.max_tokens, spec.max_tokens or request.max_tokens)
        )
        parts: list[str] = []
        reading = _Reading()
        started = False
        try:
            response = await client.messages.create(
                model=spec.name,
                max_tokens=limit,
                system=request.system or anthropic.omit,
                messages=alternating_turns(request.messages),
                # the SDK has no sampling parameters any more; the API and compatible servers read it
                extra_body=None if temperature is None else {"temperature": temperature},
                stream=True,
            )
            started = True
            async with response:
                async for event in response:
                    try:
                        text = reading.read(event)
                    except (AttributeError, TypeError, KeyError, IndexError) as exc:
                        raise malformed_chunk(spec, event) from exc
                    if text:
                        parts.append(text)
                        yield text
        except anthropic.APIStatusError as exc:
            if exc.status_code < 400:  # an error event inside a stream that began well, e.g. overloaded
                raise broken_stream(spec, error_detail(exc.body)) from exc
            raise status_error(
                spec,
                exc.status_code,
                error_detail(exc.body),
                retry_after=retry_after(exc.response.headers),
                key=self._key,
                body=exc.body,
            ) from exc
        except (anthropic.APITimeoutError, httpx2.TimeoutException) as exc:
            raise connection_error(spec, exc, started=started, timed_out=True) from exc
        except (anthropic.APIConnectionError, httpx2.RequestError) as exc:
            raise_refusal(exc)
            raise connection_error(spec, exc, started=started) from exc
        if not reading.finished:
            raise broken_stream(spec)
        text = "".join(parts)
        input_tokens, output_tokens, stop_reason = (
            reading.input_tokens,
            reading.output_tokens,
            reading.stop_reason,
        )
        if output_tokens is not None and output_tokens >= limit and stop_reason in (None, "end_turn"):
            stop_reason = "max_tokens"  # a proxy (litellm) that says end_turn for a reply cut at the limit
        if input_tokens == 0 and text:  # the same proxy reports no input at all: counted here instead
            input_tokens = estimate_usage(request, text).input_tokens
        yield Completion(
            text=text,
            usage=Usage(
                input_tokens=input_tokens, output_tokens=output_tokens, estimated=reading.input_tokens == 0
            )
            if input_tokens is not None and output_tokens is not None
            else estimate_usage(request, text),
            finish_reason=_FINISH.get(stop_reason or "end_turn", stop_reason or "stop"),
            model=reading.model or spec.name,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
