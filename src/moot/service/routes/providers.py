"""Stored providers (L3): a user's servers and keys, the keys encrypted at rest and never shown again."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status

from moot.exceptions import ConfigError
from moot.scrub import remember_secret
from moot.service.deps import CipherDep, CurrentUser, MemberUser, Paging, SettingsDep, StoreDep
from moot.service.providers import check_base_url, try_provider
from moot.service.schemas import Page, ProviderCreate, ProviderPublic, ProviderTestResult, ProviderUpdate
from moot.store import ProviderRecord

router = APIRouter(prefix="/providers", tags=["providers"])
ProviderId = Annotated[int, Path(ge=1, le=2**31 - 1)]
RESERVED = "simulated"


def _public(provider: ProviderRecord) -> ProviderPublic:
    return ProviderPublic(
        id=provider.id,
        name=provider.name,
        type=provider.type,
        base_url=provider.base_url,
        default_model=provider.default_model,
        max_tokens=provider.max_tokens,
        has_api_key=provider.api_key_encrypted is not None,
        created_at=provider.created_at,
        updated_at=provider.updated_at,
    )


def _check_name(name: str) -> None:
    if name.casefold() == RESERVED:
        raise ConfigError(f"name: '{RESERVED}' is the built-in simulated model; choose another name")


@router.post("", response_model=ProviderPublic, status_code=status.HTTP_201_CREATED)
async def create_provider(
    body: ProviderCreate, user: MemberUser, store: StoreDep, cipher: CipherDep, settings: SettingsDep
) -> ProviderPublic:
    """Stores a provider; its API key is encrypted before it reaches the database."""
    _check_name(body.name)
    if body.api_key is not None:
        remember_secret(body.api_key.get_secret_value())
    if body.base_url is not None:
        await check_base_url(body.base_url, block_private=settings.block_private_urls)
    provider = await store.create_provider(
        user.id,
        name=body.name,
        type=body.type,
        base_url=body.base_url,
        default_model=body.default_model,
        max_tokens=body.max_tokens,
        api_key_encrypted=cipher.encrypt(body.api_key.get_secret_value()) if body.api_key else None,
    )
    return _public(provider)


@router.get("", response_model=Page[ProviderPublic])
async def list_providers(user: CurrentUser, store: StoreDep, page: Paging) -> Page[ProviderPublic]:
    providers = await store.list_providers(owner_id=user.id, limit=page.limit, offset=page.offset)
    total = await store.count_providers(owner_id=user.id)
    return Page(items=[_public(p) for p in providers], total=total, **page.echo)


async def _owned(store: StoreDep, provider_id: int, owner_id: int) -> ProviderRecord:
    provider = await store.get_provider(provider_id, owner_id=owner_id)
    if provider is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no provider {provider_id}")
    return provider


@router.get("/{provider_id}", response_model=ProviderPublic)
async def read_provider(provider_id: ProviderId, user: CurrentUser, store: StoreDep) -> ProviderPublic:
    return _public(await _owned(store, provider_id, user.id))


@router.patch("/{provider_id}", response_model=ProviderPublic)
async def update_provider(
    provider_id: ProviderId,
    body: ProviderUpdate,
    user: MemberUser,
    store: StoreDep,
    cipher: CipherDep,
    settings: SettingsDep,
) -> ProviderPublic:
    """Changes the fields given; rooms pick the change up on their next run. Rooms name providers by
    name, so after a rename they find the provider only under its old name."""
    await _owned(store, provider_id, user.id)
    changes: dict[str, Any] = body.model_dump(exclude_unset=True, exclude={"api_key"})
    if body.name is not None:
        _check_name(body.name)
    if body.base_url is not None:
        await check_base_url(body.base_url, block_private=settings.block_private_urls)
    if "api_key" in body.model_fields_set:
        remember_secret(body.api_key.get_secret_value() if body.api_key else None)
        changes["api_key_encrypted"] = (
            cipher.encrypt(body.api_key.get_secret_value()) if body.api_key else None
        )
    updated = await store.update_provider(provider_id, changes, owner_id=user.id)
    return _public(updated or await _owned(store, provider_id, user.id))


@router.delete("/{provider_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_provider(provider_id: ProviderId, user: MemberUser, store: StoreDep) -> None:
    """Deletes the provider; agents of rooms that named it fail their turns until one of that name exists."""
    if not await store.delete_provider(provider_id, owner_id=user.id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no provider {provider_id}")


@router.post("/{provider_id}/test", response_model=ProviderTestResult)
async def test_provider(
    provider_id: ProviderId, user: MemberUser, store: StoreDep, cipher: CipherDep, settings: SettingsDep
) -> ProviderTestResult:
    """Asks the provider's default model for one token: `ok` with the latency, or what is wrong in words."""
    return await try_provider(await _owned(store, provider_id, user.id), cipher, settings)
