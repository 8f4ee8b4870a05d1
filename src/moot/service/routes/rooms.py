"""Rooms (L1, B1): made from a room spec whose models name stored providers, run inside the server, steered
and read over HTTP. An operation that does not fit the room's state answers 409 with what would."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import ValidationError

from moot.engine import check_intervention
from moot.exceptions import ConfigError
from moot.export import export
from moot.prompts import is_stop_command
from moot.service.deps import CurrentUser, ManagerDep, MemberUser, OwnedRoom, Paging, StoreDep, User
from moot.service.runtime import WHILE_RUNNING, WHILE_STOPPED, Conflict, RoomManager, state_of
from moot.service.schemas import (
    EntryPublic,
    ExportFormat,
    MessageAccepted,
    MessageCreate,
    ModelIn,
    Page,
    RoomAgentPublic,
    RoomCreate,
    RoomPublic,
    RoomSummary,
    UsagePublic,
)
from moot.spec import RoomSpec
from moot.store import RoomRecord, Store
from moot.store._store import ProviderRecord, UserRole

router = APIRouter(prefix="/rooms", tags=["rooms"])
SIMULATED = "simulated"


# ---- from a request to a spec ------------------------------------------------------------------------------


class _SpecBuilder:
    """Turns a RoomCreate into a RoomSpec: templates expanded, stored providers named by `stored_provider`."""

    def __init__(self, body: RoomCreate, owner_id: int, store: Store) -> None:
        self.body = body
        self.owner_id = owner_id
        self.store = store
        self._providers: dict[str, ProviderRecord | None] = {}

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
        """A reference the spec understands: a key of `models`, simulated, or a mapping with the provider."""
        given = ref
        if isinstance(ref, str):
            if ref in self.body.models:
                return ref
            name, _, model = ref.partition(":")
            if name == SIMULATED:
                return ref
            ref = {"provider": name, "model": model or None}
        try:
            declared = ref if isinstance(ref, ModelIn) else ModelIn.model_validate(ref)
        except ValidationError:
            raise ConfigError(
                f"{where}: '{str(given)[:100]}' is no model; give a stored provider's name, "
                "'name:model', simulated, or a key of models"
            ) from None
        data = declared.model_dump(exclude_none=True)
        if declared.provider == SIMULATED:
            return data
        provider = await self._provider(declared.provider, where)
        data.update(provider=provider.type, stored_provider=provider.name)
        if declared.model is None and provider.default_model:
            data["model"] = provider.default_model
        if declared.max_tokens is None and provider.max_tokens:
            data["max_tokens"] = provider.max_tokens
        return data

    async def _provider(self, name: str, where: str) -> ProviderRecord:
        if name not in self._providers:
            self._providers[name] = await self.store.provider_by_name(name, owner_id=self.owner_id)
        provider = self._providers[name]
        if provider is None:
            raise ConfigError(
                f"{where}: you have no provider named '{name}'; create it with POST /api/v1/providers, "
                f"or use {SIMULATED}"
            )
        return provider


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
        spec=spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


async def _fresh(store: Store, room: RoomRecord, manager: RoomManager, user: User) -> RoomPublic:
    return room_public(await store.get_room(room.id), manager, user)


# ---- the routes ------------------------------------------------------------------------------------------------


@router.post("", response_model=RoomPublic, status_code=status.HTTP_201_CREATED)
async def create_room(body: RoomCreate, user: MemberUser, store: StoreDep, manager: ManagerDep) -> RoomPublic:
    """Stores a new idle room; `POST /rooms/{id}/run` starts it."""
    spec = await _SpecBuilder(body, user.id, store).build()
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
async def run_room(user: MemberUser, room: OwnedRoom, store: StoreDep, manager: ManagerDep) -> RoomPublic:
    """Starts the room, or resumes it where it stopped (L10); it runs on when no client watches."""
    await manager.run(room.id)
    return await _fresh(store, room, manager, user)


@router.post("/{room_id}/pause", response_model=RoomPublic)
async def pause_room(user: MemberUser, room: OwnedRoom, store: StoreDep, manager: ManagerDep) -> RoomPublic:
    """Pauses a running room (L11); returns once the pause is stored."""
    await manager.pause(room.id)
    return await _fresh(store, room, manager, user)


@router.post("/{room_id}/stop", response_model=RoomPublic, status_code=status.HTTP_202_ACCEPTED)
async def stop_room(user: MemberUser, room: OwnedRoom, store: StoreDep, manager: ManagerDep) -> RoomPublic:
    """Ends the discussion early with a conclusion (B9); the room concludes in the background."""
    if state_of(room) == "completed":
        raise Conflict(room.id, "completed", f"room {room.id} is completed; there is nothing left to stop")
    await manager.stop(room.id)
    return await _fresh(store, room, manager, user)


@router.post("/{room_id}/messages", response_model=MessageAccepted, status_code=status.HTTP_202_ACCEPTED)
async def post_message(
    body: MessageCreate, user: MemberUser, room: OwnedRoom, manager: ManagerDep
) -> MessageAccepted:
    """A person steps in (B9): the words join at the room's next step; a stop command ends it early."""
    try:
        text = check_intervention(body.text)
    except ValueError as exc:
        raise ConfigError(f"text: {exc}") from None
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
