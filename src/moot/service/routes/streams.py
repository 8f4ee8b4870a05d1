"""A room's events live: SSE and WebSocket, both thin adapters over a hub subscription (decision 0004).

    GET /api/v1/rooms/{id}/events   SSE: `id:` = seq, `event:` = type, `data:` = the event's JSON
    WS  /api/v1/rooms/{id}/ws       the same events as JSON text frames; takes intervene/pause/stop/run

Both resume after a seq (`Last-Event-ID` or `?after=N`) with exactly the events a client that never left has.
A client that falls behind is cut with a `reconnect` notice naming its last seq; it never slows the room or
the other clients, and a send that fails ends only that client's connection (B14).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, WebSocket, WebSocketDisconnect, status
from pydantic import ValidationError
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from moot import tracing
from moot.engine import MAX_INTERVENTION_CHARS
from moot.events import Event, event_json
from moot.exceptions import MootError
from moot.prompts import is_stop_command
from moot.service.auth import at_least
from moot.service.deps import (
    CurrentUser,
    ManagerDep,
    OwnedRoom,
    User,
    get_limiter,
    get_manager,
    get_store,
    owned_room,
    token_of,
    user_for_token,
)
from moot.service.hub import Subscription
from moot.service.limits import InterventionLimiter, RateLimited
from moot.service.runtime import Conflict, RoomManager
from moot.service.schemas import MessageCreate

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/rooms", tags=["streams"])

PING_SECONDS = 15.0  # `app.state.stream_ping` overrides it (tests)
RIGHTS_SECONDS = 30.0  # a stream re-checks its token this often; `app.state.rights_recheck` overrides it
SEND_TIMEOUT = 30.0  # a client that takes no bytes for this long is dropped; `app.state.send_timeout` too
MAX_SEQ = 2**31 - 1  # the largest seq the databases keep
# Room for the longest intervention with every character escaped (an emoji takes 12) and its fields.
MAX_FRAME_CHARS = 12 * MAX_INTERVENTION_CHARS + 4096
WS_UNSUPPORTED = 1003  # a binary frame
WS_INVALID = 1007  # a frame that cannot be read as a message
WS_TOO_BIG = 1009
WS_BEHIND = 1013  # "try again later": the client fell behind and should reconnect with ?after=
WS_BAD_REQUEST = 4400
WS_UNAUTHORIZED = 4401
WS_NOT_FOUND = 4404

AfterQuery = Annotated[
    str | None,
    Query(
        description=f"Resume after this seq, a whole number from 0 to {MAX_SEQ} (Last-Event-ID wins).",
        examples=["0"],
    ),
]
FollowQuery = Annotated[bool, Query(description="Stay open for the room's next run instead of ending.")]


def parse_seq(value: str | None, where: str) -> int | None:
    """A seq a client resumes after; HTTPException 400 saying what is allowed when it is not one."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_SEQ)) or int(text) > MAX_SEQ:
        shown = text[:20] + ("…" if len(text) > 20 else "")
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"{where} must be the seq of an event, a whole number from 0 to {MAX_SEQ}; got '{shown}'",
        )
    return int(text)


def _sse_frame(event: Event) -> str:
    """One event as an SSE frame; its JSON holds no line break, so `data:` is one line."""
    return f"id: {event.seq}\r\nevent: {event.type}\r\ndata: {event_json(event)}\r\n\r\n"


class EventStream(Response):
    """Server-Sent Events written straight to the ASGI server: one body message per batch of ready frames.

    Lighter than a general SSE response's per-send cancel scope (a stream sends a few frames per second per
    room): the client's disconnect is heard by one waiting task, and one watchdog task wakes when the next
    thing is due: a comment after `ping` seconds without a send, or the end of the stream when a send has
    taken `send_timeout` seconds (a client that takes no bytes), so such a client is dropped on time.
    """

    media_type = "text/event-stream"

    def __init__(
        self, frames: AsyncGenerator[bytes], *, ping: float, send_timeout: float, status_code: int = 200
    ) -> None:
        """`status_code` is there for the API description, which reads the default from here."""
        self.frames = frames
        self.ping = ping
        self.send_timeout = send_timeout
        self.status_code = status_code
        self.background = None
        self.init_headers(  # no body yet: no Content-Length
            {"Cache-Control": "no-store", "Connection": "keep-alive", "X-Accel-Buffering": "no"}
        )
        self._sent_at = 0.0  # when the last send ended
        self._sending_since: float | None = None  # when the send in progress began

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        lock = asyncio.Lock()  # frames and keep-alives come from two tasks
        writer = asyncio.create_task(self._write(send, lock))
        helpers = [
            asyncio.create_task(self._hear_disconnect(receive)),
            asyncio.create_task(self._watch(send, lock, writer)),
        ]
        try:
            await asyncio.wait([writer, helpers[0]], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (writer, *helpers):
                task.cancel()
            await asyncio.gather(writer, *helpers, return_exceptions=True)
        if writer.cancelled():
            return  # the client left or took no bytes: that ends this stream only (B14)
        failed = writer.exception()
        if failed is not None:
            if not isinstance(failed, OSError):
                logger.warning("a room's event stream ended on %s", type(failed).__name__, exc_info=failed)
            return
        await send({"type": "http.response.body", "body": b""})

    async def _write(self, send: Send, lock: asyncio.Lock) -> None:
        try:
            async for frame in self.frames:
                async with lock:  # timed for the watchdog: two clock reads, no timer
                    self._sending_since = time.monotonic()
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                    self._sent_at, self._sending_since = time.monotonic(), None
        finally:
            await self.frames.aclose()

    async def _hear_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _watch(self, send: Send, lock: asyncio.Lock, writer: asyncio.Task[None]) -> None:
        """Sleeps until the next thing is due: the deadline of the send in progress, else the keep-alive.

        Idle, it sleeps at most `send_timeout` at a time, so a send that begins meanwhile is seen in time
        and then given exactly the rest of its `send_timeout`. A keep-alive is itself a send under the
        same deadline: this task never waits on a stalled client for longer either.
        """
        self._sent_at = time.monotonic()
        while True:
            now = time.monotonic()
            since = self._sending_since
            if since is not None:
                if now - since >= self.send_timeout:
                    self._drop(writer)
                    return
                await asyncio.sleep(since + self.send_timeout - now)
            elif now - self._sent_at >= self.ping:
                async with lock:  # free: the writer holds it only while it sends
                    try:
                        async with asyncio.timeout(self.send_timeout):
                            await send(
                                {"type": "http.response.body", "body": b": ping\r\n\r\n", "more_body": True}
                            )
                        self._sent_at = time.monotonic()
                    except TimeoutError:
                        self._drop(writer)
                        return
            else:
                await asyncio.sleep(min(self._sent_at + self.ping - now, self.send_timeout))

    def _drop(self, writer: asyncio.Task[None]) -> None:
        """Ends the stream of a client that takes no bytes (the server then closes its connection)."""
        logger.info("an event stream's client took no bytes for %g s; it is dropped", self.send_timeout)
        writer.cancel()


def _reconnect(sub: Subscription) -> dict[str, Any]:
    return {"type": "reconnect", "reason": sub.reason, "after": sub.last_seq}


class _Rights:
    """Whether the connection's token still opens this room: checked again on every control message and,
    for the events, at most every `every` seconds, so a revoked token, a deleted user or a room that is no
    longer theirs does not keep a stream open for ever (L15)."""

    def __init__(self, connection: HTTPConnection, room_id: str, token: str | None, user: User) -> None:
        self.store = get_store(connection)
        self.room_id = room_id
        self.token = token
        self.user = user
        self.every = float(getattr(connection.app.state, "rights_recheck", RIGHTS_SECONDS))
        self._checked = time.monotonic()

    async def check(self) -> tuple[int, str] | None:
        """None while the rights hold (the user's level refreshed); else the close code and reason."""
        self._checked = time.monotonic()
        user = await user_for_token(self.token, self.store)
        if user is None:
            return WS_UNAUTHORIZED, "this token no longer works (renewed, or its user deleted); sign in again"
        try:
            await owned_room(self.room_id, user, self.store)
        except HTTPException as exc:
            return WS_NOT_FOUND, str(exc.detail)[:120]
        self.user = user
        return None

    def due(self) -> bool:
        """Whether `every` seconds have passed since the last check."""
        return time.monotonic() - self._checked >= self.every

    async def check_now_and_then(self) -> tuple[int, str] | None:
        if not self.due():
            return None
        return await self.check()


# ---- SSE ----------------------------------------------------------------------------------------------------


@router.get(
    "/{room_id}/events",
    response_class=EventStream,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def room_events(
    request: Request,
    room: OwnedRoom,
    user: CurrentUser,
    manager: ManagerDep,
    after: AfterQuery = None,
    follow: FollowQuery = False,
    last_event_id: Annotated[
        str | None, Header(description="The last seq received; resumes after it.")
    ] = None,
) -> EventStream:
    """The room's events as Server-Sent Events: replay after a seq, then live.

    Ends once the run is over and everything was sent, unless `follow`. A client that falls behind gets a
    final `reconnect` event and should reconnect with its Last-Event-ID. A comment keeps proxies open.
    A stream whose token stops working (renewed, or its user deleted) ends.
    """
    start = parse_seq(after, "?after=") or 0
    if last_event_id is not None:
        start = parse_seq(last_event_id, "Last-Event-ID") or 0
    rights = _Rights(request, room.id, token_of(request), user)

    async def stream() -> AsyncGenerator[bytes]:
        async with manager.hub(room.id).subscribe(start, follow=follow) as sub:  # here: a HEAD never reads it
            async for event in sub:
                if rights.due() and await rights.check() is not None:
                    return
                yield "".join(map(_sse_frame, [event, *sub.ready()])).encode()
            if sub.lagged:
                yield f"event: reconnect\r\ndata: {json.dumps(_reconnect(sub))}\r\n\r\n".encode()

    return EventStream(
        stream(),
        ping=getattr(request.app.state, "stream_ping", PING_SECONDS),
        send_timeout=getattr(request.app.state, "send_timeout", SEND_TIMEOUT),
    )


# ---- WebSocket ----------------------------------------------------------------------------------------------


@router.websocket("/{room_id}/ws")
async def room_socket(
    websocket: WebSocket, room_id: str, after: AfterQuery = None, follow: bool = True
) -> None:
    """The room's events as JSON text frames, and the room steered from the same socket.

    Send `{"type": "intervene", "text": ..., "author"?: ...}`, `{"type": "pause"}`, `{"type": "stop"}` or
    `{"type": "run"}`; each gets `{"type": "ack", "command": ...}` or `{"type": "error", "message": ...}`.
    It follows the room across runs unless `?follow=false`. The token comes as `?token=` or as a bearer
    header; without one the socket closes with 4401, for a room not yours with 4404; both are checked again
    on every message. A binary frame closes it with 1003, one that is not readable JSON with 1007, one
    over the size limit with 1009.
    """
    store, manager = get_store(websocket), get_manager(websocket)
    await websocket.accept()
    token = token_of(websocket)
    user = await user_for_token(token, store)
    if user is None:
        await websocket.close(WS_UNAUTHORIZED, "a valid API token is required: ?token= or a bearer header")
        return
    try:
        await owned_room(room_id, user, store)
        start = parse_seq(after, "?after=") or 0
    except HTTPException as exc:
        code = WS_NOT_FOUND if exc.status_code == status.HTTP_404_NOT_FOUND else WS_BAD_REQUEST
        await websocket.close(code, str(exc.detail)[:120])
        return
    rights = _Rights(websocket, room_id, token, user)
    limiter = get_limiter(websocket)
    sub = manager.hub(room_id).subscribe(start, follow=follow)
    lock = asyncio.Lock()
    closed = False

    async def send(frame: dict[str, Any] | str) -> None:
        async with lock:  # events and replies come from two tasks; frames must not interleave
            if not closed:
                await websocket.send_text(frame if isinstance(frame, str) else json.dumps(frame))

    async def close(code: int, reason: str) -> None:
        nonlocal closed
        async with lock:
            if not closed:
                closed = True
                await websocket.close(code, reason[:120])  # a close reason has at most 123 bytes

    async def pump() -> None:
        async with sub:
            async for event in sub:
                refused = await rights.check_now_and_then()
                if refused is not None:
                    await close(*refused)
                    return
                await send(event_json(event))
        if sub.lagged:
            await send(_reconnect(sub))
            await close(WS_BEHIND, f"fell behind; reconnect with ?after={sub.last_seq}")
        else:
            await close(1000, "the run is over")

    async def listen() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            text = message.get("text")
            if text is None:
                await close(WS_UNSUPPORTED, "send JSON text frames; binary frames are not taken")
                return
            if len(text) > MAX_FRAME_CHARS:
                await close(WS_TOO_BIG, f"a message may have at most {MAX_FRAME_CHARS} characters")
                return
            refused = await rights.check()
            if refused is not None:
                await close(*refused)
                return
            try:
                reply = await _command(websocket, text, room_id, rights.user, manager, limiter)
            except RecursionError:
                await close(WS_INVALID, "this message is nested too deeply; send a flat JSON object")
                return
            await send(reply)

    tasks = [asyncio.create_task(pump()), asyncio.create_task(listen())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        sub.close()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            # A client gone mid-send or mid-read ends its own socket and nothing else (B14).
            if isinstance(outcome, Exception) and not isinstance(outcome, WebSocketDisconnect | OSError):
                logger.warning("room %s: a WebSocket ended on %s", room_id, type(outcome).__name__)


async def _command(
    websocket: WebSocket,
    text: str,
    room_id: str,
    user: User,
    manager: RoomManager,
    limiter: InterventionLimiter,
) -> dict[str, Any]:
    """Carries out one client message; the reply says what happened or what was wrong."""
    try:
        message = json.loads(text)
    except ValueError:
        message = None
    kind = message.get("type") if isinstance(message, dict) else None
    if not isinstance(message, dict) or kind not in ("intervene", "pause", "stop", "run"):
        return {
            "type": "error",
            "message": 'send a JSON object whose "type" is intervene (with "text"), pause, stop or run',
        }
    if not at_least(user, "member"):
        return {
            "type": "error",
            "command": kind,
            "message": f"your level is {user.role}; steering a room takes the level member or above",
        }
    try:
        if kind == "intervene":
            body = MessageCreate.model_validate({k: v for k, v in message.items() if k != "type"})
            await limiter.take(room_id, user.id)
            ref = await manager.intervene(room_id, body.text, body.author or user.name)
            return {"type": "ack", "command": kind, "id": ref, "stop": is_stop_command(body.text)}
        if kind == "pause":
            await manager.pause(room_id)
        else:  # a run it starts is the child of this command's span (a stopped room runs to conclude)
            with tracing.request(websocket, room_id, command=kind):
                await (manager.run(room_id) if kind == "run" else manager.stop(room_id))
    except Conflict as exc:
        return {
            "type": "error",
            "command": kind,
            "message": str(exc),
            "state": exc.state,
            "allowed": list(exc.allowed),
        }
    except RateLimited as exc:
        return {"type": "error", "command": kind, "message": str(exc), "retry_after": exc.retry_after}
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors())
        return {"type": "error", "command": kind, "message": problems}
    except (MootError, ValueError) as exc:
        return {"type": "error", "command": kind, "message": str(exc)}
    return {"type": "ack", "command": kind}
