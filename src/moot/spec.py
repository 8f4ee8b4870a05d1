"""Rooms, agents and models as data: what a room file holds, validated with errors a person can act on."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from moot.exceptions import ConfigError, ModelUnavailable

Provider = Literal["openai", "anthropic", "simulated"]
ProtocolName = Literal["sequential", "parallel", "board"]
Language = Literal["en", "zh"]
Role = Literal["member", "moderator"]

PROVIDERS: tuple[str, ...] = ("openai", "anthropic", "simulated")
DEFAULT_MODEL: dict[str, str] = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-sonnet-4-5",
    "simulated": "simulated",
}
# Context windows we assume when a model declares none; history is compressed to fit (B10).
DEFAULT_CONTEXT_WINDOW: dict[str, int] = {"openai": 128_000, "anthropic": 200_000, "simulated": 32_000}
PALETTE: tuple[str, ...] = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4",
    "#42d4f4", "#f032e6", "#9a6324", "#469990", "#808000",
)  # fmt: skip


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ModelSpec(_Spec):
    """One model on one provider, declared once and shared by any number of agents (L3)."""

    provider: Provider
    model: str | None = Field(None, description="Model name; the provider's default model when absent.")
    base_url: str | None = Field(None, description="Server URL, e.g. http://127.0.0.1:11434/v1 for Ollama.")
    api_key_env: str | None = Field(None, description="Name of the environment variable holding the key.")
    api_key: SecretStr | None = Field(None, description="The key itself; fine for local servers only.")
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0, le=200_000, description="Most tokens in one reply.")
    context_window: int | None = Field(None, gt=256, description="Tokens the model reads at most.")
    timeout: float = Field(120.0, gt=0, description="Seconds to wait for a reply to start or continue.")
    max_retries: int = Field(4, ge=0, le=20, description="Retries after transient failures.")
    retry_backoff: float = Field(1.0, ge=0, description="First wait before a retry, doubled each time.")
    retry_max_wait: float = Field(30.0, ge=0, description="Longest wait before one retry.")
    transport: Literal["lean", "sdk"] = Field(
        "lean", description="openai only: 'lean' streams with httpx+orjson, 'sdk' uses the official SDK."
    )
    stored_provider: str | None = Field(
        None,
        description="HTTP service only: the stored provider whose encrypted key and URL this model uses; "
        "filled in memory when the room runs, never written into the room.",
    )
    seed: int | None = Field(None, description="simulated only: the same seed gives the same words.")
    tokens_per_second: float | None = Field(None, ge=0, description="simulated only: 0 streams at once.")

    @property
    def name(self) -> str:
        """The model's name, or its provider's default model (L2)."""
        return self.model or DEFAULT_MODEL[self.provider]

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.name}"

    @property
    def window(self) -> int:
        return self.context_window or DEFAULT_CONTEXT_WINDOW[self.provider]

    def resolve_api_key(self) -> str | None:
        """The key to send, from the file or the named environment variable; None where none is needed."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ModelUnavailable(
                    f"{self.label}: environment variable {self.api_key_env} is not set; "
                    f"export {self.api_key_env}=<your key>, or give api_key for a local server",
                    model=self.label,
                )
            return value
        if self.provider == "simulated":
            return None
        default_env = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}[self.provider]
        value = os.environ.get(default_env)
        if value:
            return value
        if self.base_url:  # local servers (Ollama, vLLM, llama.cpp) usually take any key
            return "not-needed"
        raise ModelUnavailable(
            f"{self.label}: no API key; set {default_env}, or give api_key_env naming the variable that holds it",
            model=self.label,
        )


ModelRef = Annotated[
    str | ModelSpec,
    Field(description="A name from `models`, 'provider:model', 'simulated', or a model mapping."),
]


class AgentPersona(_Spec):
    """Who an agent is and how it thinks and speaks (B2): shared by room agents and the service's templates."""

    role: Role = "member"
    persona: str = Field("", max_length=4000)
    system_prompt: str | None = Field(None, max_length=20_000, description="Replaces the generated opening.")
    thinking_style: str = Field("", max_length=2000)
    speaking_style: str = Field("", max_length=2000)
    decision_framework: str = Field("", max_length=2000)
    colour: str | None = Field(None, alias="color", max_length=32)
    avatar: str | None = Field(None, max_length=500)
    active: bool = True


class AgentSpec(AgentPersona):
    """One participant: its persona, its name, and which model speaks for it (L2, B2)."""

    name: str = Field(min_length=1, max_length=64)
    model: ModelRef | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        value = value.strip()
        if not value or any(ch in value for ch in "\n\r\t[]"):
            raise ValueError("a name is one line of text without brackets")
        return value


class Limits(_Spec):
    """Bounds on a run; every one has a sensible default."""

    max_total_tokens: int | None = Field(None, gt=0, description="Stop and conclude past this many tokens.")
    reply_tokens: int = Field(1024, gt=0, le=200_000, description="Most tokens in one reply by default.")
    turn_timeout: float = Field(600.0, gt=0, description="Seconds one turn may take, retries included.")
    history_share: float = Field(
        0.6, gt=0.05, lt=1, description="Share of a model's context window the history may fill (B10)."
    )
    fallback_models: bool | None = Field(
        None,
        description="Use another agent's model when one's is unavailable (B13); None: in board meetings.",
    )
    conclusion_retries: int = Field(1, ge=0, le=3, description="Asks again when the conclusion is not valid.")


class RoomSpec(_Spec):
    """A discussion to run: the task, the agents in turn order, the protocol and its limits (L1, B1)."""

    task: str = Field(min_length=1, max_length=20_000)
    title: str | None = Field(None, max_length=200)
    protocol: ProtocolName = "sequential"
    max_rounds: int = Field(3, ge=1, le=50)
    language: Language = "en"
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    default_model: ModelRef | None = None
    agents: list[AgentSpec] = Field(min_length=1, max_length=32)
    limits: Limits = Field(default_factory=Limits)

    @model_validator(mode="after")
    def _check_agents(self) -> RoomSpec:
        seen: set[str] = set()
        for index, agent in enumerate(self.agents):
            if agent.name.casefold() in seen:
                raise ValueError(f"agents[{index}].name: '{agent.name}' is used twice; names must be unique")
            seen.add(agent.name.casefold())
            if agent.name.casefold() == "user":
                raise ValueError(f"agents[{index}].name: 'user' is reserved for people stepping in")
            if agent.colour is None:
                agent.colour = PALETTE[index % len(PALETTE)]
            self.model_for(agent, where=f"agents[{index}].model")
        moderators = [a.name for a in self.agents if a.role == "moderator"]
        if len(moderators) > 1:
            raise ValueError(
                f"agents: only one agent may have role: moderator (found {', '.join(moderators)})"
            )
        return self

    def agent(self, name: str) -> AgentSpec:
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(name)

    def model_for(self, agent: AgentSpec, *, where: str = "model") -> ModelSpec:
        """The concrete model an agent speaks with: its own, else the room default, else the only one."""
        ref = agent.model or self.default_model
        if ref is None:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise ValueError(
                f"{where}: agent '{agent.name}' names no model and the room has no default_model; "
                f"give model: one of {sorted(self.models) or ['simulated', 'openai:MODEL', 'anthropic:MODEL']}"
            )
        return self._resolve(ref, where)

    def _resolve(self, ref: str | ModelSpec, where: str) -> ModelSpec:
        if isinstance(ref, ModelSpec):
            return ref
        if ref in self.models:
            return self.models[ref]
        provider, _, name = ref.partition(":")
        if provider in PROVIDERS:
            return ModelSpec.model_validate({"provider": provider, "model": name or None})
        known = sorted(self.models)
        raise ValueError(
            f"{where}: unknown model '{ref}'; use one of the room's models {known}, "
            f"or 'provider:model' with provider one of {list(PROVIDERS)}"
        )

    @property
    def moderator(self) -> AgentSpec | None:
        """The declared moderator if active, else the first active agent (B3); None when none is active."""
        for agent in self.agents:
            if agent.role == "moderator" and agent.active:
                return agent
        return next((a for a in self.agents if a.active), None)

    @property
    def declared_moderator_usable(self) -> bool:
        return any(a.role == "moderator" and a.active for a in self.agents)

    @property
    def has_moderator(self) -> bool:
        return any(a.role == "moderator" for a in self.agents)

    @property
    def members(self) -> list[AgentSpec]:
        """Active speakers in turn order; in a board meeting, everyone but the moderator."""
        moderator = self.moderator if (self.protocol == "board" or self.has_moderator) else None
        return [a for a in self.agents if a.active and a is not moderator]

    @classmethod
    def from_data(cls, data: Any, *, source: str = "room") -> RoomSpec:
        """Validates loaded data; a ConfigError names the source, the field and what is allowed."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a room is a mapping with at least task and agents")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, source)) from None


def load_room(path: str | os.PathLike[str]) -> RoomSpec:
    """Reads a room file (YAML, or JSON by its .json suffix) into a validated RoomSpec."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the room file ({exc.strerror or exc})") from None
    try:
        data = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"{file}: not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    return RoomSpec.from_data(data, source=str(file))


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: `file: agents[1].model: what is wrong and what is allowed`."""
    lines = []
    errors = exc.errors(include_url=False)
    for error in errors:
        if error["type"] == "string_type" and error["loc"][-1] == "str" and len(errors) > 1:
            continue  # the mapping branch of `str | ModelSpec` explains the problem better
        path = ""
        for part in error["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif part in ("str", "ModelSpec") or "[" in str(part):
                continue  # union branch names are noise to a person
            else:
                path += f".{part}" if path else str(part)
        message = error["msg"].removeprefix("Value error, ")
        if message.startswith(("agents", "models", "default_model")):
            lines.append(f"{source}: {message}")
        else:
            lines.append(f"{source}: {path or 'room'}: {message}")
    return "\n".join(dict.fromkeys(lines))
