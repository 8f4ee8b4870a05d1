"""One small streaming interface every model speaks, whatever the provider behind it.

`Model.stream(request)` yields text deltas (`str`) and ends with exactly one `Completion`. Deltas are plain
strings, not objects: the streaming path is hot, and a string per network read is all a watcher needs.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from moot.spec import ModelSpec

__all__ = [
    "Completion",
    "Message",
    "Model",
    "ModelRequest",
    "TurnContext",
    "Usage",
    "build_model",
    "estimate_tokens",
    "estimate_usage",
]


class Usage(BaseModel):
    """Tokens of one call or a sum of calls; `estimated` when a provider reported none.

    `cost_usd` is what the tokens cost, from the model's price (0 for local and simulated models).
    """

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            estimated=self.estimated or other.estimated,
            cost_usd=round(self.cost_usd + other.cost_usd, 10),
        )


@dataclass(frozen=True, slots=True)
class Message:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class Completion:
    """The end of a stream: the whole text, the provider's usage and why it stopped."""

    text: str
    usage: Usage
    finish_reason: str = "stop"
    model: str = ""


@dataclass(frozen=True, slots=True)
class TurnContext:
    """What the turn is for, in structured form. Real models read the prompt; the simulated one reads this."""

    kind: str
    speaker: str
    language: str = "en"
    task: str = ""
    persona: str = ""
    thinking_style: str = ""
    speaking_style: str = ""
    decision_framework: str = ""
    round: int = 0
    max_rounds: int = 0
    earlier: tuple[tuple[str, str], ...] = ()  # (speaker, text) of visible speeches, oldest first
    interventions: tuple[str, ...] = ()  # what people said that this turn should address
    members: tuple[str, ...] = ()
    ask: str = ""  # the prompt a protocol chose for the turn (council_rank, delphi_estimate, ...)
    options: tuple[str, ...] = ()  # what the turn chooses among: answer labels to rank, speakers to name
    side: str = ""  # debate: the speaker's side


@dataclass(frozen=True, slots=True)
class ModelRequest:
    system: str
    messages: tuple[Message, ...]
    max_tokens: int = 1024
    temperature: float | None = None
    json_output: bool = False  # ask for a JSON object where the provider supports it
    # The JSON schema of the object, for servers that enforce one (json_schema response format)
    schema: Mapping[str, object] | None = field(default=None, compare=False)
    schema_name: str = "answer"
    context: TurnContext | None = field(default=None, compare=False)


class Model(ABC):
    """A model that streams. Adapters raise `moot.exceptions.ModelError` subclasses, never SDK errors."""

    label: str = "model"

    @abstractmethod
    def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
        """Yields text deltas, then one Completion; raises TransientModelError for what a retry may mend."""

    async def aclose(self) -> None:  # noqa: B027 - most models hold nothing to close
        """Releases connections; the engine calls it when the run ends."""

    def structured_output(self) -> bool:
        """Whether the server can be held to a JSON answer by a response format (a schema, or at least a JSON
        object): then a structured part that a free-text reply lacks is worth asking for on its own."""
        return False

    async def server_window(self) -> int | None:
        """The context window the model's server states, where it states one; None when it does not say."""
        return None


_CJK = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef]")


def estimate_tokens(text: str) -> int:
    """A fallback count where a provider reports no usage: a CJK character ~1 token, else ~4 chars."""
    if not text:
        return 0
    cjk = len(_CJK.findall(text))
    return cjk + max(1, (len(text) - cjk + 3) // 4)


def estimate_usage(request: ModelRequest, text: str) -> Usage:
    """Usage counted locally, for a server that reported none (L7's fallback)."""
    prompt = "\n".join([request.system, *(m.content for m in request.messages)])
    return Usage(input_tokens=estimate_tokens(prompt), output_tokens=estimate_tokens(text), estimated=True)


def build_model(spec: ModelSpec) -> Model:
    """The adapter for a model declaration; imports only the SDK that is needed."""
    from moot._extras import missing_for_model
    from moot.exceptions import ModelUnavailable

    if problem := missing_for_model(spec):  # an SDK from an extra that is not installed
        raise ModelUnavailable(problem, model=spec.label)
    if spec.provider == "simulated":
        from moot.models.simulated import SimulatedModel

        return SimulatedModel(spec)
    if spec.provider == "llamacpp":
        from moot.models.llamacpp import LlamaCppModel

        return LlamaCppModel(spec)
    if spec.provider == "anthropic":
        from moot.models.anthropic import AnthropicModel

        return AnthropicModel(spec)
    if spec.transport == "sdk":
        from moot.models.openai import OpenAISDKModel

        return OpenAISDKModel(spec)
    from moot.models.openai import OpenAILeanModel

    return OpenAILeanModel(spec)
