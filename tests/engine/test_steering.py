"""People steering a run: interventions, stop commands, pause and resume, retries they can see."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moot.engine import _QUEUE_SIZE, Run
from moot.exceptions import TransientModelError
from moot.models import Completion, ModelRequest
from moot.models.testing import Cut, FunctionModel, ScriptedModel
from moot.transcript import Transcript

from .helpers import collect, of_type, room, run_all, turn_order


async def test_an_intervention_is_seen_by_next_speakers_and_addressed_in_the_summary_B9() -> None:
    chair_requests: list[ModelRequest] = []

    def chair(request: ModelRequest) -> str:
        chair_requests.append(request)
        assert request.context is not None
        if request.context.kind == "conclusion":
            return '{"summary": "s", "decision_advice": "a", "consensus_points": [], "dissent_points": []}'
        return f"chair {request.context.kind}"

    stepped_in = asyncio.Event()  # round-1 speeches wait until the person has spoken: no race with the run

    async def member(request: ModelRequest) -> str:
        assert request.context is not None
        if request.context.round == 1:
            await stepped_in.wait()
        return "my view"

    members = {n: FunctionModel(member, label=n) for n in ("Alice", "Bob")}
    spec = room("board", names=("Alice", "Bob"), moderator="Chair", rounds=2)
    run = Run(spec, models={**members, "Chair": FunctionModel(chair, label="chair")})
    events = []
    async for event in run:
        events.append(event)
        if event.type == "turn_started" and (event.kind, event.speaker, event.round) == (
            "speech",
            "Alice",
            1,
        ):
            run.intervene("Please consider the licence cost!")
            stepped_in.set()
    added = of_type(events, "intervention_added")
    assert len(added) == 1 and added[0].text == "Please consider the licence cost!" and not added[0].stop
    # Round-1 members had already started; the summary of round 1 addresses it, round 2 members see it.
    summary1 = chair_requests[1]
    assert summary1.context is not None and summary1.context.kind == "summary"
    assert "Please consider the licence cost!" in summary1.messages[-1].content
    assert "address what they said" in summary1.messages[-1].content
    for fn in members.values():
        round2 = "\n".join(m.content for m in fn.requests[1].messages)
        assert "Please consider the licence cost!" in round2
        round1 = "\n".join(m.content for m in fn.requests[0].messages)
        assert "licence" not in round1
    stored = [e for e in run.transcript if e.kind == "intervention"]
    assert [e.text for e in stored] == ["Please consider the licence cost!"]


@pytest.mark.parametrize("command", ["/stop", "停止讨论", "结束讨论", "STOP"])
async def test_stop_commands_end_the_discussion_with_a_conclusion_B9_B15(command: str) -> None:
    spec = room("sequential", names=("Alice", "Bob"), moderator="Chair", rounds=5, language="zh")
    run = Run(spec)
    events = []
    async for event in run:
        events.append(event)
        if event.type == "turn_completed" and event.speaker == "Alice" and event.round == 1:
            run.intervene(command)
    assert of_type(events, "intervention_added")[0].stop
    assert turn_order(events) == [(1, "speech", "Alice"), (1, "conclusion", "Chair")]
    assert events[-1].type == "room_completed" and events[-1].stop_reason == "stop_command"
    assert run.result is not None and run.result.conclusion is not None


async def test_stop_method_ends_a_parallel_room_after_the_round_in_flight() -> None:
    run = Run(room("parallel", moderator="Chair", rounds=4))
    events = []
    async for event in run:
        events.append(event)
        if event.type == "round_started" and event.round == 2:
            run.stop()
    assert [e.round for e in of_type(events, "round_started")] == [1, 2]
    assert events[-1].stop_reason == "stop_command"
    assert of_type(events, "room_concluded")


async def test_pause_mid_turn_then_resume_runs_each_turn_exactly_once_L10_L11() -> None:
    sim = {"provider": "simulated", "seed": 3, "tokens_per_second": 2000}
    spec = room("board", moderator="Chair", rounds=2, models={"sim": sim})
    whole, _ = await run_all(spec)
    expected = [(e.round, e.kind, e.speaker) for e in whole.transcript if e.is_turn]

    transcript = Transcript()
    seen: list[tuple[int, str, str]] = []
    pauses = 0
    for _ in range(30):
        run = Run(spec, transcript=transcript, room_id="r1")
        completed_here, deltas_after = 0, 0
        async for event in run:
            if event.type == "turn_completed":
                seen.append((event.round, event.kind, event.speaker))
                completed_here += 1
            if event.type == "turn_delta" and completed_here:
                deltas_after += 1
                if deltas_after == 5:  # cut the next turn (or a parallel round) mid-stream
                    run.pause("test")
        assert run.result is not None
        if run.result.status == "completed":
            break
        assert run.result.status == "paused"
        assert event.type == "room_paused" and event.reason == "test"
        pauses += 1
    assert pauses >= 4
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))  # each turn exactly once
    # The same order of turn identities as an uninterrupted run, parallel rounds cut in half included.
    assert [(e.round, e.kind, e.speaker) for e in transcript if e.is_turn] == expected


async def test_resume_announces_itself_and_continues_mid_round_L10() -> None:
    spec = room("sequential", names=("Alice", "Bob", "Carol"), rounds=2)
    transcript = Transcript()
    run = Run(spec, transcript=transcript)
    async for event in run:
        if event.type == "turn_completed" and event.speaker == "Bob":
            run.pause()
    assert event.type == "room_paused" and event.round == 1  # the round in progress, not the last stored
    resumed = Run(spec, transcript=transcript)
    events = await collect(resumed)
    assert events[0].type == "room_started" and events[0].resumed
    assert of_type(events, "round_started")[0].round == 1
    assert turn_order(events)[0] == (1, "speech", "Carol")


async def test_a_stream_cut_midway_is_retried_and_watchers_discard_the_partial_text_L7() -> None:
    flaky = ScriptedModel([Cut("half a sent", TransientModelError("connection reset")), "the whole answer"])
    spec = room(
        "sequential",
        names=("Alice",),
        rounds=1,
        models={"sim": {"provider": "simulated", "retry_backoff": 0.01}},
    )
    run, events = await run_all(spec, {"Alice": flaky})
    types = [e.type for e in events if e.type.startswith("turn_")]
    assert types[0] == "turn_started" and "turn_restarted" in types
    restarted = of_type(events, "turn_restarted")[0]
    assert restarted.discard and restarted.attempt == 2 and "connection reset" in restarted.reason
    before = [e.text for e in events[: events.index(restarted)] if e.type == "turn_delta"]
    after = [e.text for e in events[events.index(restarted) :] if e.type == "turn_delta"]
    assert "".join(before) == "half a sent" and "".join(after) == "the whole answer"
    assert of_type(events, "turn_completed")[0].text == "the whole answer"
    assert [e.text for e in run.transcript if e.kind == "speech"] == ["the whole answer"]
    flaky.assert_all_used()


async def test_an_unusable_provider_is_an_agent_error_and_the_room_goes_on_L3_L12() -> None:
    spec = room(
        "sequential", rounds=1,
        models={"nokey": {"provider": "openai", "model": "x", "api_key_env": "MISSING_KEY_VAR"},
                "sim": {"provider": "simulated"}},
        agents=[{"name": "Alice", "model": "nokey"}, {"name": "Bob", "model": "sim"}],
    )  # fmt: skip
    run, events = await run_all(spec)
    failed = of_type(events, "turn_failed")
    assert [(f.speaker, f.error_type) for f in failed] == [("Alice", "ModelUnavailable")]
    assert "MISSING_KEY_VAR" in failed[0].error
    assert turn_order(events) == [(1, "speech", "Bob")]
    assert run.result is not None and run.result.status == "completed"


async def test_reader_leaving_early_pauses_the_run() -> None:
    run = Run(room("sequential", rounds=3))
    async with contextlib.aclosing(aiter(run)) as events:  # leaving the block closes the stream at once
        async for event in events:
            if event.type == "turn_completed":
                break
    assert run.status == "paused"
    assert run.result is not None and run.result.status == "paused"


def _gushing(full: asyncio.Event) -> FunctionModel:
    """A reply far longer than the channel to the reader holds, one event per character."""

    def reply(request: ModelRequest) -> str:
        return "w" * (4 * _QUEUE_SIZE)

    class Gushing(FunctionModel):
        async def _play(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
            sent = 0
            async for item in super()._play(request):
                yield item
                sent += 1
                if sent == _QUEUE_SIZE - 16:  # the run stays busy until the channel is full and it waits
                    full.set()

    return Gushing(reply, label="gushing", chunk=1)


@pytest.mark.timeout(60)
async def test_hardening_8_pausing_a_run_nobody_reads_ends_it() -> None:
    full = asyncio.Event()
    run = Run(room("sequential", names=("Alice",), rounds=1), models={"Alice": _gushing(full)})
    run.start()
    await full.wait()
    run.pause("nobody is reading")
    [driver] = [t for t in asyncio.all_tasks() if t.get_name() == f"moot-run-{run.room_id}"]
    await driver  # before, it waited forever to hand room_paused to a full queue
    assert run.result is not None and run.result.status == "paused"
    events = await collect(run)  # a reader who comes late still gets the end of the stream
    assert events[-1].type == "room_paused" and events[-1].reason == "nobody is reading"


_NOBODY_READS = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from engine.test_steering import _gushing
from engine.helpers import room
from moot.engine import Run

async def main() -> None:
    full = asyncio.Event()
    run = Run(room("sequential", names=("Alice",), rounds=1), models={{"Alice": _gushing(full)}})
    run.start()
    await full.wait()  # then leave: asyncio.run cancels the run's tasks on the way out

asyncio.run(main())
print("ended")
"""


@pytest.mark.timeout(120)
def test_hardening_8_a_started_run_nobody_reads_does_not_hang_the_process_at_shutdown() -> None:
    tests = str(Path(__file__).resolve().parents[1])
    script = _NOBODY_READS.format(tests=tests)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=100, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ended"


async def test_bad_interventions_are_refused_with_a_reason() -> None:
    run = Run(room("sequential", rounds=1))
    with pytest.raises(ValueError, match="needs some text"):
        run.intervene("   ")
    with pytest.raises(ValueError, match="at most"):
        run.intervene("x" * 9000)


async def test_token_budget_ends_the_discussion() -> None:
    spec = room("sequential", moderator="Chair", rounds=10, limits={"max_total_tokens": 600})
    _, events = await run_all(spec)
    assert events[-1].stop_reason == "token_budget"
    assert of_type(events, "room_concluded")
    assert events[-1].rounds_run < 10


async def test_usage_is_counted_per_turn_agent_and_room() -> None:
    def sized(request: ModelRequest) -> str:
        return "word " * 8

    models = {n: FunctionModel(sized, label=n) for n in ("Alice", "Bob", "Carol")}
    run, events = await run_all(room("sequential", rounds=2), models)
    done = of_type(events, "turn_completed")
    completed = events[-1]
    assert completed.usage.total_tokens == sum(e.usage.total_tokens for e in done)
    assert completed.usage_by_agent["Bob"] == sum(
        (e.usage for e in done if e.speaker == "Bob"), start=type(completed.usage)()
    )
    assert run.result is not None and run.result.usage == completed.usage


async def test_a_pause_before_the_run_begins_still_ends_with_room_paused_L11() -> None:
    early = Run(room("sequential", rounds=1))
    early.pause("before start")
    assert [e.type for e in await collect(early)] == ["room_paused"]
    started = Run(room("sequential", rounds=1))
    started.start()
    started.pause("at once")  # the task has not taken its first step yet
    events = await collect(started)
    assert [e.type for e in events] == ["room_paused"] and events[0].reason == "at once"
    assert started.result is not None and started.result.status == "paused"
