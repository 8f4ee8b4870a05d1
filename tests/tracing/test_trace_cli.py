"""`moot run` makes the span tree a stored run makes: the run, its turns, their model calls."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from opentelemetry.trace import SpanKind
from typer.testing import CliRunner

from moot.cli import app

from .spans import Spans, otlp_collector, sent_spans

ROOM = """
task: Should the studio move to a four-day week?
protocol: sequential
max_rounds: 1
models:
  sim: {provider: simulated, seed: 3, tokens_per_second: 0}
default_model: sim
agents:
  - {name: Ana, persona: a cautious engineer}
  - {name: Ben, persona: an ambitious product lead}
"""


def _room_file(tmp_path: Path) -> Path:
    path = tmp_path / "room.yaml"
    path.write_text(ROOM, encoding="utf-8")
    return path


def test_trace_moot_run_is_one_run_span_whose_turns_and_calls_are_its_children(
    spans: Spans, tmp_path: Path
) -> None:
    ran = CliRunner().invoke(app, ["run", str(_room_file(tmp_path)), "--json"])
    assert ran.exit_code == 0, ran.output
    assert '"type":"room_completed"' in ran.output.splitlines()[-1]

    [run] = spans.named("invoke_workflow")
    assert run.name == "invoke_workflow sequential"
    assert run.parent is None and run.kind == SpanKind.INTERNAL  # the root of the command's trace
    attributes = dict(run.attributes or {})
    assert attributes["moot.run.status"] == "completed"
    assert attributes["moot.run.rounds"] == 1
    assert attributes["gen_ai.conversation.id"] == attributes["moot.room.id"]
    turns = spans.named("invoke_agent")
    assert spans.children(run, "invoke_agent") == turns  # every turn is the run's child
    assert Counter(t.name for t in turns) == {"invoke_agent Ana": 1, "invoke_agent Ben": 1}
    for turn in turns:
        [call] = spans.children(turn, "chat")
        assert call.name == "chat simulated"
    assert len(spans.named("chat")) == len(turns)


def test_trace_moot_tracing_otlp_makes_moot_run_send_its_spans(tmp_path: Path) -> None:
    with otlp_collector() as (endpoint, bodies):
        env = {**os.environ, "MOOT_TRACING": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
        done = subprocess.run(
            [sys.executable, "-m", "moot.cli", "run", str(_room_file(tmp_path)), "--json"],
            capture_output=True, text=True, timeout=120, check=False, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    sent = sent_spans(bodies)
    names = {span.span_id: span.name for span in sent}
    assert Counter(names.values()) == {
        "invoke_workflow sequential": 1,
        "invoke_agent Ana": 1,
        "invoke_agent Ben": 1,
        "chat simulated": 2,
    }
    parents = Counter((names.get(span.parent_span_id), span.name.split()[0]) for span in sent)
    assert parents == {
        (None, "invoke_workflow"): 1,
        ("invoke_workflow sequential", "invoke_agent"): 2,
        ("invoke_agent Ana", "chat"): 1,
        ("invoke_agent Ben", "chat"): 1,
    }
