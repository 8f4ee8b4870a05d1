"""Spans caught in memory: the SDK's in-memory exporter behind the provider Moot is told to use."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator, Sequence
from typing import Any

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


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that keeps what it is sent, as (path, body), in its server's `bodies`."""

    server: _CollectorServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class _CollectorServer(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Collector)
        self.bodies: list[tuple[str, bytes]] = []


@contextlib.contextmanager
def otlp_collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """An OTLP/HTTP collector on a thread: its URL (OTEL_EXPORTER_OTLP_ENDPOINT) and what it was sent."""
    collector = _CollectorServer()
    serving = threading.Thread(target=collector.serve_forever, daemon=True)
    serving.start()
    try:
        yield f"http://127.0.0.1:{collector.server_address[1]}", collector.bodies
    finally:
        collector.shutdown()
        collector.server_close()


def sent_spans(bodies: list[tuple[str, bytes]]) -> list[Any]:
    """Every span in what an `otlp_collector` was sent, as the OTLP protobuf messages."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    return [
        span
        for _, body in bodies
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
