"""Spans caught in memory: the SDK's in-memory exporter behind the provider Moot is told to use."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from moot import tracing


class _RunEnded(SpanProcessor):
    """Sets `ended` when a run's span ends: a test waits on it, not on the clock."""

    def __init__(self) -> None:
        self.ended = threading.Event()

    def on_end(self, span: ReadableSpan) -> None:
        if span.name.startswith("invoke_workflow"):
            self.ended.set()


class Spans:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self._run_ended = _RunEnded()
        self.provider.add_span_processor(self._run_ended)

    @property
    def run_ended(self) -> threading.Event:
        return self._run_ended.ended

    def all(self) -> Sequence[ReadableSpan]:
        return self.exporter.get_finished_spans()

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name.startswith(prefix)]

    def children(self, parent: ReadableSpan, prefix: str = "") -> list[ReadableSpan]:
        assert parent.context is not None
        return [
            s
            for s in self.named(prefix)
            if s.parent is not None and s.parent.span_id == parent.context.span_id
        ]


@pytest.fixture
def spans() -> Iterator[Spans]:
    """Moot's spans for this test, in memory; tracing is off again afterwards."""
    caught = Spans()
    tracing.use(caught.provider)
    try:
        yield caught
    finally:
        tracing.off()
        caught.provider.shutdown()
