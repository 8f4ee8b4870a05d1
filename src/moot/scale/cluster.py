"""The scaled-out mode as `moot serve` sees it: no room runs here; requests go to the workers through Redis
and each watched room's hub is fed from the room's Redis stream, so the routes stay as they are."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from redis.asyncio import Redis

from moot.events import Event
from moot.exceptions import MootError
from moot.scale.bus import EventReader, RunQueue, send_control
from moot.service.hub import RoomHub
from moot.store import RunStore

logger = logging.getLogger(__name__)


class Cluster:
    """What a `moot serve` process of the scaled-out mode shares with the workers."""

    def __init__(self, redis: Redis, store: RunStore, *, takeover: float) -> None:
        self.redis = redis
        self.store = store
        self.takeover = takeover
        self.queue = RunQueue(redis)
        self.reader = EventReader(redis, self._stored_after)
        self._checks: set[asyncio.Task[None]] = set()

    async def enqueue(self, room_id: str, trace: Mapping[str, str] | None = None) -> None:
        await self.queue.enqueue(room_id, trace)

    async def pause(self, room_id: str, reason: str) -> None:
        await send_control(self.redis, room_id, "pause", reason)

    async def words(self, room_id: str) -> None:
        await send_control(self.redis, room_id, "words")

    async def _stored_after(self, room_id: str, after: int) -> list[Event]:
        return await self.store.events_after(room_id, after)

    def watch(self, hub: RoomHub) -> None:
        """Feeds the hub from the room's stream. It counts as live until the stream and the database have
        been read: a client that subscribes now is not ended before it is known whether the room runs."""
        hub.begin()
        hub.settled.clear()  # its subscribers read the database once the stream has been read
        caught_up = self.reader.watch(hub.room_id, hub)
        task = asyncio.create_task(self._settle(hub, caught_up), name=f"moot-watch-{hub.room_id}")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _settle(self, hub: RoomHub, caught_up: asyncio.Event) -> None:
        """Once the stream is read: no run open in it and none stored as running, the hub is not live."""
        from moot.service.runtime import state_of

        try:  # Redis away: after the takeover time clients get what the database has, then live events
            await asyncio.wait_for(caught_up.wait(), self.takeover)
        except TimeoutError:
            logger.warning("room %s: its Redis stream could not be read yet", hub.room_id)
        finally:
            hub.settled.set()
        if self.reader.is_open(hub.room_id):
            return
        try:
            running = state_of(await self.store.get_room(hub.room_id)) == "running"
        except MootError as exc:
            logger.warning("room %s: its state could not be read: %s", hub.room_id, exc)
            running = False
        if not running and not self.reader.is_open(hub.room_id) and hub.live:
            hub.close()

    def unwatch(self, room_id: str) -> None:
        self.reader.unwatch(room_id)

    async def close(self) -> None:
        for task in list(self._checks):
            task.cancel()
        await self.reader.close()
        await self.redis.aclose()
