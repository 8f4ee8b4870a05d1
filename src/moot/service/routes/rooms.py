"""Rooms (L1, B1): made from a room file (JSON or YAML, the document `moot run` reads) whose models run on the
user's stored providers, run inside the server, steered and read over HTTP. An operation that does not fit
the room's state answers 409 with what would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import ValidationError

from moot import tracing
from moot.engine import check_intervention
from moot.exceptions import ConfigError, ModelUnavailable
from moot.export import export
from moot.models.llamacpp import resolve_model_path
from moot.prompts import is_stop_command
from moot.scrub import scrub
from moot.service.deps import (
    CurrentUser,
    LimiterDep,
    ManagerDep,
    MemberUser,
    OwnedRoom,
    Paging,
    SettingsDep,
    StoreDep,
    User,
)
from moot.service.providers import LOCAL, ProviderLookup
from moot.service.runtime import WHILE_RUNNING, WHILE_STOPPED, Conflict, RoomManager, state_of
from moot.service.schemas import (
    EntryPublic,
    ErrorResponse,
    ExportFormat,
    FollowUpCreate,
    MessageAccepted,
    MessageCreate,
    ModelIn,
    Page,
    RoomAgentPublic,
    RoomCreate,
    RoomPublic,
    RoomSummary,
    UsagePublic,
    refuse_unstorable,
)
from moot.spec import RoomSpec, format_validation_error
from moot.store import RoomRecord, Store, UserRole

router = APIRouter(prefix="/rooms", tags=["rooms"])
SIMULATED = "simulated"


# ---- from a request to a spec ------------------------------------------------------------------------------


class _SpecBuilder:
    """Turns a RoomCreate into a RoomSpec: templates expanded, stored providers named by `stored_provider`."""

    def __init__(
        self, body: RoomCreate, owner_id: int, store: Store, local_models: Path | None = None
    ) -> None:
        self.local_models = local_models
        self.body = body
        self.owner_id = owner_id
        self.store = store
        self._lookup = ProviderLookup(store, owner_id)

    async def build(self) -> RoomSpec:
        body = self.body
        data = body.model_dump(exclude_none=True, exclude={"agents", "models", "default_model"})
        data["models"] = {name: await self._model(ref, f"models.{name}") for name, ref in body.models.items()}
        if body.default_model is not None:
            data["default_model"] = await self._model(body.default_model, "default_model")
        data["agents"] = [await self._agent(index) for index in range(len(body.agents))]
        return RoomSpec.from_data(data, source="room")

    async def _agent(self, index: int) -> dict[str, Any]:
        agent, where = self.body.agents[index], f"agents[{index}]"
        fields = agent.model_dump(exclude_none=True, exclude={"template"})
        if agent.template is not None:
            template = await self.store.template_by_name(agent.template, owner_id=self.owner_id)
            if template is None:
                raise ConfigError(
                    f"{where}.template: you have no agent template named '{agent.template}'; "
                    "GET /api/v1/agents lists yours"
                )
            fields = {"name": template.name, **template.data, **fields}
        if "model" in fields:
            fields["model"] = await self._model(fields["model"], f"{where}.model")
        return fields

    async def _model(self, ref: str | dict[str, Any] | ModelIn, where: str) -> str | dict[str, Any]:
        """A reference the spec understands: a key of `models`, or a mapping naming the stored provider.

        `api_key_env` and `base_url` never reach the stored room: the key and the URL are the stored
        provider's, filled in memory when the room runs, so a room cannot make the server send one of its
        own environment variables anywhere.
        """
        given = ref
        if isinstance(ref, str):
            if ref in self.body.models:
                return ref
            name, _, model = ref.partition(":")
            ref = {"provider": name, "model_path" if name == LOCAL else "model": model or None}
        try:
            declared = ref if isinstance(ref, ModelIn) else ModelIn.model_validate(ref)
        except ValidationError as exc:
            if isinstance(given, str):
                raise ConfigError(
                    f"{where}: '{given[:100]}' is no model; give a key of models, 'provider:model' with "
                    "openai, anthropic, simulated or one of your stored providers, or a model mapping"
                ) from None
            raise ConfigError(format_validation_error(exc, f"room: {where}", ModelIn)) from None
        data = declared.model_dump(exclude_none=True, exclude={"api_key", "api_key_env", "base_url"})
        if declared.provider == SIMULATED:
            return data
        if declared.provider == LOCAL:
            return self._local(data, where)
        provider = await self._lookup.find(declared, where)
        data.update(provider=provider.type, stored_provider=provider.name)
        if declared.model is None and provider.default_model:
            data["model"] = provider.default_model
        if declared.max_tokens is None and provider.max_tokens:
            data["max_tokens"] = provider.max_tokens
        return data

    def _local(self, data: dict[str, Any], where: str) -> dict[str, Any]:
        """A GGUF model on this server: only from the folder the operator named, never a path of the user's."""
        if self.local_models is None:
            raise ConfigError(
                f"{where}: provider {LOCAL} (a GGUF model run on this server) is off here; the operator "
                "turns it on with MOOT_LOCAL_MODELS_DIR, a folder of GGUF files that model_path then names"
            )
        try:
            resolve_model_path(str(data.get("model_path") or ""), within=self.local_models)
        except ModelUnavailable as exc:
            raise ConfigError(f"{where}.model_path: {exc}") from None
        return data


# ---- the body: a room file, as JSON or YAML -----------------------------------------------------------------

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors and aliases: a few lines of them can stand for billions of values."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None,
                None,
                "aliases (*name) are not taken here; write the values out",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        return super().compose_node(parent, index)


async def room_document(request: Request) -> RoomCreate:
    """The request's room file, parsed by its content type and validated, with errors as `moot validate`
    writes them (`room: agents[0].model: ...`)."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    raw = await request.body()
    try:
        if media in YAML_TYPES:
            try:
                data = yaml.load(raw, Loader=_NoAliases)
            except yaml.YAMLError as exc:
                raise _invalid(f"room: the body is not valid YAML: {scrub(str(exc))}") from None
        elif media in JSON_TYPES or media.endswith("+json") or not media:
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise _invalid(
                    f"body: the body is not valid JSON ({exc.msg} at character {exc.pos})"
                ) from None
            except ValueError:
                raise _invalid("body: the body is not UTF-8 text") from None
        else:
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                f"send the room as application/json or application/yaml, not {media[:100]}",
            )
        if not isinstance(data, dict):
            raise _invalid("room: a room is a mapping with at least task and agents")
        try:
            refuse_unstorable(data)
        except ValueError as exc:
            raise _invalid(f"room: {exc}") from None
        try:
            return RoomCreate.model_validate(data)
        except ValidationError as exc:
            raise _invalid(format_validation_error(exc, "room", RoomCreate)) from None
    except RecursionError:
        raise _invalid("room: the document is nested too deeply to be a room") from None


def _invalid(message: str) -> HTTPException:
    """422 with each problem on its line, as `moot validate` prints them."""
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, message)


_ROOM_BODY = {"$ref": "#/components/schemas/RoomCreate"}
ROOM_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {media: {"schema": _ROOM_BODY} for media in ("application/json", "application/yaml")},
    }
}
RoomDocument = Annotated[RoomCreate, Depends(room_document)]


# ---- from a record to what a client sees ---------------------------------------------------------------------


def allowed(record: RoomRecord, manager: RoomManager) -> list[str]:
    """What can be done with the room now."""
    state = state_of(record)
    if state == "completed":
        return []
    if manager.is_running(record.id):
        return list(WHILE_RUNNING)
    if state == "running":  # in another process
        return ["stop", "intervene"]
    return list(WHILE_STOPPED)


def _summary(record: RoomRecord) -> RoomSummary:
    return RoomSummary(
        id=record.id,
        title=record.title,
        task=record.task,
        protocol=record.spec.protocol,
        status=state_of(record),
        round=record.round,
        max_rounds=record.spec.max_rounds,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def room_public(record: RoomRecord, manager: RoomManager, owner: User | None) -> RoomPublic:
    """The room as GET /rooms/{id} shows it.

    L15: an agent acts with its template owner's level, else its room owner's, else read-only. A user can
    only use their own templates, so both are the room owner's level.
    """
    spec = record.spec
    level: UserRole = owner.role if owner is not None else "readonly"
    agents = []
    for agent in spec.agents:
        model = spec.model_for(agent)
        agents.append(
            RoomAgentPublic(
                name=agent.name,
                role=agent.role,
                colour=agent.colour,
                active=agent.active,
                model=model.label,
                stored_provider=model.stored_provider,
                permission=level,
            )
        )
    usage = record.usage
    return RoomPublic(
        **_summary(record).model_dump(),
        language=spec.language,
        usage=UsagePublic(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
        ),
        conclusion=record.conclusion,
        error=record.error,
        running_here=manager.is_running(record.id) and record.status != "completed",
        allowed=allowed(record, manager),
        agents=agents,
        spec=spec.model_dump(mode="json", exclude_none=True),
    )


async def _fresh(store: Store, room: RoomRecord, manager: RoomManager, user: User) -> RoomPublic:
    return room_public(await store.get_room(room.id), manager, user)


# ---- the routes ------------------------------------------------------------------------------------------------


@router.post(
    "",
    response_model=RoomPublic,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=ROOM_BODY_DOC,
    responses={415: {"model": ErrorResponse, "description": "Neither JSON nor YAML."}},
)
async def create_room(
    body: RoomDocument, user: MemberUser, store: StoreDep, manager: ManagerDep, settings: SettingsDep
) -> RoomPublic:
    """Stores a new idle room from a room file, as JSON or as YAML (`Content-Type: application/yaml`);
    `POST /rooms/{id}/run` starts it.

    The document is the one `moot run` reads. A model's `provider` is openai, anthropic or simulated, or
    one of your stored providers by name; the key always comes from your stored provider (never from
    the room or the server's environment), and `base_url` picks among your providers of one type.
    """
    spec = await _SpecBuilder(body, user.id, store, settings.local_models_dir).build()
    return room_public(await store.create_room(spec, owner_id=user.id), manager, user)


@router.get("", response_model=Page[RoomSummary])
async def list_rooms(user: CurrentUser, store: StoreDep, page: Paging) -> Page[RoomSummary]:
    """Your rooms, the most recently active first."""
    rooms = await store.list_rooms(owner_id=user.id, limit=page.limit, offset=page.offset)
    total = await store.count_rooms(owner_id=user.id)
    return Page(items=[_summary(r) for r in rooms], total=total, **page.echo)


@router.get("/{room_id}", response_model=RoomPublic)
async def read_room(room: OwnedRoom, user: CurrentUser, manager: ManagerDep) -> RoomPublic:
    """Status, round, usage, the conclusion once there is one, and each agent's level (L15)."""
    return room_public(room, manager, user)


@router.delete("/{room_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_room(user: MemberUser, room: OwnedRoom, store: StoreDep, manager: ManagerDep) -> None:
    """Deletes the room and everything said in it; a running room must be paused or stopped first."""
    state = state_of(room)
    if manager.is_running(room.id) or state == "running":
        raise Conflict(
            room.id, "running", f"room {room.id} is running; pause it or stop it first", ("pause", "stop")
        )
    await store.delete_room(room.id)


@router.post("/{room_id}/run", response_model=RoomPublic, status_code=status.HTTP_202_ACCEPTED)
async def run_room(
    request: Request, user: MemberUser, room: OwnedRoom, store: StoreDep, manager: ManagerDep
) -> RoomPublic:
    """Starts the room, or resumes it where it stopped (L10); it runs on when no client watches."""
    with tracing.request(request, room.id):  # the run's span is this request's child
        await manager.run(room.id)
    return await _fresh(store, room, manager, user)


@router.post("/{room_id}/continue", response_model=RoomPublic, status_code=status.HTTP_202_ACCEPTED)
async def continue_room(
    request: Request,
    body: FollowUpCreate,
    user: MemberUser,
    room: OwnedRoom,
    store: StoreDep,
    manager: ManagerDep,
) -> RoomPublic:
    """Asks a concluded room a follow-up question: more rounds on the same transcript, then a new
    conclusion; the earlier conclusions are kept, numbered, in the transcript and its exports."""
    try:
        question = check_intervention(body.question)
    except ValueError as exc:
        raise ConfigError(f"question: {exc}") from None
    if manager.is_running(room.id) or state_of(room) == "running":
        raise Conflict(room.id, "running", f"room {room.id} is still running; ask once it has concluded")
    transcript = await store.load_transcript(room.id)
    if not transcript.concluded:
        raise Conflict(
            room.id,
            state_of(room),
            f"room {room.id} has not concluded yet; run it to its end first",
            ("run",),
        )
    await store.add_intervention(room.id, question, author=user.name)
    await store.update_room(room.id, status="paused")
    with tracing.request(request, room.id):
        await manager.run(room.id)
    return await _fresh(store, room, manager, user)


@router.post("/{room_id}/pause", response_model=RoomPublic)
async def pause_room(user: MemberUser, room: OwnedRoom, store: StoreDep, manager: ManagerDep) -> RoomPublic:
    """Pauses a running room (L11); returns once the pause is stored."""
    await manager.pause(room.id)
    return await _fresh(store, room, manager, user)


@router.post("/{room_id}/stop", response_model=RoomPublic, status_code=status.HTTP_202_ACCEPTED)
async def stop_room(
    request: Request, user: MemberUser, room: OwnedRoom, store: StoreDep, manager: ManagerDep
) -> RoomPublic:
    """Ends the discussion early with a conclusion (B9); the room concludes in the background."""
    if state_of(room) == "completed":
        raise Conflict(room.id, "completed", f"room {room.id} is completed; there is nothing left to stop")
    with tracing.request(request, room.id):  # a stopped room not running here runs to conclude
        await manager.stop(room.id)
    return await _fresh(store, room, manager, user)


@router.post(
    "/{room_id}/messages",
    response_model=MessageAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={429: {"model": ErrorResponse, "description": "Too many interventions; see Retry-After."}},
)
async def post_message(
    body: MessageCreate, user: MemberUser, room: OwnedRoom, manager: ManagerDep, limiter: LimiterDep
) -> MessageAccepted:
    """A person steps in (B9): the words join at the room's next step; a stop command ends it early.

    A room takes a limited number of interventions per minute, and so does a user (429 past them).
    """
    try:
        text = check_intervention(body.text)
    except ValueError as exc:
        raise ConfigError(f"text: {exc}") from None
    await limiter.take(room.id, user.id)
    author = body.author or user.name
    ref = await manager.intervene(room.id, text, author)
    return MessageAccepted(id=ref, text=text, author=author, stop=is_stop_command(text))


@router.get("/{room_id}/messages", response_model=Page[EntryPublic])
async def list_messages(room: OwnedRoom, store: StoreDep, page: Paging) -> Page[EntryPublic]:
    """The transcript in order (L8): the task, speeches, summaries, interventions and the conclusion."""
    entries = list(await store.load_transcript(room.id))
    items = [EntryPublic.model_validate(e) for e in entries[page.offset : page.offset + page.limit]]
    return Page(items=items, total=len(entries), **page.echo)


_EXPORT_TYPES: dict[str, str] = {"md": "text/markdown; charset=utf-8", "json": "application/json"}


@router.get(
    "/{room_id}/export",
    response_class=Response,
    responses={200: {"content": {"text/markdown": {"schema": {"type": "string"}}, "application/json": {}}}},
)
async def export_room(
    room: OwnedRoom,
    store: StoreDep,
    format: Annotated[ExportFormat, Query(description="md for people, json for programs.")] = "md",
) -> Response:
    """The whole discussion as a document."""
    transcript = await store.load_transcript(room.id)
    text = export(room.id, room.spec, transcript, status=state_of(room), fmt=format)
    return Response(
        text,
        media_type=_EXPORT_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="room-{room.id}.{format}"'},
    )
