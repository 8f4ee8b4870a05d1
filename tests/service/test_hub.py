"""The hub: replay from any seq without a gap or a duplicate, bounded subscribers, the log's cap and grace."""

from __future__ import annotations

import asyncio

from moot.durable import DurableRun
from moot.events import Event, RoomCompleted, TurnCompleted, TurnDelta
from moot.service.hub import RoomHub
from moot.store import Store
from service._live_support import (  # noqa: F401 (store_fixture is the `store` fixture)
    board,
    collect,
    publish_run,
    same_events,
    store_fixture,
)


def deltas(count: int, start: int = 1) -> list[Event]:
    return [
        TurnDelta(seq=start + i, turn_id="r1:speech:Ana", round=1, speaker="Ana", text=f"w{i} ")
        for i in range(count)
    ]


async def test_a_reader_joining_mid_turn_gets_exactly_the_rest(store: Store) -> None:
    # covers: B14
    room_id = (await store.create_room(board(speed=400))).id
    hub = RoomHub(store, room_id)
    published: list[Event] = []
    reader: asyncio.Task[list[Event]] | None = None
    after = 0
    hub.begin()
    async for event in DurableRun(store, room_id):
        published.append(event)
        hub.publish(event)
        if reader is None and isinstance(event, TurnDelta) and event.text and len(published) > 8:
            after = event.seq - 2  # two deltas of the opening in flight are behind this reader
            reader = asyncio.create_task(collect(hub.subscribe(after)))
    hub.close()
    assert reader is not None
    got = await reader
    assert same_events(got) == same_events(e for e in published if e.seq > after)
    assert [e.type for e in got[:2]] == ["turn_delta", "turn_delta"]
    assert isinstance(got[-1], RoomCompleted)


async def test_replay_joins_stored_events_and_the_log_without_gap_or_duplicate(store: Store) -> None:
    # covers: B14
    room_id = (await store.create_room(board())).id
    hub = RoomHub(store, room_id)
    first = await publish_run(
        hub, DurableRun(store, room_id), pause_after=60
    )  # run 1: stored, its log replaced
    assert first[-1].type == "room_paused"
    second_run = asyncio.create_task(publish_run(hub, DurableRun(store, room_id)))
    await asyncio.sleep(0)
    readers = {after: hub.subscribe(after) for after in (0, 30, first[-1].seq - 1)}
    second = await second_run
    assert second[0].seq == first[-1].seq + 1
    stored_first = [e for e in first if not isinstance(e, TurnDelta)]  # deltas are never stored
    for after, sub in readers.items():
        got = await collect(sub)
        seqs = [e.seq for e in got]
        assert seqs == sorted(set(seqs))  # in order, each once
        assert same_events(got) == same_events([e for e in stored_first if e.seq > after] + second)
    assert isinstance(second[-1], RoomCompleted)


async def test_a_reader_registered_before_a_run_begins_misses_nothing(store: Store) -> None:
    room_id = (await store.create_room(board())).id
    hub = RoomHub(store, room_id)
    first = await publish_run(hub, DurableRun(store, room_id), pause_after=40)
    hub = RoomHub(store, room_id)  # a new process: nothing of run 1 in memory
    follower = hub.subscribe(0, follow=True)
    second = await publish_run(hub, DurableRun(store, room_id))
    stored = [e for e in first if not isinstance(e, TurnDelta)]
    got: list[Event] = []
    has_all = asyncio.Event()

    async def follow() -> None:
        async with follower:
            async for event in follower:
                got.append(event)
                if len(got) == len(stored) + len(second):
                    has_all.set()

    follower_task = asyncio.create_task(follow())
    await has_all.wait()  # every event so far, and the run is over...
    for _ in range(20):
        await asyncio.sleep(0)  # ...yet the follower stays, waiting for the next run
    assert not follower_task.done()
    hub.dispose()
    await follower_task
    assert same_events(got) == same_events(stored + second)


async def test_a_slow_reader_is_cut_with_a_notice_and_nobody_waits_for_it(store: Store) -> None:
    # covers: B14
    hub = RoomHub(store, "room", queue_size=16)
    hub.begin()
    slow = hub.subscribe(0)
    fast: list[Event] = []
    reading = asyncio.Event()

    async def read_fast() -> None:
        async with hub.subscribe(0) as sub:
            async for event in sub:
                fast.append(event)
                reading.set()

    fast_reader = asyncio.create_task(read_fast())
    events = deltas(1000)
    hub.publish(events[0])
    await reading.wait()  # the fast reader has replayed (nothing) from the store and reads live
    for event in events[1:]:
        hub.publish(event)  # synchronous: it cannot wait for anyone
        if event.seq % 8 == 0:
            await asyncio.sleep(0)  # the fast reader keeps up; the slow one never reads
    assert hub.subscribers == 1  # the slow reader was dropped at once; only its buffer is held
    hub.close()
    await fast_reader
    assert same_events(fast) == same_events(events)
    got = await collect(slow)
    assert len(got) == 16  # what it held when it fell behind, no more: memory stays bounded
    assert slow.lagged
    assert slow.reason is not None
    assert "reconnect" in slow.reason
    assert slow.last_seq == got[-1].seq
    rest = await collect(hub.subscribe(slow.last_seq))  # reconnecting with its last id
    assert same_events(got + rest) == same_events(events)


async def test_the_log_drops_deltas_of_ended_turns_past_its_cap(store: Store) -> None:
    room_id = (await store.create_room(board())).id
    hub = RoomHub(store, room_id, cap=50)
    published = await publish_run(hub, DurableRun(store, room_id))
    assert hub.log_size < 100  # hundreds of deltas went by
    got = await collect(hub.subscribe(0))
    assert [e for e in got if not isinstance(e, TurnDelta)] == [
        e for e in published if not isinstance(e, TurnDelta)
    ]
    completed = [e.text for e in got if isinstance(e, TurnCompleted)]
    assert len(completed) == 8  # every turn's whole text is kept: opening, 2 x 2 speeches, 2 summaries, end
    seqs = [e.seq for e in got]
    assert seqs == sorted(set(seqs))


async def test_after_the_grace_period_replay_comes_from_the_store(store: Store) -> None:
    room_id = (await store.create_room(board())).id
    idle: list[RoomHub] = []
    gone = asyncio.Event()

    def on_idle(hub: RoomHub) -> None:
        idle.append(hub)
        gone.set()

    hub = RoomHub(store, room_id, grace=0.05, on_idle=on_idle)
    published = await publish_run(hub, DurableRun(store, room_id))
    within = await collect(hub.subscribe(0))  # a finished run: everything, then the end
    assert same_events(within) == same_events(published)
    await gone.wait()  # the grace period ran out and nobody watches: the hub said it is idle
    assert hub.log_size == 0
    assert idle == [hub]
    later = await collect(hub.subscribe(0))
    assert same_events(later) == same_events(e for e in published if not isinstance(e, TurnDelta))
