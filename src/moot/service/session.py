"""A browser's sign-in: the token kept in an HttpOnly, SameSite=Strict cookie, and writes made with that
cookie refused unless they come from this server's own pages (CSRF).

Programs keep sending `Authorization: Bearer`; only requests that would be signed in by the cookie alone
are checked, so a bearer client never needs an Origin header. WebSockets never take the cookie.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "moot_session"
MAX_AGE = 30 * 24 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_token(connection: HTTPConnection) -> str | None:
    """The token of the session cookie, for plain HTTP requests only (never a WebSocket)."""
    if connection.scope.get("type") != "http":
        return None
    return connection.cookies.get(COOKIE) or None


def same_origin(scope: Scope) -> bool:
    """True when the browser says the request comes from this server's own pages.

    `Sec-Fetch-Site: same-origin` is sent by every current browser; else the Origin header must name this
    host. A request with neither is refused: browsers send at least one of them on every write.
    """
    headers: dict[str, str] = {
        k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
    }
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = headers.get("origin")
    if not origin or origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == headers.get("host", "").lower()


def _uses_cookie(scope: Scope) -> bool:
    """True when the session cookie is what signs this request in: no bearer token and no `?token=` comes
    first (the same order as `deps.token_of`)."""
    headers: dict[bytes, bytes] = dict(scope.get("headers", []))
    scheme, _, credentials = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return False
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    if any(query.get("token", [])):
        return False
    return f"{COOKIE}=".encode() in headers.get(b"cookie", b"")


class CSRFGuard:
    """Refuses a write signed in by the session cookie that another site's page made (403)."""

    def __init__(self, app: ASGIApp, *, always: tuple[str, ...] = ("/login", "/logout")) -> None:
        self.app = app
        self.always = always

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] not in SAFE_METHODS
            and (scope["path"] in self.always or _uses_cookie(scope))
            and not same_origin(scope)
        ):
            body = json.dumps(
                {
                    "error": {
                        "code": "forbidden",
                        "message": "a write signed in by the browser's cookie must come from this server's "
                        "pages; programs send 'Authorization: Bearer <token>'",
                        "details": None,
                    }
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(body)),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
