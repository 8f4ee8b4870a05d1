"""What goes wrong stays where it happened: a turn's failure ends that turn, a provider's words are scrubbed,
an endless reply is cut, and whatever the room is told is plain."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from moot.engine import Run
from moot.events import Event, event_json
from moot.exceptions import RunError
from moot.models import Completion, Model, ModelRequest, Usage
from moot.models.testing import FunctionModel
from moot.spec import RoomSpec
from moot.testing.servers import FakeLLMServer, Fault
from moot.transcript import Entry

from .helpers import collect, of_type, room, run_all

CANARY = "sk-canary-0123456789abcdefABCDEF"
VALID = '{"summary": "s", "decision_advice": "a", "consensus_points": [], "dissent_points": []}'


class Broken(Model):
    """A model (or an adapter with a bug) that raises something no adapter should let out."""

    label = "broken"

    def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
        return self._play()

    async def _play(self) -> AsyncIterator[str | Completion]:
        yield "half a "
        raise AttributeError(f"'str' object has no attribute 'get' (while holding {CANARY})")


class Endless(Model):
    """A reply that ignores max_tokens and never ends."""

    label = "endless"

    def __init__(self) -> None:
        self.sent = 0

    def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
        return self._play()

    async def _play(self) -> AsyncIterator[str | Completion]:
        while True:
            self.sent += 100
            yield "x" * 100


def _chair(request: ModelRequest) -> str:
    assert request.context is not None
    return VALID if request.context.kind == "conclusion" else f"chair {request.context.kind}"


async def test_hardening_4_an_unexpected_error_in_a_turn_is_a_failed_turn_and_the_room_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = room(
        "board", names=("Alice", "Bob"), moderator="Chair", rounds=2, limits={"fallback_models": False}
    )
    models: dict[str, Model] = {
        "Alice": Broken(),
        "Bob": FunctionModel(lambda r: "Bob's view", label="bob"),
        "Chair": FunctionModel(_chair, label="chair"),
    }
    with caplog.at_level(logging.ERROR, logger="moot.engine"):
        _, events = await run_all(spec, models)

    assert events[-1].type == "room_completed"  # the parallel round did not fail the room (L12)
    failed = of_type(events, "turn_failed")
    assert [(f.speaker, f.round) for f in failed] == [("Alice", 1), ("Alice", 2)]
    for f in failed:
        assert f.error_type == "AttributeError"
        assert "unexpected error" in f.error and "server log" in f.error
        assert "has no attribute" not in f.error and "ExceptionGroup" not in f.error
    assert [e.round for e in of_type(events, "turn_completed") if e.speaker == "Bob"] == [1, 2]
    # The operator gets the whole story, traceback included, with the secret scrubbed.
    logged = [r.getMessage() for r in caplog.records if r.name == "moot.engine"]
    assert len(logged) == 2 and all("Traceback" in m and "has no attribute 'get'" in m for m in logged)
    assert not any(CANARY in m for m in logged)


async def test_hardening_1_a_room_failure_reaches_events_and_entries_scrubbed() -> None:
    async def failing_store(entry: Entry, events: list[Event]) -> None:
        if entry.kind == "summary":
            raise RunError(f"the database refused the write: api_key={CANARY} Bearer {CANARY}")

    spec = room("board", names=("Alice", "Bob"), moderator="Chair", rounds=2)
    models = {n: FunctionModel(lambda r: "a view", label=n) for n in ("Alice", "Bob")}
    run = Run(spec, models={**models, "Chair": FunctionModel(_chair, label="chair")}, on_entry=failing_store)
    events = await collect(run)

    failed = events[-1]
    assert failed.type == "room_failed" and failed.error_type == "RunError"
    assert "the database refused the write" in failed.error
    concluded = of_type(events, "room_concluded")
    assert len(concluded) == 1 and concluded[0].fallback and concluded[0].provisional
    everything = [event_json(e) for e in events] + [e.model_dump_json() for e in run.transcript]
    assert run.transcript.conclusion is not None
    everything.append(run.transcript.conclusion.model_dump_json())
    assert not any(CANARY in text for text in everything)
    assert run.result is not None and CANARY not in (run.result.error or "")


async def test_hardening_1_a_key_echoed_inside_a_stream_is_scrubbed_from_restarts_and_failures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOCAL_KEY", CANARY)
    async with FakeLLMServer(api_key=CANARY, reply_tokens=4) as server:
        server.faults.extend([Fault.stream_error(after_chunks=1, message="invalid key {key}")] * 2)
        model: dict[str, Any] = {
            "provider": "openai", "model": "fake-model", "base_url": server.url + "/v1",
            "api_key_env": "LOCAL_KEY", "max_retries": 1, "retry_backoff": 0.01,
        }  # fmt: skip
        spec = RoomSpec.from_data(
            {"task": "Open-source it?", "protocol": "sequential", "max_rounds": 1, "models": {"m": model},
             "agents": [{"name": "Alice", "model": "m"}, {"name": "Bob", "model": "m"}]}
        )  # fmt: skip
        run, events = await run_all(spec)

    assert of_type(events, "turn_restarted") and of_type(events, "turn_failed")
    assert [e.speaker for e in of_type(events, "turn_completed")] == ["Bob"]
    texts = [event_json(e) for e in events] + [e.model_dump_json() for e in run.transcript]
    assert not any(CANARY in text for text in texts)


async def test_hardening_9_a_reply_past_the_cap_is_cut_there_and_the_room_is_told() -> None:
    endless = Endless()
    spec = room("sequential", names=("Alice", "Bob"), rounds=1, limits={"reply_chars": 1000})
    bob = FunctionModel(lambda r: "y" * 5000, label="bob", chunk=300)
    run, events = await run_all(spec, {"Alice": endless, "Bob": bob})

    assert events[-1].type == "room_completed"
    done = {e.speaker: e for e in of_type(events, "turn_completed")}
    for name in ("Alice", "Bob"):
        assert len(done[name].text) == 1000 and done[name].finish_reason == "length"
        streamed = "".join(e.text for e in of_type(events, "turn_delta") if e.speaker == name)
        assert streamed == done[name].text
    assert endless.sent <= 1100  # it stopped reading at the cap
    stored = [e for e in run.transcript if e.kind == "speech"]
    assert [(len(e.text), e.finish_reason) for e in stored] == [(1000, "length"), (1000, "length")]
    warnings = [w for w in of_type(events, "room_warning") if w.code == "reply_capped"]
    assert len(warnings) == 2 and "1,000 characters" in warnings[0].message


async def test_hardening_9_a_completion_longer_than_its_deltas_is_capped_too() -> None:
    class Whole(Model):
        label = "whole"

        def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
            return self._play()

        async def _play(self) -> AsyncIterator[str | Completion]:
            yield Completion(text="z" * 3000, usage=Usage(input_tokens=1, output_tokens=1))

    spec = room("sequential", names=("Alice",), rounds=1, limits={"reply_chars": 1000})
    run, _ = await run_all(spec, {"Alice": Whole()})
    [speech] = [e for e in run.transcript if e.kind == "speech"]
    assert len(speech.text) == 1000 and speech.finish_reason == "length"
