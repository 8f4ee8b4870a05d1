"""The adapter for Anthropic's Messages API, on the official `anthropic` SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Literal

from moot.models import Completion, Message, Model, ModelRequest, Usage, estimate_usage
from moot.models._http import ssl_context
from moot.models.retry import broken_stream, connection_error, error_detail, retry_after, status_error
from moot.spec import ModelSpec

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import MessageParam

__all__ = ["AnthropicModel", "alternating_turns"]

# One vocabulary for the engine whatever the provider: OpenAI's words for why a reply stopped.
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
_OPENING = "Begin."  # the user turn Anthropic requires before a conversation that opens with the assistant


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
            self._client = AsyncAnthropic(
                api_key=self._key,
                base_url=self.spec.base_url,
                timeout=self.spec.timeout,
                max_retries=0,
                http_client=anthropic.DefaultAsyncHttpxClient(verify=ssl_context()),
            )
        return self._client

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
        import anthropic
        import httpx2  # the SDK's transport: it lets errors from a stream already under way through unwrapped

        client, spec = self._connect(), self.spec
        parts: list[str] = []
        input_tokens: int | None = None
        output_tokens: int | None = None
        stop_reason: str | None = None
        model = ""
        finished = False
        started = False
        try:
            response = await client.messages.create(
                model=spec.name,
                max_tokens=min(request.max_tokens, spec.max_tokens or request.max_tokens),
                system=request.system or anthropic.omit,
                messages=alternating_turns(request.messages),
                stream=True,
            )
            started = True
            async with response:
                async for event in response:
                    if event.type == "content_block_delta":
                        if event.delta.type == "text_delta":
                            parts.append(event.delta.text)
                            yield event.delta.text
                    elif event.type == "message_start":
                        model = event.message.model
                        usage = getattr(event.message, "usage", None)  # absent from some compatible servers
                        input_tokens = usage.input_tokens if usage is not None else None
                    elif event.type == "message_delta":
                        stop_reason = event.delta.stop_reason
                        delta_usage = getattr(event, "usage", None)
                        output_tokens = delta_usage.output_tokens if delta_usage is not None else None
                    elif event.type == "message_stop":
                        finished = True
        except anthropic.APIStatusError as exc:
            if exc.status_code < 400:  # an error event inside a stream that began well, e.g. overloaded
                raise broken_stream(spec, error_detail(exc.body)) from exc
            raise status_error(
                spec,
                exc.status_code,
                error_detail(exc.body),
                retry_after=retry_after(exc.response.headers),
                key=self._key,
            ) from exc
        except (anthropic.APITimeoutError, httpx2.TimeoutException) as exc:
            raise connection_error(spec, exc, started=started, timed_out=True) from exc
        except (anthropic.APIConnectionError, httpx2.RequestError) as exc:
            raise connection_error(spec, exc, started=started) from exc
        if not finished:
            raise broken_stream(spec)
        text = "".join(parts)
        yield Completion(
            text=text,
            usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens)
            if input_tokens is not None and output_tokens is not None
            else estimate_usage(request, text),
            finish_reason=_FINISH.get(stop_reason or "end_turn", stop_reason or "stop"),
            model=model or spec.name,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
