"""Models for tests, in the manner of openai-agents' scripted model and pydantic-ai's FunctionModel.

`ScriptedModel` replays a fixed list of replies, failures and cut streams and complains about any call the
script did not expect; `FunctionModel` computes each reply from the request. Both record every request, so a
test can assert on what the engine sent as well as on what it did with the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

from moot.models import Completion, Model, ModelRequest, Usage, estimate_usage

__all__ = ["Cut", "FunctionModel", "ScriptedModel", "Step"]


@dataclass(frozen=True, slots=True)
class Cut:
    """A stream that breaks mid-way: `text_before` arrives as deltas, then `error` is raised."""

    text_before: str
    error: Exception


Step = str | Exception | Cut
"""One scripted call: a reply, an error raised before any delta, or a cut stream."""

Reply = Callable[[ModelRequest], str | Awaitable[str]]


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class ScriptedModel(Model):
    """Answers each call with the next scripted step; a call past the end of the script fails the test."""

    def __init__(
        self,
        steps: Iterable[Step],
        *,
        label: str = "scripted",
        chunk: int = 16,
        usage: Usage | None = None,
    ) -> None:
        if chunk < 1:
            raise ValueError("chunk must be at least 1 character")
        self.label = label
        self.steps: list[Step] = list(steps)
        self.requests: list[ModelRequest] = []
        self.chunk = chunk
        self.usage = usage

    def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
        """Takes the step when called, not when iterated, so concurrent turns get steps in call order."""
        self.requests.append(request)
        if not self.steps:
            last = request.messages[-1].content[:80] if request.messages else ""
            raise AssertionError(
                f"unexpected call #{len(self.requests)} to {self.label}: the script has no step left "
                f"(last message: {last!r})"
            )
        return self._play(request, self.steps.pop(0))

    async def _play(self, request: ModelRequest, step: Step) -> AsyncIterator[str | Completion]:
        if isinstance(step, Exception):
            raise step
        text = step.text_before if isinstance(step, Cut) else step
        for piece in _chunks(text, self.chunk):
            yield piece
        if isinstance(step, Cut):
            raise step.error
        yield Completion(text=text, usage=self.usage or estimate_usage(request, text), model=self.label)

    def assert_all_used(self) -> None:
        """Fails when the engine made fewer calls than the script expected."""
        if self.steps:
            raise AssertionError(
                f"{self.label}: {len(self.steps)} scripted step(s) were never used "
                f"after {len(self.requests)} call(s); next unused: {self.steps[0]!r}"
            )


class FunctionModel(Model):
    """Answers from `fn(request)`, plain or async, streamed in `chunk`-character pieces."""

    def __init__(
        self,
        fn: Reply,
        *,
        label: str = "function",
        chunk: int = 16,
        delay: float = 0.0,
        usage: Usage | None = None,
    ) -> None:
        if chunk < 1:
            raise ValueError("chunk must be at least 1 character")
        self.label = label
        self.fn = fn
        self.chunk = chunk
        self.delay = delay
        self.usage = usage
        self.requests: list[ModelRequest] = []

    def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
        """Records the request when called, as ScriptedModel does; `fn` runs when the stream is read."""
        self.requests.append(request)
        return self._play(request)

    async def _play(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
        result = self.fn(request)
        text = result if isinstance(result, str) else await result
        for index, piece in enumerate(_chunks(text, self.chunk)):
            if index and self.delay > 0:
                await asyncio.sleep(self.delay)
            yield piece
        yield Completion(text=text, usage=self.usage or estimate_usage(request, text), model=self.label)
