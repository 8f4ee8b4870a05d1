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
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, WebSocket, WebSocketDisconnect, status
from pydantic import ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent

from moot.events import Event, event_json
from moot.exceptions import MootError
from moot.prompts import is_stop_command
from moot.service.auth import at_least
from moot.service.deps import (
    ManagerDep,
    OwnedRoom,
    User,
    get_manager,
    get_store,
    owned_room,
    token_of,
    user_for_token,
)
from moot.service.hub import Subscription
from moot.service.runtime import Conflict, RoomManager
from moot.service.schemas import MessageCreate

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/rooms", tags=["streams"])

PING_SECONDS = 15.0  # `app.state.stream_ping` overrides it (tests)
SEND_TIMEOUT = 30.0  # a client that takes no bytes for this long is dropped
WS_BEHIND = 1013  # "try again later": the client fell behind and should reconnect with ?after=
WS_UNAUTHORIZED = 4401
WS_NOT_FOUND = 4404

AfterQuery = Annotated[int | None, Query(ge=0, description="Resume after this seq (Last-Event-ID wins).")]
FollowQuery = Annotated[bool, Query(description="Stay open for the room's next run instead of ending.")]


def _sse_frame(event: Event) -> str:
    """One event as an SSE frame; its JSON holds no line break, so `data:` is one line."""
    return f"id: {event.seq}\r\nevent: {event.type}\r\ndata: {event_json(event)}\r\n\r\n"


def _reconnect(sub: Subscription) -> dict[str, Any]:
    return {"type": "reconnect", "reason": sub.reason, "after": sub.last_seq}


# ---- SSE ----------------------------------------------------------------------------------------------------


@router.get(
    "/{room_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def room_events(
    request: Request,
    room: OwnedRoom,
    manager: ManagerDep,
    after: AfterQuery = None,
    follow: FollowQuery = False,
    last_event_id: Annotated[
        str | None, Header(description="The last seq received; resumes after it.")
    ] = None,
) -> EventSourceResponse:
    """The room's events as Server-Sent Events: replay after a seq, then live.

    Ends once the run is over and everything was sent, unless `follow`. A client that falls behind gets a
    final `reconnect` event and should reconnect with its Last-Event-ID. A comment keeps proxies open.
    """
    start = after or 0
    if last_event_id is not None:
        if not last_event_id.strip().isdecimal():
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "Last-Event-ID must be an event's seq")
        start = int(last_event_id)

    async def stream() -> AsyncIterator[bytes]:
        async with manager.hub(room.id).subscribe(start, follow=follow) as sub:  # here: a HEAD never reads it
            async for event in sub:
                yield "".join(map(_sse_frame, [event, *sub.ready()])).encode()
            if sub.lagged:
                yield ServerSentEvent(data=json.dumps(_reconnect(sub)), event="reconnect").encode()

    return EventSourceResponse(
        stream(),
        ping=getattr(request.app.state, "stream_ping", PING_SECONDS),
        send_timeout=SEND_TIMEOUT,
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
    header; without one the socket closes with 4401, for a room not yours with 4404.
    """
    store, manager = get_store(websocket), get_manager(websocket)
    await websocket.accept()
    user = await user_for_token(token_of(websocket), store)
    if user is None:
        await websocket.close(WS_UNAUTHORIZED, "a valid API token is required: ?token= or a bearer header")
        return
    try:
        await owned_room(room_id, user, store)
    except HTTPException as exc:
        await websocket.close(WS_NOT_FOUND, str(exc.detail)[:120])
        return
    sub = manager.hub(room_id).subscribe(after or 0, follow=follow)
    lock = asyncio.Lock()

    async def send(frame: dict[str, Any] | str) -> None:
        async with lock:  # events and replies come from two tasks; frames must not interleave
            await websocket.send_text(frame if isinstance(frame, str) else json.dumps(frame))

    async def pump() -> None:
        async with sub:
            async for event in sub:
                await send(event_json(event))
        if sub.lagged:
            await send(_reconnect(sub))
            await websocket.close(WS_BEHIND, f"fell behind; reconnect with ?after={sub.last_seq}")
        else:
            await websocket.close(1000, "the run is over")

    async def listen() -> None:
        while True:
            await send(await _command(await websocket.receive_text(), room_id, user, manager))

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
                logger.warning("room %s: a WebSocket ended on %r", room_id, outcome)


async def _command(text: str, room_id: str, user: User, manager: RoomManager) -> dict[str, Any]:
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
            ref = await manager.intervene(room_id, body.text, body.author or user.name)
            return {"type": "ack", "command": kind, "id": ref, "stop": is_stop_command(body.text)}
        if kind == "pause":
            await manager.pause(room_id)
        elif kind == "stop":
            await manager.stop(room_id)
        else:
            await manager.run(room_id)
    except Conflict as exc:
        return {
            "type": "error",
            "command": kind,
            "message": str(exc),
            "state": exc.state,
            "allowed": list(exc.allowed),
        }
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors())
        return {"type": "error", "command": kind, "message": problems}
    except (MootError, ValueError) as exc:
        return {"type": "error", "command": kind, "message": str(exc)}
    return {"type": "ack", "command": kind}
