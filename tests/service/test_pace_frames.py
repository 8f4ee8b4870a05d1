"""Joined frames: a turn's deltas go out together, in seq order, and a client that reconnects mid-turn ends
with exactly the events, and so the text, of one that never left."""

from __future__ import annotations

from collections import defaultdict

from moot.events import Event, TurnDelta, TurnFailed, TurnStarted
from moot.service.hub import RoomHub
from moot.store import Store
from service._live_support import (  # noqa: F401 (store_fixture is the `store` fixture)
    board,
    collect,
    same_events,
    store_fixture,
)


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


async def test_pace_frames_join_deltas_and_a_reconnect_mid_turn_ends_with_the_same_text(store: Store) -> None:
    room_id = (await store.create_room(board())).id
    hub = RoomHub(store, room_id, frame=0.05)
    hub.begin()
    uncut = hub.subscribe(0)
    cut = hub.subscribe(0)
    for event in (started(1, "Ana"), started(2, "Ben"), delta(3, "Ana"), delta(4, "Ben"), delta(5, "Ana")):
        hub.publish(event)
    got = [await anext(cut), await anext(cut)]
    assert [e.seq for e in got] == [1, 2]  # the turns' starts went out at once
    first, second = await anext(cut), await anext(cut)  # out when their time is up: nothing pushed them
    assert isinstance(first, TurnDelta) and isinstance(second, TurnDelta)
    assert (first.seq, first.speaker, first.text) == (4, "Ben", "Ben4 ")  # in seq order, of their last deltas
    assert (second.seq, second.speaker, second.text) == (5, "Ana", "Ana3 Ana5 ")  # joined: the last one's seq
    got += [first, second]
    cut.close()  # the client leaves mid-turn, and comes back after the last seq it has
    hub.publish(delta(6, "Ben"))
    hub.publish(delta(7, "Ana"))
    hub.publish(delta(8, "Ben"))
    failed = TurnFailed(
        seq=9, turn_id="r1:speech:Ana", round=1, kind="speech", speaker="Ana", error="x", error_type="X"
    )
    hub.publish(failed)  # not a delta: the frames waiting go first, in seq order
    back = hub.subscribe(max(e.seq for e in got))
    hub.publish(delta(10, "Ben"))
    hub.close()  # the end sends what waits
    whole, rest = await collect(uncut), await collect(back)
    assert same_events(got + rest) == same_events(whole)
    assert [e.seq for e in whole] == sorted({e.seq for e in whole})
    assert [(e.seq, e.type) for e in whole[4:]] == [
        (7, "turn_delta"),
        (8, "turn_delta"),
        (9, "turn_failed"),
        (10, "turn_delta"),
    ]
    assert texts(whole) == texts(got + rest) == {"Ana": "Ana3 Ana5 Ana7 ", "Ben": "Ben4 Ben6 Ben8 Ben10 "}


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
