"""Bearer tokens and permission levels (L15): tokens are random, shown once, and stored only as hashes."""

from __future__ import annotations

import hashlib
import secrets

from moot.scrub import remember_secret
from moot.settings import Settings
from moot.store import USER_ROLES, Store, UserRecord, UserRole

TOKEN_PREFIX = "moot_"
ADMIN_NAME = "admin"


def new_token() -> str:
    """A fresh token, remembered as a secret so that no log line or error of this process shows it."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    remember_secret(token)
    return token


def hash_token(token: str) -> str:
    """SHA-256 suffices: tokens carry 256 random bits, so there is nothing to guess from the hash."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def at_least(user: UserRecord, role: UserRole) -> bool:
    """True when the user's level is `role` or above (readonly < member < admin)."""
    return USER_ROLES.index(user.role) >= USER_ROLES.index(role)


async def ensure_admin(store: Store, settings: Settings) -> str:
    """Makes sure an admin can log in; returns what to tell the person who started the server.

    MOOT_ADMIN_TOKEN, when set, is the token of the user "admin" (made or promoted as needed). Otherwise
    the first start makes that admin with a new token and shows it once, as Jupyter does.
    """
    if settings.admin_token is not None:
        remember_secret(settings.admin_token.get_secret_value())  # any string, not only moot_...
        wanted = hash_token(settings.admin_token.get_secret_value())
        admin = await store.user_by_name(ADMIN_NAME)
        if admin is None:
            await store.create_user(ADMIN_NAME, role="admin", token_hash=wanted)
        else:
            await store.update_user(admin.id, role="admin", token_hash=wanted)
        return "the admin's token is MOOT_ADMIN_TOKEN"
    if await store.count_users(role="admin"):
        return f"an admin exists; `moot users token {ADMIN_NAME}` prints a new token for them"
    token = new_token()
    admin = await store.user_by_name(ADMIN_NAME)
    if admin is None:
        await store.create_user(ADMIN_NAME, role="admin", token_hash=hash_token(token))
    else:
        await store.update_user(admin.id, role="admin", token_hash=hash_token(token))
    base = f"http://{settings.host}:{settings.port}"
    return (
        f"created the admin; sign in at {base}/login?token={token} or send "
        f"'Authorization: Bearer {token}' (API docs: {base}/docs). This token is shown only once."
    )
