"""`moot eval` makes one span for the evaluation, whose children are the runs of the rooms it holds."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

from opentelemetry.trace import SpanKind
from typer.testing import CliRunner

from moot import evaluation
from moot.cli import app
from moot.models import build_model
from moot.spec import ModelSpec

from .spans import Spans, otlp_collector, sent_spans


async def test_trace_an_evaluation_is_one_span_with_a_child_per_room_run(spans: Spans) -> None:
    model = build_model(ModelSpec.model_validate({"provider": "simulated", "tokens_per_second": 0}))
    questions = evaluation.arithmetic(2, seed=1)
    results = await evaluation.evaluate(model, questions, ["single", "board", "council"], 300)

    [root] = spans.named("moot eval")
    assert root.parent is None and root.kind == SpanKind.INTERNAL
    attributes = dict(root.attributes or {})
    assert attributes["moot.eval.questions"] == 2
    assert attributes["moot.eval.budget"] == 300
    assert tuple(attributes["moot.eval.methods"]) == ("single", "board", "council")
    for result in results:
        assert attributes[f"moot.eval.{result.method}.total"] == 2
        assert attributes[f"moot.eval.{result.method}.correct"] == result.correct
    runs = spans.named("invoke_workflow")
    assert spans.children(root, "invoke_workflow") == runs  # every room's run is the evaluation's child
    assert Counter(r.name for r in runs) == {"invoke_workflow board": 2, "invoke_workflow council": 2}
    assert {dict(r.attributes or {})["moot.run.status"] for r in runs} == {"completed"}
    for run in runs:
        assert spans.children(run, "invoke_agent")  # the room's turns are its run's children
    assert {s.context.trace_id for s in spans.all() if s.context is not None} == {root.context.trace_id}


def test_trace_moot_eval_with_tracing_off_makes_no_spans(spans: Spans) -> None:
    from moot import tracing

    tracing.off()
    ran = CliRunner().invoke(app, ["eval", "--model", "simulated", "-n", "1", "--methods", "board"])
    assert ran.exit_code == 0, ran.output
    assert spans.all() == ()


def test_trace_moot_tracing_otlp_makes_moot_eval_send_its_spans() -> None:
    with otlp_collector() as (endpoint, bodies):
        env = {**os.environ, "MOOT_TRACING": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
        done = subprocess.run(
            [sys.executable, "-m", "moot.cli", "eval", "--model", "simulated", "-n", "1",
             "--methods", "single,board"],
            capture_output=True, text=True, timeout=120, check=False, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    sent = sent_spans(bodies)
    [root] = [span for span in sent if span.name == "moot eval"]
    assert not root.parent_span_id
    [run] = [span for span in sent if span.name == "invoke_workflow board"]
    assert run.parent_span_id == root.span_id
    assert {span.trace_id for span in sent} == {root.trace_id}
