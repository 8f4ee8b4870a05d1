"""Sequential and parallel rooms: who sees what, in which role, and how rounds are announced."""

from __future__ import annotations

import pytest

from moot.events import Event
from moot.models import ModelRequest
from moot.models.testing import FunctionModel
from moot.transcript import Entry

from .helpers import of_type, room, run_all, turn_order


def _echo(name: str) -> FunctionModel:
    def reply(request: ModelRequest) -> str:
        assert request.context is not None
        return f"{name} speaks in round {request.context.round}"

    return FunctionModel(reply, label=f"fn-{name}")


async def test_sequential_each_speaker_sees_everything_before_it_L5_L9() -> None:
    models = {n: _echo(n) for n in ("Alice", "Bob", "Carol")}
    _, events = await run_all(room("sequential", rounds=2), models)

    assert turn_order(events) == [
        (1, "speech", "Alice"), (1, "speech", "Bob"), (1, "speech", "Carol"),
        (2, "speech", "Alice"), (2, "speech", "Bob"), (2, "speech", "Carol"),
    ]  # fmt: skip
    carol_round1 = models["Carol"].requests[0]
    assert [m.role for m in carol_round1.messages] == ["user"]
    assert "[Alice] Alice speaks in round 1" in carol_round1.messages[0].content
    assert "[Bob] Bob speaks in round 1" in carol_round1.messages[0].content
    assert carol_round1.messages[0].content.startswith("Task for discussion: Should we open-source")
    # Round 2: Alice's own round-1 turn is `assistant`; everyone else's words are `user`, named (L9).
    alice_round2 = models["Alice"].requests[1]
    roles = [m.role for m in alice_round2.messages]
    assert roles == ["user", "assistant", "user"]
    assert alice_round2.messages[1].content == "Alice speaks in round 1"
    assert "[Bob] Bob speaks in round 1" in alice_round2.messages[2].content
    assert "[Carol] Carol speaks in round 1" in alice_round2.messages[2].content
    assert "Round 2 of 2" in alice_round2.messages[-1].content


async def test_parallel_round_sees_previous_rounds_only_and_joins_in_turn_order_L6() -> None:
    delays = {"Alice": 0.05, "Bob": 0.0, "Carol": 0.02}  # Bob finishes first, Alice last

    def model(name: str) -> FunctionModel:
        def reply(request: ModelRequest) -> str:
            assert request.context is not None
            return f"{name} view {request.context.round} " + "word " * 5

        return FunctionModel(reply, label=f"fn-{name}", delay=delays[name])

    models = {n: model(n) for n in delays}
    run, events = await run_all(room("parallel", rounds=2), models)

    for name, fn in models.items():
        round2 = "\n".join(m.content for m in fn.requests[1].messages)
        for other in delays:
            assert f"{other} view 1" in round2, f"{name}'s round-2 prompt misses {other}'s round-1 speech"
            assert f"{other} view 2" not in round2
        round1 = "\n".join(m.content for m in fn.requests[0].messages)
        assert "view 1" not in round1
    speeches = [e for e in run.transcript if e.kind == "speech"]
    assert [(e.round, e.speaker) for e in speeches] == [
        (1, "Alice"), (1, "Bob"), (1, "Carol"), (2, "Alice"), (2, "Bob"), (2, "Carol"),
    ]  # fmt: skip
    # Streams are merged live: another speaker's delta arrives before Alice's turn ends.
    alice_done = next(i for i, e in enumerate(events) if e.type == "turn_completed" and e.speaker == "Alice")
    first_alice_delta = next(
        i for i, e in enumerate(events) if e.type == "turn_delta" and e.speaker == "Alice"
    )
    assert any(e.type == "turn_delta" and e.speaker != "Alice" for e in events[first_alice_delta:alice_done])
    progress = of_type(events, "round_progress")
    assert progress[0].states == {"Alice": "pending", "Bob": "pending", "Carol": "pending"}
    assert progress[0].completed == 0 and progress[0].total == 3
    assert {"streaming"} <= {s for p in progress for s in p.states.values()}
    for index, event in enumerate(events):  # the progress follows each end event at once
        if event.type == "turn_completed":
            follow = events[index + 1]
            assert follow.type == "round_progress" and follow.states[event.speaker] == "completed"
    finals = [p for p in progress if p.completed == 3]
    assert len(finals) == 2 and all(set(p.states.values()) == {"completed"} for p in finals)


async def test_rounds_are_announced_and_completion_counts_them_L13() -> None:
    _, events = await run_all(room("sequential", names=("Alice", "Bob"), rounds=3))
    types = [e.type for e in events]
    assert types[0] == "room_started"
    assert [(e.round, e.max_rounds) for e in of_type(events, "round_started")] == [(1, 3), (2, 3), (3, 3)]
    assert [(e.round, e.continues) for e in of_type(events, "round_completed")] == [
        (1, True), (2, True), (3, False),
    ]  # fmt: skip
    assert types[-1] == "room_completed"
    assert events[-1].rounds_run == 3 and events[-1].stop_reason == "max_rounds"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_every_turn_streams_start_deltas_end_and_is_kept_L7_L8() -> None:
    stored: list[Entry] = []
    stored_events: list[list[str]] = []

    async def keep(entry: Entry, events: list[Event]) -> None:
        stored.append(entry)
        stored_events.append([e.type for e in events])

    from moot.engine import Run

    run = Run(room("sequential", names=("Alice",), rounds=1), on_entry=keep)
    events = [e async for e in run]
    started = of_type(events, "turn_started")[0]
    deltas = of_type(events, "turn_delta")
    done = of_type(events, "turn_completed")[0]
    assert started.turn_id == done.turn_id == deltas[0].turn_id
    assert (started.speaker, started.round, started.colour) == ("Alice", 1, done.colour)
    assert len(deltas) > 3
    assert "".join(d.text for d in deltas) == done.text  # deltas, never the accumulated text
    assert all(len(d.text) < len(done.text) for d in deltas)
    assert done.usage.output_tokens > 0
    # L4: the task is the first stored entry, round 0; L8: the speech with its fields.
    assert (stored[0].kind, stored[0].round, stored[0].speaker) == ("task", 0, "user")
    speech = stored[1]
    assert (speech.kind, speech.round, speech.speaker, speech.text) == ("speech", 1, "Alice", done.text)
    assert speech.colour == done.colour and speech.usage == done.usage and speech.created_at > 0
    assert stored_events[:2] == [[], ["turn_completed"]]  # a turn and its end event are kept together


async def test_a_room_is_never_run_twice_at_once_in_one_process_L14() -> None:
    from moot.engine import Run
    from moot.exceptions import RunError

    spec = room("sequential", names=("Alice",), rounds=1)
    first = Run(spec, room_id="same")
    first.start()
    second = Run(spec, room_id="same")
    with pytest.raises(RunError, match="already running"):
        second.start()
    await first.wait()  # the room is released before the stream ends: no wait for the loop to catch up
    third = Run(spec, room_id="same", transcript=first.transcript)
    assert (await third.wait()).status == "completed"
