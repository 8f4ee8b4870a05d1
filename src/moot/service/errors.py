"""Every error answer is `{"error": {"code", "message", "details"}}`; a real bug is logged without secrets.

Routes raise HTTPException at the edge; Moot's own errors map to statuses here: a spec that does not hold
is 422, a name in use or a room in the wrong state 409, an unreachable database 503.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moot.exceptions import ConfigError, MootError
from moot.service.limits import RateLimited
from moot.service.runtime import Conflict, Unavailable
from moot.store import NameTaken, RoomNotFound, StoreError

logger = logging.getLogger("moot.service")
# Names pydantic gives union branches in a location: constrained-str, function-after[...], str, ModelIn.
_BRANCH = re.compile(r"\w+-[\w-]+(\[.*\])?|\w+\[.*\]|str|int|float|bool|none|ModelIn")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {
        "error": {
            "code": code or _CODES.get(status, HTTPStatus(status).phrase.lower().replace(" ", "_")),
            "message": message,
            "details": details,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = "no such endpoint; the API is under /api/v1 and described at /docs"
    elif exc.status_code == 405:
        allowed = _allowed_methods(request)
        message = (
            f"this endpoint takes {', '.join(allowed)}, not {request.method}; /docs shows what each does"
        )
        return error_response(405, message, headers={"Allow": ", ".join(allowed)})
    return error_response(exc.status_code, message, headers=exc.headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of this path takes. FastAPI has one route per method, and Starlette's 405
    names only the first route's, so each method is tried against the routes."""
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    ]


def _field(loc: Sequence[Any]) -> str:
    """`agents[0].model` from pydantic's location, without union branch names and the leading "body"."""
    path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not _BRANCH.fullmatch(str(part)):
            path += f".{part}" if path else str(part)
    return path or "body"


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "json_invalid":
        reason = error.get("ctx", {}).get("error", "unreadable")
        return f"the body is not valid JSON ({reason} at character {error['loc'][-1]})"
    return str(error["msg"]).removeprefix("Value error, ")


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 naming each field and what is wrong; the inputs are not echoed (they may hold a key)."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if len(errors) > 1:  # a mapping given for `str | Model`: the string branch's complaint is noise
        errors = [
            e for e in errors if not (e["type"] == "string_type" and _BRANCH.fullmatch(str(e["loc"][-1])))
        ]
    details = [
        {
            "field": "body" if e["type"] == "json_invalid" else _field(e["loc"]),
            "message": _message(e),
            "type": e["type"],
        }
        for e in errors
    ]
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5]) or "the request is not valid"
    return error_response(422, message, details=details)


async def _moot_error(_request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, Conflict):
        return error_response(409, str(exc), details={"state": exc.state, "allowed": list(exc.allowed)})
    if isinstance(exc, RateLimited):
        return error_response(
            429,
            str(exc),
            details={"retry_after": exc.retry_after},
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, NameTaken):
        return error_response(409, str(exc), code="name_taken")
    if isinstance(exc, Unavailable):
        return error_response(503, str(exc), code="unavailable")
    if isinstance(exc, RoomNotFound):
        return error_response(404, f"no room '{exc.room_id}'")
    if isinstance(exc, ConfigError):
        return error_response(422, str(exc), code="invalid")
    if isinstance(exc, StoreError):
        logger.error("database error: %s", exc)
        return error_response(503, "the database cannot be reached now; try again", code="unavailable")
    return error_response(400, str(exc), code="bad_request")


class CatchAll:
    """The outermost middleware: a bug answers 500 with the error shape, and its traceback is logged
    without the exception's message (which could hold anything, keys included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            logger.error(
                "%s %s failed: %s\n%s",
                scope.get("method"),
                scope.get("path"),
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            if not started:
                await error_response(500, "the server failed; this is a bug, and it was logged")(
                    scope, receive, send
                )


class BodyLimit:
    """Refuses bodies over `max_bytes` with 413: at once by Content-Length, else as they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is over the limit of {self.max_bytes} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await error_response(413, too_large)(scope, receive, send)
                return
        seen = 0

        async def receiving() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, too_large)
            return message

        await self.app(scope, receiving, send)


Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]


def install(app: FastAPI, *, max_body_bytes: int) -> None:
    """Adds the error handlers and the two middlewares (the catch-all outermost)."""
    handlers: dict[type[Exception], Handler] = {
        HTTPException: _http_error,
        RequestValidationError: _validation_error,
        MootError: _moot_error,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(CatchAll)
