"""What routes depend on: the store, the room manager, the settings, the current user and what is theirs.

Everything a user does not own answers 404, as if it did not exist; a user without the level a write needs
gets 403 saying which level it takes (L15).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import Depends, HTTPException, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from moot.scrub import remember_secret
from moot.service.auth import at_least, hash_token
from moot.service.crypto import Cipher
from moot.service.limits import InterventionLimiter
from moot.service.runtime import RoomManager
from moot.service.schemas import MAX_PAGE
from moot.service.session import session_token
from moot.settings import Settings
from moot.store import RoomNotFound, RoomRecord, Store, UserRecord, UserRole

User = UserRecord

_ROOM_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_bearer = HTTPBearer(
    auto_error=False,
    description="A token from `moot users token NAME` or `POST /api/v1/users`; `?token=` works too.",
)


def get_store(connection: HTTPConnection) -> Store:
    return cast(Store, connection.app.state.store)


def get_manager(connection: HTTPConnection) -> RoomManager:
    return cast(RoomManager, connection.app.state.manager)


def app_settings(connection: HTTPConnection) -> Settings:
    return cast(Settings, connection.app.state.settings)


def get_cipher(connection: HTTPConnection) -> Cipher:
    return cast(Cipher, connection.app.state.cipher)


def get_limiter(connection: HTTPConnection) -> InterventionLimiter:
    return cast(InterventionLimiter, connection.app.state.limiter)


StoreDep = Annotated[Store, Depends(get_store)]
ManagerDep = Annotated[RoomManager, Depends(get_manager)]
SettingsDep = Annotated[Settings, Depends(app_settings)]
CipherDep = Annotated[Cipher, Depends(get_cipher)]
LimiterDep = Annotated[InterventionLimiter, Depends(get_limiter)]


async def user_for_token(token: str | None, store: Store) -> User | None:
    """The user a bearer token belongs to; None for no token or an unknown one (WebSockets use this too)."""
    if not token:
        return None
    user = await store.user_by_token(hash_token(token))
    if user is not None:
        remember_secret(token)  # a real token (only those: guesses would grow the set without bound)
    return user


def token_of(connection: HTTPConnection) -> str | None:
    """The token from `Authorization: Bearer ...`, else from `?token=` (browsers' EventSource sends no headers),
    else from the page's session cookie (plain HTTP only; writes with it pass the CSRF guard of session.py)."""
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return connection.query_params.get("token") or session_token(connection)


async def current_user(
    connection: HTTPConnection,
    store: StoreDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    user = await user_for_token(token_of(connection), store)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid API token is required: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def _requiring(role: UserRole, doing: str) -> Callable[[User], Awaitable[User]]:
    async def check(user: CurrentUser) -> User:
        if not at_least(user, role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"your level is {user.role}; {doing} takes the level {role} or above",
            )
        return user

    return check


MemberUser = Annotated[User, Depends(_requiring("member", "creating, running or changing things"))]
AdminUser = Annotated[User, Depends(_requiring("admin", "managing users"))]


async def owned_room(room_id: str, user: CurrentUser, store: StoreDep) -> RoomRecord:
    """The room when it is the user's; 404 otherwise, so other users' rooms cannot even be told apart."""
    missing = HTTPException(status.HTTP_404_NOT_FOUND, f"no room '{room_id[:40]}'")
    if not _ROOM_ID.fullmatch(room_id):
        raise missing
    try:
        room = await store.get_room(room_id)
    except RoomNotFound:
        raise missing from None
    if room.owner_id != user.id:
        raise missing
    return room


OwnedRoom = Annotated[RoomRecord, Depends(owned_room)]


@dataclass(frozen=True)
class PageParams:
    """`?limit=&offset=` of a list."""

    limit: int
    offset: int

    @property
    def echo(self) -> dict[str, Any]:
        return {"limit": self.limit, "offset": self.offset}


def _page(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="How many items, at most.")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="How many to skip.")] = 0,
) -> PageParams:
    return PageParams(limit, offset)


Paging = Annotated[PageParams, Depends(_page)]
