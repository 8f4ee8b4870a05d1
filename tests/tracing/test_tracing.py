"""OpenTelemetry spans of a stored room's run, its turns and its model calls, over a real OpenAI wire."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from moot import tracing
from moot.durable import DurableRun
from moot.events import Event
from moot.exceptions import ConfigError
from moot.spec import RoomSpec
from moot.store import Store
from moot.testing.servers import FakeLLMServer, Fault

from .spans import Spans, otlp_collector

KEY = "sk-trace-test-key-0123456789"
TASK = "Should the studio move to a four-day week?"
CONCLUSION = (
    '{"summary": "done", "decision_advice": "go", "consensus_points": ["a"], "dissent_points": ["b"]}'
)


def _reply(body: dict[str, Any]) -> str:
    last = body["messages"][-1]["content"]
    return CONCLUSION if "JSON" in last else "we weigh the week with care"


def _room(server: FakeLLMServer, protocol: str = "sequential", **model: Any) -> RoomSpec:
    local = {
        "provider": "openai",
        "model": "fake-model",
        "base_url": server.url + "/v1",
        "api_key_env": "TRACE_KEY",
        "max_tokens": 300,
        "temperature": 0.4,
        "max_retries": 0,
        "retry_backoff": 0.01,
        **model,
    }
    return RoomSpec.from_data(
        {
            "task": TASK,
            "protocol": protocol,
            "max_rounds": 1,
            "models": {"local": local},
            "default_model": "local",
            "agents": [
                {"name": "Chair", "role": "moderator"},
                {"name": "Ana", "persona": "a cautious engineer"},
                {"name": "Ben", "persona": "an ambitious product lead"},
            ],
        }
    )


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeLLMServer]:
    monkeypatch.setenv("TRACE_KEY", KEY)
    async with FakeLLMServer(api_key=KEY, reply=_reply, reply_tokens=6) as fake:
        yield fake


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.from_url(f"sqlite+aiosqlite:///{tmp_path / 'moot.db'}") as opened:
        await opened.upgrade()
        yield opened


async def _run(store: Store, spec: RoomSpec) -> tuple[str, list[Event]]:
    record = await store.create_room(spec)
    events = [event async for event in DurableRun(store, record.id)]
    return record.id, events


def _values(span: ReadableSpan) -> list[str]:
    """Every text a span carries: its name, attributes, events and status."""
    texts = [span.name, span.status.description or ""]
    texts += [str(v) for v in (span.attributes or {}).values()]
    for event in span.events:
        texts += [event.name, *(str(v) for v in (event.attributes or {}).values())]
    return texts


async def test_trace_room_run_has_a_span_per_turn_and_per_model_call(
    spans: Spans, server: FakeLLMServer, store: Store
) -> None:
    room_id, events = await _run(store, _room(server))
    assert events[-1].type == "room_completed"

    [run] = spans.named("invoke_workflow")
    assert run.name == "invoke_workflow sequential"
    assert run.parent is None and run.kind == SpanKind.INTERNAL
    assert dict(run.attributes or {}) == {
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.conversation.id": room_id,
        "gen_ai.workflow.name": "sequential",
        "moot.room.id": room_id,
        "moot.run.status": "completed",
        "moot.run.rounds": 1,
    }

    turns = spans.named("invoke_agent")
    assert spans.children(run, "invoke_agent") == turns  # every turn is the run's child
    stored = [e for e in await store.load_transcript(room_id) if e.is_turn]
    assert Counter(t.name for t in turns) == Counter(f"invoke_agent {e.speaker}" for e in stored)
    assert {(t.attributes or {})["moot.turn.id"] for t in turns} == {e.turn_id for e in stored}
    assert all(t.status.status_code == StatusCode.UNSET for t in turns)

    calls = spans.named("chat")
    assert len(calls) == len(server.requests) == len(turns)
    for turn in turns:
        [call] = spans.children(turn, "chat")  # each turn made one call, its child
        attributes = dict(call.attributes or {})
        assert call.name == "chat fake-model" and call.kind == SpanKind.CLIENT
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == "openai"
        assert attributes["gen_ai.request.model"] == "fake-model"
        assert attributes["gen_ai.response.model"] == "fake-model"
        assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
        assert attributes["gen_ai.conversation.id"] == room_id
        assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", server.port)
        assert "moot.usage.estimated" not in attributes  # the server reported its counts
    # the limits are those the server was sent, and the token counts the server's own, call by call
    assert Counter(
        (
            (c.attributes or {})["gen_ai.request.max_tokens"],
            (c.attributes or {})["gen_ai.request.temperature"],
        )
        for c in calls
    ) == Counter((r.body["max_tokens"], r.body["temperature"]) for r in server.requests)
    assert {(c.attributes or {})["gen_ai.request.max_tokens"] for c in calls} == {300, 1024}  # speech, JSON
    assert Counter(
        (
            (c.attributes or {})["gen_ai.usage.input_tokens"],
            (c.attributes or {})["gen_ai.usage.output_tokens"],
        )
        for c in calls
    ) == Counter(r.usage for r in server.requests)
    assert all(r.usage is not None and r.usage[1] > 0 for r in server.requests)

    # no prompt, no reply, no key in any span
    every = [text for span in spans.all() for text in _values(span)]
    assert not [t for t in every if TASK in t or "we weigh" in t or "cautious" in t or KEY in t]


async def test_trace_a_retried_call_is_a_failed_span_then_a_good_one(
    spans: Spans, server: FakeLLMServer, store: Store
) -> None:
    server.faults.append(Fault.status(503))
    _, events = await _run(store, _room(server, max_retries=1))
    assert events[-1].type == "room_completed"
    assert [e for e in events if e.type == "turn_restarted"]

    [first, *_] = spans.named("invoke_agent")
    failed, good = sorted(spans.children(first, "chat"), key=lambda s: s.start_time or 0)
    assert failed.status.status_code == StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "TransientModelError"
    assert (failed.attributes or {})["gen_ai.response.finish_reasons"] == ("error",)
    assert "HTTP 503" in (failed.status.description or "")
    assert good.status.status_code == StatusCode.UNSET
    assert (good.attributes or {})["gen_ai.response.finish_reasons"] == ("stop",)
    assert first.status.status_code == StatusCode.UNSET  # the turn itself went well


async def test_trace_a_failed_turn_records_error_status_without_the_key(
    spans: Spans, server: FakeLLMServer, store: Store
) -> None:
    server.faults.append(Fault.status(401))  # OpenAI's 401 body echoes the key it was sent
    _, events = await _run(store, _room(server))
    assert [e for e in events if e.type == "turn_failed"]

    [call] = [c for c in spans.named("chat") if c.status.status_code == StatusCode.ERROR]
    assert (call.attributes or {})["error.type"] == "ModelAuthError"
    [turn] = [t for t in spans.named("invoke_agent") if t.status.status_code == StatusCode.ERROR]
    assert call.parent is not None and turn.context is not None
    assert call.parent.span_id == turn.context.span_id
    assert (turn.attributes or {})["error.type"] == "ModelAuthError"
    assert "HTTP 401" in (turn.status.description or "")
    [run] = spans.named("invoke_workflow")
    assert (run.attributes or {})["moot.run.status"] == "completed"  # one failed turn; the room went on
    every = [text for span in spans.all() for text in _values(span)]
    assert not [t for t in every if KEY in t]


async def test_trace_off_by_default_makes_no_spans(server: FakeLLMServer, store: Store) -> None:
    catcher = Spans()  # a provider nobody told Moot to use
    assert not tracing.enabled()
    _, events = await _run(store, _room(server))
    assert events[-1].type == "room_completed"
    assert catcher.all() == ()
    assert tracing.carrier() == {}
    with tracing.attached({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}):
        pass  # nothing to attach to: no error either


def _python(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_trace_the_core_imports_no_opentelemetry_and_runs_without_it() -> None:
    # importing the engine, the durable run and the CLI loads nothing of OpenTelemetry: tracing off costs
    # nothing, and `moot --help` pays no import for it
    loaded = _python(
        "import sys, moot.engine, moot.durable, moot.cli, moot.tracing; "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    assert loaded.strip() == "[]"
    # without the packages at all, a room runs, and asking for tracing says what to install
    said = _python(
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"  # as if the tracing extra were not installed
        "import moot, moot.tracing\n"
        "from moot.spec import RoomSpec\n"
        "room = RoomSpec.from_data({'task': 't', 'max_rounds': 1, 'models': {'s': {'provider': 'simulated',"
        " 'tokens_per_second': 0}}, 'default_model': 's', 'agents': [{'name': 'A'}, {'name': 'B'}]})\n"
        "import asyncio\n"
        "print(asyncio.run(moot.run(room).wait()).status)\n"
        "try:\n"
        "    moot.tracing.setup('otlp')\n"
        "except moot.exceptions.ConfigError as exc:\n"
        "    print(exc)\n"
    )
    status, message = said.strip().splitlines()
    assert status == "completed"
    assert "tracing extra" in message and "pip install 'moot[tracing]'" in message


def test_trace_setup_refuses_an_unknown_mode() -> None:
    with pytest.raises(ConfigError, match="MOOT_TRACING='jaeger'"):
        tracing.setup("jaeger")
    assert tracing.setup("off") is False
    assert not tracing.enabled()


_CHILD = """
import json, sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from moot import tracing

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracing.use(provider)
with tracing.attached(json.loads(sys.argv[1])), tracing.room_run("room-in-the-worker"):
    pass
[span] = exporter.get_finished_spans()
parent = span.parent
print(json.dumps({
    "trace": format(span.context.trace_id, "032x"),
    "parent": format(parent.span_id, "016x") if parent else None,
    "remote": parent.is_remote if parent else None,
}))
"""


def test_trace_carrier_continues_a_trace_in_another_process(spans: Spans) -> None:
    tracer = spans.provider.get_tracer("test")
    with tracer.start_as_current_span("queue the run") as queued:
        carried = tracing.carrier()
    assert set(carried) <= {"traceparent", "tracestate"} and carried["traceparent"].startswith("00-")
    seen = json.loads(_python(_CHILD, json.dumps(carried)))
    assert seen == {
        "trace": format(queued.get_span_context().trace_id, "032x"),
        "parent": format(queued.get_span_context().span_id, "016x"),
        "remote": True,
    }


@pytest.mark.parametrize(
    "carried",
    [
        {"traceparent": "not a trace"},
        {"traceparent": 42},
        {"traceparent": "00-" + "a" * 600},
        {"unrelated": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        {},
        None,
    ],
)
def test_trace_a_malformed_carrier_starts_a_new_trace(spans: Spans, carried: Any) -> None:
    with tracing.attached(carried), tracing.room_run("room"):
        pass
    [run] = spans.named("invoke_workflow")
    assert run.parent is None


_OTLP_CHILD = """
import asyncio, sys
from moot import tracing
from moot.durable import DurableRun
from moot.spec import RoomSpec
from moot.store import Store

assert tracing.setup()  # MOOT_TRACING=otlp from the environment


async def main() -> None:
    room = RoomSpec.from_data({"task": "t", "protocol": "sequential", "max_rounds": 1,
        "models": {"s": {"provider": "simulated", "tokens_per_second": 0}}, "default_model": "s",
        "agents": [{"name": "Ana"}, {"name": "Ben"}]})
    async with Store.from_url(sys.argv[1]) as store:
        await store.upgrade()
        record = await store.create_room(room)
        [event async for event in DurableRun(store, record.id)]

asyncio.run(main())  # the spans are flushed as the process exits
"""


def test_trace_moot_tracing_otlp_sends_spans_to_the_configured_endpoint(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    with otlp_collector() as (endpoint, bodies):
        env = {
            **os.environ,
            "MOOT_TRACING": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_SERVICE_NAME": "moot-test",
        }
        done = subprocess.run(
            [sys.executable, "-c", _OTLP_CHILD, f"sqlite+aiosqlite:///{tmp_path / 'moot.db'}"],
            capture_output=True, text=True, timeout=120, check=False, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert bodies and {path for path, _ in bodies} == {"/v1/traces"}
    names: list[str] = []
    services: set[str] = set()
    for _, body in bodies:
        sent = ExportTraceServiceRequest.FromString(body)
        for resource in sent.resource_spans:
            services |= {
                a.value.string_value for a in resource.resource.attributes if a.key == "service.name"
            }
            names += [span.name for scope in resource.scope_spans for span in scope.spans]
    assert services == {"moot-test"}
    assert Counter(names) == {"invoke_workflow sequential": 1, "invoke_agent Ana": 1, "invoke_agent Ben": 1,
                              "chat simulated": 2}  # fmt: skip
