"""The runtime: rooms run inside the server process, are steered while they run, and outlive the process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from moot.events import Event, InterventionAdded, RoomCompleted, RoomPaused, RoomStarted, TurnCompleted
from moot.models import Model
from moot.models.simulated import SimulatedModel
from moot.service.runtime import SHUTDOWN_REASON, WHILE_RUNNING, WHILE_STOPPED, Conflict, RoomManager
from moot.spec import RoomSpec
from moot.store import Store
from moot.testing.servers import FakeLLMServer
from service._live_support import (  # noqa: F401 (store_fixture is the `store` fixture)
    board,
    collect,
    store_fixture,
)
from store.helpers import dead_process, needs_proc
from store.helpers import owner as process_owner

QUESTION = "What happens to the on-call rota on Fridays?"


class Pace:
    """Simulated models at a pace a test can change between runs: slow to steer a run, then at once."""

    def __init__(self, speed: float) -> None:
        self.speed = speed

    def models(self, spec: RoomSpec) -> dict[str, Model]:
        return {
            agent.name: SimulatedModel(
                spec.model_for(agent).model_copy(update={"tokens_per_second": self.speed})
            )
            for agent in spec.agents
        }


Managers = Callable[..., RoomManager]


@pytest.fixture
async def managers(store: Store) -> AsyncIterator[Managers]:
    """Makes RoomManagers on the test's store (processes, in effect); each is shut down after the test."""
    made: list[RoomManager] = []

    def make(**options: Any) -> RoomManager:
        made.append(RoomManager(store, **options))
        return made[-1]

    yield make
    for manager in made:
        await manager.shutdown()


async def watch(manager: RoomManager, room_id: str) -> list[Event]:
    """Every event of the run in flight (from its first), until it ends."""
    return await collect(manager.hub(room_id).subscribe(0))


async def first_turn(manager: RoomManager, room_id: str) -> None:
    """Waits until the run in flight has stored a turn."""
    async with manager.hub(room_id).subscribe(0) as sub:
        async for event in sub:
            if isinstance(event, TurnCompleted):
                return


async def test_a_room_runs_here_to_its_end_and_is_counted(store: Store, managers: Managers) -> None:
    room_id = (await store.create_room(board())).id
    manager = managers()
    await manager.run(room_id)
    assert (await store.get_room(room_id)).status == "running"  # run() returns once it runs
    events = await watch(manager, room_id)
    assert isinstance(events[0], RoomStarted)
    assert isinstance(events[-1], RoomCompleted)
    assert not manager.is_running(room_id)
    assert (await store.get_room(room_id)).status == "completed"
    m = manager.metrics
    assert m.turns_completed == 8
    assert m.output_tokens == sum(e.usage.output_tokens for e in events if isinstance(e, TurnCompleted)) > 0
    assert m.first_token_seconds.count == m.turn_seconds.count == 8
    assert m.stream_clients == 0


async def test_run_pause_and_their_conflicts_name_the_state_and_what_is_allowed(
    store: Store, managers: Managers
) -> None:
    room_id = (await store.create_room(board())).id
    pace = Pace(100)
    manager = managers(models_for=pace.models)
    await manager.run(room_id)
    assert manager.running() == [room_id]
    with pytest.raises(Conflict) as running:
        await manager.run(room_id)
    assert running.value.state == "running"
    assert running.value.allowed == WHILE_RUNNING
    assert "already running" in str(running.value)
    assert "pause it, stop it or intervene" in str(running.value)

    reader = asyncio.create_task(watch(manager, room_id))
    await manager.pause(room_id)
    events = await reader
    assert isinstance(events[-1], RoomPaused)
    assert (await store.get_room(room_id)).status == "paused"  # stored by the time pause() returns
    with pytest.raises(Conflict) as paused:
        await manager.pause(room_id)
    assert paused.value.state == "paused"
    assert paused.value.allowed == WHILE_STOPPED
    assert "is paused, not running; you can run it, stop it (it concludes) or intervene" in str(paused.value)

    pace.speed = 0
    ref = await manager.intervene(room_id, QUESTION)  # not running here: stored, taken in on resume
    assert [p.id for p in await store.pending_interventions(room_id)] == [ref]
    await manager.run(room_id)
    events = await watch(manager, room_id)
    assert [e.text for e in events if isinstance(e, InterventionAdded)] == [QUESTION]
    assert isinstance(events[-1], RoomCompleted)

    with pytest.raises(Conflict) as completed:
        await manager.run(room_id)
    assert completed.value.state == "completed"
    assert completed.value.allowed == ()
    assert "is completed; nothing is left to run: read its events or export its transcript" in str(
        completed.value
    )
    with pytest.raises(Conflict, match="completed"):
        await manager.intervene(room_id, "one more thing")
    with pytest.raises(Conflict, match="completed"):
        await manager.stop(room_id)


async def test_a_room_held_by_another_process_is_not_run_here(store: Store, managers: Managers) -> None:
    room_id = (await store.create_room(board())).id
    assert await store.acquire(room_id, Store.new_owner(), 30)  # alive: this very process, another owner
    await store.update_room(room_id, status="running")
    manager = managers()
    with pytest.raises(Conflict) as busy:
        await manager.run(room_id)
    assert busy.value.state == "running"
    assert "already running in another process" in str(busy.value)
    with pytest.raises(Conflict, match="runs in another process; pause it there"):
        await manager.pause(room_id)
    await manager.stop(room_id)  # stored: the process that runs it takes it in
    assert [p.text for p in await store.pending_interventions(room_id)] == ["/stop"]


@pytest.mark.parametrize("how", ["stop", "intervene"])
async def test_stop_concludes_a_running_room(store: Store, managers: Managers, how: str) -> None:
    # covers: B9
    room_id = (await store.create_room(board())).id
    manager = managers(models_for=Pace(300).models)
    await manager.run(room_id)
    reader = asyncio.create_task(watch(manager, room_id))
    if how == "stop":
        await manager.stop(room_id)
    else:
        await manager.intervene(room_id, "停止讨论")
    events = await reader
    assert isinstance(events[-1], RoomCompleted)
    assert events[-1].stop_reason == "stop_command"
    record = await store.get_room(room_id)
    assert record.status == "completed"
    assert record.conclusion is not None


async def test_stop_runs_a_paused_room_so_that_it_concludes(store: Store, managers: Managers) -> None:
    # covers: B9
    room_id = (await store.create_room(board())).id
    pace = Pace(100)
    manager = managers(models_for=pace.models)
    await manager.run(room_id)
    await manager.pause(room_id)
    pace.speed = 0
    await manager.stop(room_id)
    assert manager.is_running(room_id)
    events = await watch(manager, room_id)
    assert [e.text for e in events if isinstance(e, InterventionAdded)] == ["/stop"]
    assert isinstance(events[-1], RoomCompleted)
    assert events[-1].stop_reason == "stop_command"
    assert (await store.get_room(room_id)).conclusion is not None


async def test_shutdown_pauses_and_the_next_process_resumes_to_the_end(
    store: Store, managers: Managers
) -> None:
    # covers: L10, L11
    ids = [(await store.create_room(board())).id for _ in range(2)]
    first = managers(models_for=Pace(100).models)
    for room_id in ids:
        await first.run(room_id)
    for room_id in ids:
        await first_turn(first, room_id)
    await first.shutdown()
    assert first.running() == []
    for room_id in ids:
        record = await store.get_room(room_id)
        assert (record.status, record.lease) == ("paused", None)
        last = (await store.events_after(room_id, await store.last_seq(room_id) - 1))[-1]
        assert isinstance(last, RoomPaused)
        assert last.reason == SHUTDOWN_REASON
    idle_room = (await store.create_room(board())).id  # never run: stays where it is
    second = managers(models_for=Pace(0).models)
    assert sorted(await second.start()) == sorted(ids)
    for room_id in ids:
        events = await watch(second, room_id)  # stored events of the first run, then the second run's
        starts = [e for e in events if isinstance(e, RoomStarted)]
        assert [start.resumed for start in starts] == [False, True]
        assert isinstance(events[-1], RoomCompleted)
        assert (await store.get_room(room_id)).status == "completed"
    assert (await store.get_room(idle_room)).status == "idle"


@needs_proc
async def test_start_resumes_a_room_whose_process_was_killed(store: Store, managers: Managers) -> None:
    # covers: L10, L14
    room_id = (await store.create_room(board())).id
    owner = process_owner(*await dead_process())  # named as a process of this machine names itself
    assert await store.acquire(
        room_id, owner, 60
    )  # a lease far from expiring, held by a process that is gone
    await store.update_room(room_id, status="running")
    manager = managers()
    assert await manager.start() == [room_id]
    events = await watch(manager, room_id)
    assert isinstance(events[-1], RoomCompleted)
    record = await store.get_room(room_id)
    assert (record.status, record.lease) == ("completed", None)


async def test_resolve_supplies_the_spec_a_room_runs_with(store: Store, managers: Managers) -> None:
    """The stored spec has no key; `resolve` fills it in memory only, as the REST side does for providers."""
    async with FakeLLMServer(api_key="sk-in-memory", reply_tokens=6) as server:
        stored: dict[str, Any] = {
            "task": "Pick a name for the project",
            "protocol": "sequential",
            "max_rounds": 1,
            "models": {"fake": {"provider": "openai", "base_url": f"{server.url}/v1", "model": "fake-model"}},
            "agents": [{"name": "Ana"}, {"name": "Ben"}],
        }
        room_id = (await store.create_room(RoomSpec.from_data(stored))).id
        seen: list[str] = []

        async def resolve(record: Any) -> RoomSpec:
            seen.append(record.id)
            data = {**stored, "models": {"fake": {**stored["models"]["fake"], "api_key": "sk-in-memory"}}}
            return RoomSpec.from_data(data)

        manager = managers(resolve=resolve)
        await manager.run(room_id)
        events = await watch(manager, room_id)
        assert seen == [room_id]
        assert [e.type for e in events if e.type in ("turn_completed", "turn_failed")] == [
            "turn_completed"
        ] * 2
        assert {r.headers["authorization"] for r in server.requests} == {"Bearer sk-in-memory"}
        assert "sk-in-memory" not in (await store.get_room(room_id)).spec.model_dump_json()
