"""Users and their tokens: admins add users and hand out tokens; everyone can see who they are."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, status
from fastapi.responses import HTMLResponse

from moot.service.auth import hash_token, new_token
from moot.service.deps import AdminUser, CurrentUser, Paging, StoreDep
from moot.service.pages import signed_in_page, wants_html
from moot.service.schemas import Page, UserCreate, UserPublic, UserUpdate, UserWithToken
from moot.store import UserRecord

router = APIRouter(prefix="/users", tags=["users"])
UserId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _public(user: UserRecord) -> UserPublic:
    return UserPublic.model_validate(user)


@router.get(
    "/me",
    response_model=UserPublic,
    responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}},
)
async def read_me(request: Request, user: CurrentUser) -> UserPublic | HTMLResponse:
    """Who the token belongs to, with their level (L15).

    A browser (Accept: text/html before application/json) gets a page instead: the first start's login
    URL opens it, saying who is signed in and where the docs are.
    """
    if wants_html(request.headers.get("accept")):
        return signed_in_page(user)
    return _public(user)


@router.post("", response_model=UserWithToken, status_code=status.HTTP_201_CREATED)
async def create_user(body: UserCreate, _admin: AdminUser, store: StoreDep) -> UserWithToken:
    """Adds a user and returns their token, this once: only its hash is kept."""
    token = new_token()
    user = await store.create_user(body.name, role=body.role, token_hash=hash_token(token))
    return UserWithToken(**_public(user).model_dump(), token=token)


@router.get("", response_model=Page[UserPublic])
async def list_users(_admin: AdminUser, store: StoreDep, page: Paging) -> Page[UserPublic]:
    users = await store.list_users(limit=page.limit, offset=page.offset)
    return Page(items=[_public(u) for u in users], total=await store.count_users(), **page.echo)


async def _user(store: StoreDep, user_id: int) -> UserRecord:
    user = await store.get_user(user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {user_id}")
    return user


@router.get("/{user_id}", response_model=UserPublic)
async def read_user(user_id: UserId, _admin: AdminUser, store: StoreDep) -> UserPublic:
    return _public(await _user(store, user_id))


@router.patch("/{user_id}", response_model=UserPublic)
async def update_user(user_id: UserId, body: UserUpdate, admin: AdminUser, store: StoreDep) -> UserPublic:
    """Changes a user's level; the last admin cannot step down."""
    user = await _user(store, user_id)
    if user.role == "admin" and body.role != "admin" and await store.count_users(role="admin") == 1:
        raise HTTPException(status.HTTP_409_CONFLICT, "this is the last admin; make another admin first")
    changed = await store.update_user(user.id, role=body.role)
    return _public(await _user(store, user.id) if changed is None else changed)


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(user_id: UserId, _admin: AdminUser, store: StoreDep) -> None:
    """Deletes a user with their providers and agent templates; their rooms are kept, owned by nobody."""
    user = await _user(store, user_id)
    if user.role == "admin" and await store.count_users(role="admin") == 1:
        raise HTTPException(status.HTTP_409_CONFLICT, "this is the last admin; make another admin first")
    await store.delete_user(user.id)


@router.post("/{user_id}/token", response_model=UserWithToken)
async def new_user_token(user_id: UserId, _admin: AdminUser, store: StoreDep) -> UserWithToken:
    """Gives the user a new token; the old one stops working at once."""
    user = await _user(store, user_id)
    token = new_token()
    await store.update_user(user.id, token_hash=hash_token(token))
    return UserWithToken(**_public(user).model_dump(), token=token)
