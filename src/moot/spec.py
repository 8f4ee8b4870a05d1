"""Rooms, agents and models as data: what a room file holds, validated with errors a person can act on."""

from __future__ import annotations

import difflib
import json
import os
import re
import types
import typing
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from moot.exceptions import ConfigError, ModelUnavailable

Provider = Literal["openai", "anthropic", "simulated", "llamacpp"]
# The protocols a room file may name (`moot.protocols` holds one file for each).
ProtocolName = Literal["sequential", "parallel", "board", "council", "selector", "delphi", "debate"]
Language = Literal["en", "zh"]
Role = Literal["member", "moderator"]

PROVIDERS: tuple[str, ...] = ("openai", "anthropic", "simulated", "llamacpp")
DEFAULT_MODEL: dict[str, str] = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-sonnet-4-5",
    "simulated": "simulated",
    "llamacpp": "local",
}
# Context windows we assume when a model declares none; history is compressed to fit (B10).
DEFAULT_CONTEXT_WINDOW: dict[str, int] = {
    "openai": 128_000,
    "anthropic": 200_000,
    "simulated": 32_000,
    "llamacpp": 4096,  # per slot: what Moot asks llama.cpp's server for when it starts one
}
PALETTE: tuple[str, ...] = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4",
    "#42d4f4", "#f032e6", "#9a6324", "#469990", "#808000",
)  # fmt: skip
# A room file bigger than this is not a room file: refused before it is read, let alone parsed.
MAX_ROOM_FILE_BYTES = 4 * 1024 * 1024
# Colours are `#rgb`, `#rrggbb` or one of these names, and always stored as `#rrggbb`, so the terminal, the
# web and exports draw an agent alike (a terminal-only name such as `bright_red` means nothing to a browser).
NAMED_COLOURS: dict[str, str] = {
    "black": "#000000", "white": "#ffffff", "gray": "#808080", "grey": "#808080", "silver": "#c0c0c0",
    "red": "#ff0000", "maroon": "#800000", "orange": "#ffa500", "yellow": "#ffff00", "olive": "#808000",
    "lime": "#00ff00", "green": "#008000", "teal": "#008080", "aqua": "#00ffff", "cyan": "#00ffff",
    "blue": "#0000ff", "navy": "#000080", "purple": "#800080", "fuchsia": "#ff00ff", "magenta": "#ff00ff",
    "pink": "#ffc0cb", "brown": "#a52a2a", "gold": "#ffd700",
}  # fmt: skip
MAX_AVATAR_TEXT = 16
_HEX_COLOUR = re.compile(r"#(?:[0-9a-f]{3}|[0-9a-f]{6})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # characters a key never holds: they would end a header early


def http_url(value: str, example: str) -> str:
    """An http(s) URL with a host, or a ValueError that shows the expected shape with `example`."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host or any(c.isspace() for c in value):
        raise ValueError(
            f"'{value[:100]}' is not an http:// or https:// URL with a host; "
            f"write the whole address, e.g. {example}"
        )
    return value


def normalise_colour(value: str) -> str:
    """`#rgb`, `#rrggbb` or a colour name, as `#rrggbb`; a ValueError says what is allowed."""
    colour = value.strip().lower()
    colour = NAMED_COLOURS.get(colour, colour)
    if not _HEX_COLOUR.fullmatch(colour):
        raise ValueError(
            f"'{value[:40]}' is not a colour; use #rrggbb or #rgb (e.g. #e6194b), "
            f"or one of {', '.join(sorted(set(NAMED_COLOURS)))}"
        )
    if len(colour) == 4:
        colour = "#" + "".join(ch * 2 for ch in colour[1:])
    return colour


def check_avatar(value: str) -> str:
    """An emoji or a short text (initials), or an http(s) image URL; anything else is a ValueError."""
    avatar = value.strip()
    if "://" in avatar or avatar.lower().startswith(("data:", "javascript:")):
        return http_url(avatar, "https://example.com/alice.png")
    if len(avatar) > MAX_AVATAR_TEXT or any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in avatar):
        raise ValueError(
            f"{avatar[:40]!r} is not an avatar; use an emoji or a short text of at most "
            f"{MAX_AVATAR_TEXT} characters on one line (e.g. 🦉 or AB), or an http(s):// image URL"
        )
    return avatar


def _is_number(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _is_number(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_number(arg) for arg in typing.get_args(annotation))
    return annotation in (int, float)


def refuse_bool_number(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """Raises ValueError when a number field holds true or false, which pydantic would take as 1 or 0
    (`temperature: false` is a mistake, not a temperature of 0)."""
    field = model.model_fields.get(info.field_name or "")
    if isinstance(value, bool) and field is not None and _is_number(field.annotation):
        raise ValueError(f"give a number, not {str(value).lower()}")
    return value


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool_number(cls, value, info)


class Price(_Spec):
    """US dollars per million tokens, read and written."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)


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
        "lean",
        description="openai only: 'lean' streams on Moot's own reader with orjson, 'sdk' uses the official SDK.",
    )
    stored_provider: str | None = Field(
        None,
        description="HTTP service only: the stored provider whose encrypted key and URL this model uses; "
        "filled in memory when the room runs, never written into the room.",
    )
    price: Price | None = Field(
        None,
        description="What the model costs, for a model the price table does not know; 0 for local models.",
    )
    seed: int | None = Field(None, description="simulated only: the same seed gives the same words.")
    tokens_per_second: float | None = Field(None, ge=0, description="simulated only: 0 streams at once.")
    model_path: str | None = Field(
        None,
        max_length=4096,
        description="llamacpp only: a GGUF file, by path or by a name `moot models` lists.",
    )
    slots: int | None = Field(
        None, ge=1, le=64, description="llamacpp only: replies the server makes at once (parallel speakers)."
    )
    threads: int | None = Field(None, ge=1, le=256, description="llamacpp only: CPU threads for the model.")
    # Never read from a room: the service sets it, in memory, on the models of the rooms it runs.
    _refuses_private_addresses: bool = PrivateAttr(False)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value.strip(), "http://127.0.0.1:11434/v1")

    @model_validator(mode="after")
    def _local_fields(self) -> ModelSpec:
        if self.provider == "llamacpp":
            if not self.model_path:
                raise ValueError(
                    "provider llamacpp needs model_path: a GGUF file (`moot models` lists those it finds)"
                )
            if self.base_url is not None:
                raise ValueError("provider llamacpp starts its own server: give model_path, not base_url")
        else:
            given = [f for f in ("model_path", "slots", "threads") if getattr(self, f) is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: only for provider llamacpp (a local GGUF model)")
        return self

    @property
    def name(self) -> str:
        """The model's name, or its provider's default model (L2); a local model's file name."""
        if self.model:
            return self.model
        if self.provider == "llamacpp" and self.model_path:
            return Path(self.model_path).name.removesuffix(".gguf")
        return DEFAULT_MODEL[self.provider]

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.name}"

    @property
    def refuses_private_addresses(self) -> bool:
        """Whether this model's connections refuse private, loopback and link-local addresses."""
        return self._refuses_private_addresses

    def refuse_private_addresses(self) -> None:
        """Makes every connection for this model refuse private addresses, checked as each socket opens.

        The service calls it with MOOT_BLOCK_PRIVATE_URLS on; there is no way back for this object.
        """
        self._refuses_private_addresses = True

    @property
    def window(self) -> int:
        return self.context_window or DEFAULT_CONTEXT_WINDOW[self.provider]

    def resolve_api_key(self) -> str | None:
        """The key to send, from the file or the named environment variable; None where none is needed."""
        if self.api_key is not None:
            return self._one_line(self.api_key.get_secret_value(), "api_key")
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ModelUnavailable(
                    f"{self.label}: environment variable {self.api_key_env} is not set; "
                    f"export {self.api_key_env}=<your key>, or give api_key for a local server",
                    model=self.label,
                )
            return self._one_line(value, self.api_key_env)
        if self.provider in ("simulated", "llamacpp"):
            return None
        default_env = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}[self.provider]
        value = os.environ.get(default_env)
        if value:
            return self._one_line(value, default_env)
        if self.base_url:  # local servers (Ollama, vLLM, llama.cpp) usually take any key
            return "not-needed"
        raise ModelUnavailable(
            f"{self.label}: no API key; set {default_env}, or give api_key_env naming the variable that holds it",
            model=self.label,
        )

    def _one_line(self, key: str, source: str) -> str:
        """`key` without surrounding blanks; a line break or other control character inside it (which would
        end a request header early) is refused, naming where the key came from and never the key."""
        key = key.strip()
        if _CONTROL.search(key):
            raise ModelUnavailable(
                f"{self.label}: the key in {source} holds a line break or another control character; a key "
                "is one line of printable characters: check how it was copied",
                model=self.label,
            )
        return key


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
    colour: str | None = Field(
        None, alias="color", max_length=32, description="#rrggbb, #rgb or a colour name such as teal."
    )
    avatar: str | None = Field(
        None, max_length=500, description="An emoji or a short text (at most 16 characters), or an image URL."
    )
    active: bool = True

    @field_validator("colour")
    @classmethod
    def _colour(cls, value: str | None) -> str | None:
        return None if value is None else normalise_colour(value)

    @field_validator("avatar")
    @classmethod
    def _avatar(cls, value: str | None) -> str | None:
        return (check_avatar(value) or None) if value is not None else None


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
    structured_tokens: int = Field(
        1024,
        gt=0,
        le=200_000,
        description="Most tokens in a structured answer (the conclusion): its own limit, not a speech's, "
        "since a JSON object cut short is no answer at all.",
    )
    turn_timeout: float = Field(600.0, gt=0, description="Seconds one turn may take, retries included.")
    history_share: float = Field(
        0.6, gt=0.05, lt=1, description="Share of a model's context window the history may fill (B10)."
    )
    fallback_models: bool | None = Field(
        None,
        description="Use another agent's model when one's is unavailable (B13); None: in board meetings.",
    )
    conclusion_retries: int = Field(1, ge=0, le=3, description="Asks again when the conclusion is not valid.")
    fallback_to_simulated: bool = Field(
        False,
        description="Let the offline simulated model stand in when no real model answers (B13); "
        "off, a real model is replaced only by another real one.",
    )
    reply_chars: int = Field(
        200_000, gt=0, description="Characters of one reply kept at most; a longer reply is cut there."
    )
    max_cost_usd: float | None = Field(
        None, gt=0, description="Stop and conclude before the discussion would cost more (US dollars)."
    )
    max_seconds: float | None = Field(
        None, gt=0, description="Stop and conclude once a run has taken this many seconds."
    )


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
    consensus: float | None = Field(
        None, gt=0, le=1, description="End the discussion once the members' consensus score reaches this."
    )
    sides: dict[str, Literal["proposition", "opposition"]] | None = Field(
        None, description="debate only: each debater's side, by name."
    )
    follow_up_rounds: int = Field(
        1,
        ge=1,
        le=20,
        description="Rounds a follow-up question to a concluded room adds before it concludes again.",
    )
    speaker_selection: Literal["chair", "round_robin", "random", "manual"] = Field(
        "chair", description="selector only: who names the next speaker."
    )

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
        for name in self.sides or {}:
            if not any(a.name == name for a in self.agents):
                raise ValueError(f"sides: '{name}' is not one of the agents")
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
        if provider == "llamacpp":  # `llamacpp:FILE`: a local GGUF model by path or by name
            if not name:
                raise ValueError(f"{where}: write llamacpp:FILE, naming a GGUF file (see `moot models`)")
            return ModelSpec.model_validate({"provider": provider, "model_path": name})
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
    def chair(self) -> AgentSpec | None:
        """Who chairs the discussion, as its protocol says: None where nobody does."""
        from moot.protocols import get_protocol

        return get_protocol(self.protocol).chair(self)

    @property
    def members(self) -> list[AgentSpec]:
        """Active speakers in turn order: every active agent but the chair."""
        chair = self.chair
        return [a for a in self.agents if a.active and a is not chair]

    def cannot_run(self) -> str | None:
        """Why a run of this room would fail as it starts, whatever its models do; None when it can run.

        A room may be stored with every agent inactive and fixed later, so this is not a validation error;
        `moot validate` and `moot run` refuse such a room before starting it.
        """
        if self.moderator is None:
            return "no agent is active: mark at least one agent active: true"
        if not self.members:
            if self.chair is not None:
                return (
                    f"no active member to speak besides the moderator {self.moderator.name}: "
                    "add an active agent that is not the moderator"
                )
            return "no active member to speak: add an active agent"
        return None

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
    """Reads a room file (YAML, or JSON by its .json suffix) into a validated RoomSpec.

    The size is checked first: parsing a file of tens of megabytes takes longer than refusing it.
    """
    file = Path(path)
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_ROOM_FILE_BYTES + 1)
            if len(raw) > MAX_ROOM_FILE_BYTES:
                size = os.fstat(handle.fileno()).st_size
                raise ConfigError(
                    f"{file}: the file is {_megabytes(max(size, len(raw)))}; a room file may be at most "
                    f"{_megabytes(MAX_ROOM_FILE_BYTES)} (is it the right file?)"
                )
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the room file ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text (byte {exc.start}); save the room file as UTF-8") from None
    try:
        data = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"{file}: not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    return RoomSpec.from_data(data, source=str(file))


def _megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


def _nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model inside a field's type, and whether a list index or a mapping key comes before its fields."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _nested_model(typing.get_args(annotation)[0])
    if origin in (list, dict):
        inner, _ = _nested_model(typing.get_args(annotation)[-1])
        return inner, True
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            inner, keyed = _nested_model(arg)
            if inner is not None:
                return inner, keyed
        return None, False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def _fields_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The names a mapping at `loc` may hold (aliases included), found by walking the models from `root`."""
    model: type[BaseModel] | None = root
    keyed = False
    for part in loc:
        if model is None:
            return []
        if keyed:  # a list index or a mapping key (a model's name), not a field
            keyed = False
            continue
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            continue  # a union branch's name, such as "ModelSpec"
        model, keyed = _nested_model(field.annotation)
    if model is None:
        return []
    names = [name for name, field in model.model_fields.items() if not field.exclude]
    names += [field.alias for field in model.model_fields.values() if field.alias]
    return names


def _unknown_field(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """`did you mean` for a misspelt key, else the keys allowed there."""
    key = str(loc[-1])
    allowed = _fields_at(root, loc[:-1])
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown field '{key}'; did you mean '{close[0]}'?"
    if allowed:
        return f"unknown field '{key}'; the fields here are {', '.join(sorted(set(allowed)))}"
    return f"unknown field '{key}'"


def format_validation_error(exc: ValidationError, source: str, root: type[BaseModel] | None = None) -> str:
    """One line per problem: `file: agents[1].model: what is wrong and what is allowed`.

    `root` is the model that was validated (a RoomSpec by default): it tells a misspelt key what was meant.
    """
    root = root or RoomSpec
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
        if error["type"] == "extra_forbidden":
            message = _unknown_field(root, tuple(error["loc"]))
        if message.startswith(("agents", "models", "default_model")):
            lines.append(f"{source}: {message}")
        else:
            lines.append(f"{source}: {path or 'room'}: {message}")
    return "\n".join(dict.fromkeys(lines))
