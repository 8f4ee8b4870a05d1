"""Agent templates (L2): reusable agents owned by a user, used in rooms as `{"template": "name"}`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status

from moot.service.deps import CurrentUser, MemberUser, Paging, StoreDep
from moot.service.providers import ProviderLookup
from moot.service.schemas import AgentCreate, AgentPublic, AgentUpdate, ModelIn, Page
from moot.store import AgentTemplateRecord, Store

router = APIRouter(prefix="/agents", tags=["agents"])
AgentId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _public(template: AgentTemplateRecord) -> AgentPublic:
    data = template.data
    return AgentPublic.model_validate(
        {
            **AgentCreate.model_validate({"name": template.name}).model_dump(),
            **data,
            "id": template.id,
            "name": template.name,
            "created_at": template.created_at,
            "updated_at": template.updated_at,
        }
    )


async def _check_model(model: ModelIn | None, store: Store, owner_id: int) -> None:
    """A template's model must be one a room of the owner can run on (simulated, or a stored provider)
    when the template is made, so that it does not fail later in every room that uses it."""
    if model is None or model.provider == "simulated":
        return
    await ProviderLookup(store, owner_id).find(model, "model")


@router.post("", response_model=AgentPublic, status_code=status.HTTP_201_CREATED)
async def create_agent(body: AgentCreate, user: MemberUser, store: StoreDep) -> AgentPublic:
    await _check_model(body.model, store, user.id)
    data = body.model_dump(exclude={"name"}, exclude_none=True)
    return _public(await store.create_template(user.id, name=body.name, data=data))


@router.get("", response_model=Page[AgentPublic])
async def list_agents(user: CurrentUser, store: StoreDep, page: Paging) -> Page[AgentPublic]:
    templates = await store.list_templates(owner_id=user.id, limit=page.limit, offset=page.offset)
    total = await store.count_templates(owner_id=user.id)
    return Page(items=[_public(t) for t in templates], total=total, **page.echo)


async def _owned(store: StoreDep, agent_id: int, owner_id: int) -> AgentTemplateRecord:
    template = await store.get_template(agent_id, owner_id=owner_id)
    if template is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent template {agent_id}")
    return template


@router.get("/{agent_id}", response_model=AgentPublic)
async def read_agent(agent_id: AgentId, user: CurrentUser, store: StoreDep) -> AgentPublic:
    return _public(await _owned(store, agent_id, user.id))


@router.patch("/{agent_id}", response_model=AgentPublic)
async def update_agent(
    agent_id: AgentId, body: AgentUpdate, user: MemberUser, store: StoreDep
) -> AgentPublic:
    """Changes the fields given; rooms made from the template before keep the agent as it was."""
    template = await _owned(store, agent_id, user.id)
    await _check_model(body.model, store, user.id)
    changes = body.model_dump(exclude_unset=True, exclude={"name"})
    data: dict[str, Any] = {
        key: value for key, value in {**template.data, **changes}.items() if value is not None
    }
    updated = await store.update_template(agent_id, owner_id=user.id, name=body.name, data=data)
    return _public(updated or await _owned(store, agent_id, user.id))


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_agent(agent_id: AgentId, user: MemberUser, store: StoreDep) -> None:
    """Deletes the template; rooms made from it keep their agents."""
    if not await store.delete_template(agent_id, owner_id=user.id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent template {agent_id}")
