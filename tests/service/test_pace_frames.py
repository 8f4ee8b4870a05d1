"""Joined frames: a turn's deltas go out together, in seq order, and a client that reconnects mid-turn ends
with exactly the events, and so the text, of one that never left."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from moot.events import Event, TurnDelta, TurnFailed, TurnStarted
from moot.service.hub import RoomHub
from moot.store import Store
from service._live_support import (  # noqa: F401 (store_fixture is the `store` fixture)
    BOARD,
    board,
    collect,
    same_events,
    store_fixture,
)
from service.helpers import STREAM_TIMEOUT, LiveServer, frames

HANG = 120  # seconds after which a wait that never ends fails the test; never a pace the test relies on


def started(seq: int, speaker: str) -> TurnStarted:
    return TurnStarted(
        seq=seq, turn_id=f"r1:speech:{speaker}", round=1, kind="speech", speaker=speaker, model="m"
    )


def delta(seq: int, speaker: str) -> TurnDelta:
    return TurnDelta(
        seq=seq, turn_id=f"r1:speech:{speaker}", round=1, speaker=speaker, text=f"{speaker}{seq} "
    )


def texts(events: list[Event]) -> dict[str, str]:
    said: dict[str, str] = defaultdict(str)
    for event in events:
        if isinstance(event, TurnDelta):
            said[event.speaker] += event.text
    return dict(said)


async def test_pace_first_delta_not_held_frames_join_the_rest_and_a_reconnect_mid_turn_ends_with_the_same_text(
    store: Store,
) -> None:
    room_id = (await store.create_room(board())).id
    hub = RoomHub(store, room_id, frame=0.05)
    hub.begin()
    uncut = hub.subscribe(0)
    cut = hub.subscribe(0)
    for event in (started(1, "Ana"), started(2, "Ben"), delta(3, "Ana"), delta(4, "Ben"), delta(5, "Ana")):
        hub.publish(event)
    got = [await anext(cut) for _ in range(4)]
    # the turns' starts and each turn's first delta went out at once, in seq order
    assert [(e.seq, e.type) for e in got] == [
        (1, "turn_started"),
        (2, "turn_started"),
        (3, "turn_delta"),
        (4, "turn_delta"),
    ]
    hub.publish(delta(6, "Ana"))
    first = await anext(cut)  # out when its time is up: nothing pushed it
    assert isinstance(first, TurnDelta)
    assert (first.seq, first.speaker, first.text) == (6, "Ana", "Ana5 Ana6 ")  # joined: the last one's seq
    got.append(first)
    cut.close()  # the client leaves mid-turn, and comes back after the last seq it has
    hub.publish(delta(7, "Ben"))
    hub.publish(delta(8, "Ana"))
    hub.publish(delta(9, "Ben"))
    failed = TurnFailed(
        seq=10, turn_id="r1:speech:Ana", round=1, kind="speech", speaker="Ana", error="x", error_type="X"
    )
    hub.publish(failed)  # not a delta: the frames waiting go first, in seq order
    back = hub.subscribe(max(e.seq for e in got))
    hub.publish(delta(11, "Ben"))
    hub.close()  # the end sends what waits
    whole, rest = await collect(uncut), await collect(back)
    assert same_events(got + rest) == same_events(whole)
    assert [e.seq for e in whole] == sorted({e.seq for e in whole})
    assert [(e.seq, e.type) for e in whole[5:]] == [
        (8, "turn_delta"),  # Ana's 8 and Ben's 7 and 9: frames in seq order of their last deltas
        (9, "turn_delta"),
        (10, "turn_failed"),
        (11, "turn_delta"),
    ]
    assert (
        texts(whole) == texts(got + rest) == {"Ana": "Ana3 Ana5 Ana6 Ana8 ", "Ben": "Ben4 Ben7 Ben9 Ben11 "}
    )


async def test_pace_frame_zero_sends_each_delta_as_it_comes(store: Store) -> None:
    room_id = (await store.create_room(board())).id
    hub = RoomHub(store, room_id, frame=0)
    hub.begin()
    sub = hub.subscribe(0)
    for event in (started(1, "Ana"), delta(2, "Ana"), delta(3, "Ana")):
        hub.publish(event)
    hub.close()
    got = await collect(sub)
    assert [(e.seq, e.type) for e in got] == [(1, "turn_started"), (2, "turn_delta"), (3, "turn_delta")]


async def test_pace_sse_writer_streams_without_a_length_pings_and_lets_go_of_a_client_that_left(
    server: LiveServer,
) -> None:
    server.app.state.stream_ping = 0.2
    async with server.client(await server.new_user("ana")) as http:
        answer = await http.post("/rooms", json=BOARD)
        assert answer.status_code == 201, answer.text
        room_id = answer.json()["id"]
        hub = server.app.state.manager.hub(room_id)
        buffer = b""
        async with http.stream(
            "GET", f"/rooms/{room_id}/events", params={"follow": "true"}, timeout=STREAM_TIMEOUT
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.headers["cache-control"] == "no-store"
            assert "content-length" not in stream.headers
            async for chunk in stream.aiter_raw():  # until a keep-alive comment came, however long
                buffer += chunk
                if any(c.startswith("ping") for c in frames(buffer)[1]):
                    break
            assert hub.subscribers == 1
        deadline = time.monotonic() + HANG  # the client left: its subscription ends with it
        while hub.subscribers:
            assert time.monotonic() < deadline, "the stream kept its subscription after the client left"
            await asyncio.sleep(0.02)
