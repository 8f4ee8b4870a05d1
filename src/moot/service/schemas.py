"""What the API reads and writes: separate Create, Update and Public schemas per resource.

Every text has a maximum length, and request bodies refuse what a database cannot keep (NUL characters,
lone surrogates) or JSON cannot carry back (NaN, infinities), so no input can turn into a server error.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    StringConstraints,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from moot.conclusion import Conclusion
from moot.engine import MAX_INTERVENTION_CHARS
from moot.spec import (
    AgentPersona,
    Language,
    Limits,
    ProtocolName,
    Role,
    check_avatar,
    normalise_colour,
    refuse_bool_number,
)
from moot.store import UserRole

T = TypeVar("T")
ProviderType = Literal["openai", "anthropic"]
ExportFormat = Literal["md", "json"]

MAX_PAGE = 100
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$"


def _plain_line(value: str) -> str:
    if not value.strip() or any(ch in value for ch in "\n\r\t[]"):
        raise ValueError("a name is one line of text without brackets")
    return value.strip()


Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=_NAME),
    Field(description="Letters, digits and _ . @ -, starting with a letter or digit."),
]
AgentName = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_plain_line)]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


def refuse_unstorable(value: Any, where: str = "") -> None:
    """Raises ValueError naming the first NUL, lone surrogate or non-finite number found in `value`, with
    its place as `moot validate` writes it (`agents[0].persona`). Walks without recursion, so however
    deeply a body nests it gets an answer, not a server error."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError(f"{at or 'body'}: text may not contain NUL characters")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{at or 'body'}: text holds a lone surrogate; send valid Unicode") from None
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{at or 'body'}: numbers must be finite")
        elif isinstance(item, dict):
            for key, inner in reversed(item.items()):
                stack.append((inner, f"{at}.{key}" if at else str(key)))
                stack.append((key, at))
        elif isinstance(item, list):
            stack.extend((inner, f"{at}[{index}]") for index, inner in reversed(list(enumerate(item))))


class _In(BaseModel):
    """A request body: unknown fields are mistakes, and nothing unstorable gets in."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        refuse_unstorable(data)
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool_number(cls, value, info)


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(_Out, Generic[T]):
    """One page of a list: `?limit=&offset=` chose it, `total` counts them all."""

    items: list[T]
    total: int
    limit: int
    offset: int


class ErrorDetail(BaseModel):
    code: str = Field(description="A stable word for the kind of error, e.g. not_found, validation_error.")
    message: str = Field(description="What was wrong and what to do about it, for a person.")
    details: Any = Field(None, description="More about it: the failed fields, the room's state, ...")


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer has this shape."""

    error: ErrorDetail


# ---- users ---------------------------------------------------------------------------------------------


class UserCreate(_In):
    name: Name
    role: UserRole = "member"


class UserUpdate(_In):
    role: UserRole


class UserPublic(_Out):
    id: int
    name: str
    role: UserRole
    created_at: float


class UserWithToken(UserPublic):
    """A user with their new token: shown this once, only its hash is kept."""

    token: str


# ---- providers (L3) ------------------------------------------------------------------------------------


class ProviderCreate(_In):
    name: Name
    type: ProviderType = Field(description="openai for every OpenAI-compatible server, or anthropic.")
    base_url: Annotated[str, StringConstraints(max_length=2000)] | None = Field(
        None, description="Server URL, e.g. http://127.0.0.1:11434/v1; the provider's own when absent."
    )
    default_model: ModelName | None = Field(None, description="Model for agents that name none (L2).")
    max_tokens: int | None = Field(None, gt=0, le=200_000, description="Most tokens in one reply.")
    api_key: Annotated[SecretStr, StringConstraints(max_length=2000)] | None = Field(
        None, description="Encrypted at rest and never returned."
    )


class ProviderUpdate(_In):
    """Only the fields given change; `null` clears base_url, default_model, max_tokens or api_key."""

    name: Name | SkipJsonSchema[None] = None  # null is refused: the schema does not offer it
    type: ProviderType | SkipJsonSchema[None] = None
    base_url: Annotated[str, StringConstraints(max_length=2000)] | None = None
    default_model: ModelName | None = None
    max_tokens: int | None = Field(None, gt=0, le=200_000)
    api_key: Annotated[SecretStr, StringConstraints(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _required_stay(self) -> ProviderUpdate:
        for field in ("name", "type"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null; give a new {field} or leave it out")
        return self


class ProviderPublic(_Out):
    id: int
    name: str
    type: ProviderType
    base_url: str | None
    default_model: str | None
    max_tokens: int | None
    has_api_key: bool
    created_at: float
    updated_at: float


class ProviderTestResult(BaseModel):
    """What trying the provider showed: `ok`, else the problem in a word and in a sentence."""

    ok: bool
    model: str
    latency_ms: float | None = None
    problem: Literal["unreachable", "bad_key", "unknown_model", "refused", "error"] | None = None
    message: str | None = None


# ---- agent templates (L2) ------------------------------------------------------------------------------


class ModelIn(_In):
    """A model as a room file declares it. `provider` is openai, anthropic or simulated, or one of your
    stored providers by name; either way the key comes from your stored provider, encrypted at rest, and
    never from the room or the server's environment."""

    provider: Name = Field(
        description="openai, anthropic or simulated (the stored provider of that type is used), or the name "
        "of one of your stored providers."
    )
    model: ModelName | None = Field(None, description="The provider's default model when absent.")
    base_url: Annotated[str, StringConstraints(max_length=2000)] | None = Field(
        None, description="Picks, among your stored providers of this type, the one with this URL."
    )
    api_key_env: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        None,
        description="Taken so that a room file posts as it is, and ignored: the server never reads its own "
        "environment for a room; the key comes from your stored provider.",
    )
    api_key: SkipJsonSchema[Any] = Field(None, exclude=True)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0, le=200_000)
    context_window: int | None = Field(None, gt=256, le=10_000_000)
    timeout: float | None = Field(None, gt=0, le=3600)
    max_retries: int | None = Field(None, ge=0, le=20)
    retry_backoff: float | None = Field(None, ge=0, le=600)
    retry_max_wait: float | None = Field(None, ge=0, le=3600)
    transport: Literal["lean", "sdk"] | None = Field(None, description="openai only.")
    seed: int | None = Field(
        None, ge=0, le=2**63 - 1, description="simulated only: the same seed, the same words."
    )
    tokens_per_second: float | None = Field(None, ge=0, le=100_000, description="simulated only.")
    model_path: Annotated[str, StringConstraints(max_length=500)] | None = Field(
        None, description="llamacpp only: a GGUF file in the folder the operator set (MOOT_LOCAL_MODELS_DIR)."
    )
    slots: int | None = Field(None, ge=1, le=64, description="llamacpp only: replies made at once.")
    threads: int | None = Field(None, ge=1, le=256, description="llamacpp only: CPU threads.")

    @field_validator("api_key", mode="before")
    @classmethod
    def _no_key(cls, value: Any) -> None:
        if value is not None:
            raise ValueError(
                "a room sent to the server holds no key; store it once with POST /api/v1/providers "
                "(encrypted at rest) and name that provider here"
            )
        return None


def _ref_kind(value: Any) -> str:
    return "str" if isinstance(value, str) else "ModelSpec"


# Tagged as the room file's `str | ModelSpec` is, so that an error names the field as `moot validate` does.
ModelRef = Annotated[
    Annotated[Annotated[str, StringConstraints(min_length=1, max_length=200)], Tag("str")]
    | Annotated[ModelIn, Tag("ModelSpec")],
    Discriminator(_ref_kind),
    Field(
        description="A key of `models`, `provider:model` (openai, anthropic, simulated or a stored "
        "provider's name), or a model mapping."
    ),
]


class _AgentFields(_In, AgentPersona):
    """The persona fields of a room's agent, taken as a request body."""

    colour: Colour = None


class AgentCreate(_AgentFields):
    """A reusable agent: the fields of a room's agent, with its name as the template's name."""

    name: AgentName
    model: ModelIn | None = None


Colour = Annotated[
    str | None,
    Field(
        validation_alias=AliasChoices("colour", "color"),
        max_length=32,
        description="#rrggbb, #rgb or a colour name such as teal; `color` is taken too.",
    ),
]


class _AgentOverrides(_In):
    """Persona fields that are all optional: what an update or a template's overrides may change.

    A field whose null is refused is not nullable in the schema either.
    """

    role: Role | SkipJsonSchema[None] = None
    persona: Annotated[str, Field(max_length=4000)] | SkipJsonSchema[None] = None
    system_prompt: str | None = Field(None, max_length=20_000)
    thinking_style: Annotated[str, Field(max_length=2000)] | SkipJsonSchema[None] = None
    speaking_style: Annotated[str, Field(max_length=2000)] | SkipJsonSchema[None] = None
    decision_framework: Annotated[str, Field(max_length=2000)] | SkipJsonSchema[None] = None
    colour: Colour = None
    avatar: str | None = Field(None, max_length=500)
    active: bool | SkipJsonSchema[None] = None

    _not_null: ClassVar[tuple[str, ...]] = (
        "role", "persona", "thinking_style", "speaking_style", "decision_framework", "active",
    )  # fmt: skip

    @field_validator("colour")
    @classmethod
    def _colour(cls, value: str | None) -> str | None:
        return None if value is None else normalise_colour(value)

    @field_validator("avatar")
    @classmethod
    def _avatar(cls, value: str | None) -> str | None:
        return None if value is None else (check_avatar(value) or None)

    @model_validator(mode="after")
    def _required_stay(self) -> Self:
        for field in self._not_null:
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null; give a value or leave it out")
        return self


class AgentUpdate(_AgentOverrides):
    """Only the fields given change; `null` clears the optional ones."""

    _not_null = (*_AgentOverrides._not_null, "name")
    name: AgentName | SkipJsonSchema[None] = None
    model: ModelIn | None = None


class AgentPublic(_Out):
    id: int
    name: str
    role: Role
    persona: str
    system_prompt: str | None
    thinking_style: str
    speaking_style: str
    decision_framework: str
    colour: str | None
    avatar: str | None
    active: bool
    model: dict[str, Any] | None
    created_at: float
    updated_at: float


# ---- rooms (L1, B1) --------------------------------------------------------------------------------------


class RoomAgentIn(_AgentOverrides):
    """An agent given inline, or `{"template": "name", ...overrides}` from one of your agent templates."""

    template: AgentName | None = Field(None, description="One of your agent templates, by name.")
    name: AgentName | None = Field(None, description="Required without a template.")
    model: ModelRef | None = None

    @model_validator(mode="after")
    def _named(self) -> RoomAgentIn:
        if self.template is None and self.name is None:
            raise ValueError("an agent needs a name, or a template to take it from")
        return self


class RoomCreate(_In):
    """A room file, as JSON or YAML: the same fields as `moot run` reads. Agents may also come from your
    agent templates (`template`), and models take their keys from your stored providers."""

    task: str = Field(min_length=1, max_length=20_000)
    title: str | None = Field(None, max_length=200)
    protocol: ProtocolName = "sequential"
    max_rounds: int = Field(3, ge=1, le=50)
    language: Language = "en"
    models: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], ModelIn] = Field(
        default_factory=dict, max_length=32
    )
    default_model: ModelRef | None = None
    agents: list[RoomAgentIn] = Field(min_length=1, max_length=32)
    limits: Limits = Field(default_factory=Limits)


class UsagePublic(_Out):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class RoomAgentPublic(_Out):
    name: str
    role: Role
    colour: str | None
    active: bool
    model: str = Field(description="provider:model as the agent speaks.")
    stored_provider: str | None = Field(None, description="The stored provider the model runs on.")
    permission: UserRole = Field(description="The level the agent acts with (L15).")


class RoomSummary(_Out):
    id: str
    title: str
    task: str
    protocol: ProtocolName
    status: str = Field(description="idle, running, paused, completed, error, or interrupted.")
    round: int
    max_rounds: int
    created_at: float
    updated_at: float


class RoomPublic(RoomSummary):
    language: Language
    usage: UsagePublic
    conclusion: Conclusion | None
    error: str | None
    running_here: bool = Field(description="True while this server process runs the room.")
    allowed: list[str] = Field(description="What can be done with the room now: run, pause, stop, intervene.")
    agents: list[RoomAgentPublic]
    spec: dict[str, Any] = Field(description="The room's whole spec, defaults included.")


class MessageCreate(_In):
    """A person's words for the room (B9); a stop command (`/stop`, `stop`, ...) ends it early."""

    text: str = Field(min_length=1, max_length=MAX_INTERVENTION_CHARS)
    author: AgentName | None = Field(None, description="Who speaks; your user name when absent.")


class FollowUpCreate(_In):
    """A follow-up question for a concluded room: it discusses it for more rounds and concludes again."""

    question: str = Field(min_length=1, max_length=MAX_INTERVENTION_CHARS)


class MessageAccepted(_Out):
    id: str
    text: str
    author: str
    stop: bool


class EntryPublic(_Out):
    """One entry of the transcript (L8)."""

    round: int
    kind: str
    speaker: str
    text: str
    colour: str | None
    failed: bool
    error: str | None
    usage: UsagePublic | None
    model: str | None
    conclusion: Conclusion | None
    created_at: float
