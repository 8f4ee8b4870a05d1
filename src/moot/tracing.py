"""OpenTelemetry spans for room runs, their turns and their model calls; off unless asked for.

A run is one span (`invoke_workflow {protocol}`), each turn its child (`invoke_agent {speaker}`), and each
request to a model a child of its turn (`chat {model}`), named and described as the OpenTelemetry GenAI
semantic conventions say. A retried or substituted model call is one `chat` span per attempt, the failed
ones with error status: each attempt is a request of its own, with its own tokens, latency and maybe model,
and the room shows it (`turn_restarted`); the turn's span covers the whole. Spans are per run, turn and
call, never per token. An evaluation (`moot eval`) is one span (`moot eval`) whose children are the runs of
the rooms it holds.

Off by default: every hook is then one test of a global, and the OpenTelemetry packages (the `tracing`
extra) are never imported, so the core runs without them. `setup()` turns tracing on as MOOT_TRACING says
(`otlp`: OTLP over HTTP, configured by the exporter's standard OTEL_EXPORTER_OTLP_* variables); a program
that has its own tracer provider, and the tests with the SDK's in-memory exporter, call `use(provider)`.

Attributes carry model names, ids, counts and finish reasons: never a prompt, a reply or a key; an error's
text passes `moot.scrub` first. `carrier()` and `attached()` carry a trace to another process (W3C trace
context), so that a run queued by one process continues its trace where another runs it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from moot.scrub import scrub

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider
    from starlette.requests import HTTPConnection

    from moot.models import Completion, ModelRequest
    from moot.spec import ModelSpec

__all__ = [
    "EvalSpan",
    "ModelCall",
    "RunSpan",
    "attached",
    "carrier",
    "enabled",
    "evaluation",
    "failed",
    "model_call",
    "off",
    "request",
    "room_run",
    "setup",
    "turn",
    "use",
]

MODES = ("off", "otlp")
_SCOPE = "moot"
_CARRIED = ("traceparent", "tracestate")  # the W3C trace context: all a carrier may hold
_CARRIED_CHARS = 512

_tracer: Tracer | None = None
_installed: TracerProvider | None = None  # the provider setup() made, kept for the life of the process
_lock = threading.Lock()


def enabled() -> bool:
    """Whether spans are being made in this process."""
    return _tracer is not None


def setup(mode: str | None = None) -> bool:
    """Turns tracing on for this process as `mode` (MOOT_TRACING by default) says; True when it is on.

    `otlp` sends spans in batches by OTLP over HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (or
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; http://localhost:4318 when unset), with the exporter's other
    OTEL_EXPORTER_OTLP_* settings; the provider becomes the process's global one, so other instrumentation
    joins the same traces. Calling it again changes nothing. ConfigError when the mode is unknown or the
    `tracing` extra is not installed.
    """
    global _installed
    from moot.exceptions import ConfigError

    if mode is None:
        from moot.settings import get_settings

        mode = get_settings().tracing
    mode = mode.strip().lower()
    if mode not in MODES:
        raise ConfigError(f"MOOT_TRACING={mode!r}: use one of {', '.join(MODES)}")
    if mode == "off":
        return enabled()
    with _lock:
        if _installed is None:
            _installed = _otlp_provider()
    use(_installed)
    return True


def _otlp_provider() -> TracerProvider:
    from moot.exceptions import ConfigError

    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        from moot._extras import explain

        raise ConfigError(explain(exc, "MOOT_TRACING=otlp") or str(exc)) from None
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES still apply; "moot" is only the default name.
    given = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    named = {} if given else {"service.name": "moot"}
    provider = TracerProvider(resource=Resource.create(named))  # flushed at exit (shutdown_on_exit)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def use(provider: TracerProvider | None = None) -> None:
    """Makes Moot's spans through `provider`, or through the global provider when None (an application's
    own OpenTelemetry setup). Tests give a provider with the SDK's in-memory exporter."""
    global _tracer
    from opentelemetry import trace

    from moot import __version__

    _tracer = (provider or trace.get_tracer_provider()).get_tracer(_SCOPE, __version__)


def off() -> None:
    """Stops making spans in this process (a provider setup() installed stays installed)."""
    global _tracer
    _tracer = None


# ---- spans ----------------------------------------------------------------------------------------------


class RunSpan:
    """The span of one room run; `starting()` makes it the parent of what starts inside (the run's tasks)."""

    __slots__ = ("_span",)

    def __init__(self, span: Span | None) -> None:
        self._span = span

    @contextlib.contextmanager
    def starting(self, protocol: str) -> Iterator[None]:
        """Names the run by its protocol and makes its span the current one for the block, in which the
        run starts its tasks: they inherit it, and their turns become its children."""
        span = self._span
        if span is None:
            yield
            return
        from opentelemetry.trace import use_span

        span.update_name(f"invoke_workflow {protocol}")
        span.set_attribute("gen_ai.workflow.name", protocol)
        with use_span(span, record_exception=False, set_status_on_exception=False):
            yield

    def ended(self, status: str | None, error: str | None = None, rounds: int | None = None) -> None:
        """Records how the run ended (completed, paused or error), and the rounds it reached."""
        span = self._span
        if span is None:
            return
        if status is not None:
            span.set_attribute("moot.run.status", status)
        if rounds is not None:
            span.set_attribute("moot.run.rounds", rounds)
        if status == "error":
            _error(span, "RoomFailed", error or "the room failed")


NOT_TRACED = RunSpan(None)


@contextlib.contextmanager
def room_run(room_id: str) -> Iterator[RunSpan]:
    """The span of a room's run, a child of the current context (the request or the queued message that
    started it). It is not made current here, since a run's events are read across many steps, each of
    which could be another task's: the run makes it current where it starts its tasks (`starting()`)."""
    tracer = _tracer
    if tracer is None:
        yield NOT_TRACED
        return
    from opentelemetry.trace import SpanKind

    span = tracer.start_span(
        "invoke_workflow",
        kind=SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.conversation.id": room_id,
            "moot.room.id": room_id,
        },
    )
    try:
        yield RunSpan(span)
    except BaseException as exc:
        _ended_by(span, exc)
        raise
    finally:
        span.end()


class EvalSpan:
    """The span of one `moot eval`: `results()` records each method's accuracy on it."""

    __slots__ = ("_span",)

    def __init__(self, span: Span | None) -> None:
        self._span = span

    def results(self, scores: Mapping[str, tuple[int, int]]) -> None:
        """Each method's (correct, total) answers, as `moot.eval.<method>.correct` and `.total`."""
        span = self._span
        if span is None:
            return
        for method, (correct, total) in scores.items():
            span.set_attribute(f"moot.eval.{method}.correct", correct)
            span.set_attribute(f"moot.eval.{method}.total", total)


_NO_EVAL = EvalSpan(None)


@contextlib.contextmanager
def evaluation(model: str, methods: Sequence[str], questions: int, budget: int) -> Iterator[EvalSpan]:
    """The span of an evaluation (`moot eval`), current for the block: each room it runs (`room_run`) is
    its child, and so the root of the command's trace holds them all."""
    tracer = _tracer
    if tracer is None:
        yield _NO_EVAL
        return
    from opentelemetry.trace import SpanKind, use_span

    span = tracer.start_span(
        "moot eval",
        kind=SpanKind.INTERNAL,
        attributes={
            "moot.eval.model": model,
            "moot.eval.methods": list(methods),
            "moot.eval.questions": questions,
            "moot.eval.budget": budget,
        },
    )
    try:
        with use_span(span, record_exception=False, set_status_on_exception=False):
            yield EvalSpan(span)
    except BaseException as exc:
        _ended_by(span, exc)
        raise
    finally:
        span.end()


@contextlib.contextmanager
def turn(
    room_id: str, turn_id: str, speaker: str, *, round: int, kind: str, provider: str, model: str
) -> Iterator[None]:
    """The span of one turn, current while it runs: its model calls are its children."""
    tracer = _tracer
    if tracer is None:
        yield
        return
    from opentelemetry.trace import SpanKind, use_span

    span = tracer.start_span(
        f"invoke_agent {speaker}",
        kind=SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": speaker,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.conversation.id": room_id,
            "moot.turn.id": turn_id,
            "moot.turn.round": round,
            "moot.turn.kind": kind,
        },
    )
    with use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
        try:
            yield
        except BaseException as exc:
            _ended_by(span, exc)
            raise


def failed(exc: BaseException) -> None:
    """Marks the current span (a turn that failed and said so, rather than raise) as failed by `exc`."""
    if _tracer is None:
        return
    from opentelemetry.trace import get_current_span

    span = get_current_span()
    if span.is_recording():
        _error(span, _error_type(exc), str(exc))


class ModelCall:
    """A model call's span; `done(completion)` records what came back and returns it."""

    __slots__ = ("_span",)

    def __init__(self, span: Span | None) -> None:
        self._span = span

    def done(self, completion: Completion) -> Completion:
        span = self._span
        if span is not None:
            usage = completion.usage
            span.set_attributes(
                {
                    "gen_ai.response.finish_reasons": (_short(completion.finish_reason),),
                    "gen_ai.usage.input_tokens": usage.input_tokens,
                    "gen_ai.usage.output_tokens": usage.output_tokens,
                }
            )
            if completion.model:
                span.set_attribute("gen_ai.response.model", _short(completion.model))
            if usage.estimated:  # counted here: the server reported none
                span.set_attribute("moot.usage.estimated", True)
        return completion


_NO_CALL = ModelCall(None)


@contextlib.contextmanager
def model_call(spec: ModelSpec, request: ModelRequest, room_id: str | None = None) -> Iterator[ModelCall]:
    """The span of one request to a model (one attempt), a child of the current span (its turn)."""
    tracer = _tracer
    if tracer is None:
        yield _NO_CALL
        return
    from opentelemetry.trace import SpanKind, use_span

    # what the adapters send: the request's limit within the model's own (not for a JSON answer), and the
    # request's temperature, else the model's
    limit = request.max_tokens
    if not request.json_output and spec.max_tokens is not None:
        limit = min(limit, spec.max_tokens)
    temperature = request.temperature if request.temperature is not None else spec.temperature
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": spec.provider,
        "gen_ai.request.model": spec.name,
        "gen_ai.request.max_tokens": limit,
        "gen_ai.request.stream": True,
        "gen_ai.output.type": "json" if request.json_output else "text",
    }
    if temperature is not None:
        attributes["gen_ai.request.temperature"] = temperature
    if room_id is not None:
        attributes["gen_ai.conversation.id"] = room_id
    attributes.update(_server(spec.base_url))
    local = spec.provider in ("simulated",)  # in this process: no server to call
    span = tracer.start_span(
        f"chat {spec.name}", kind=SpanKind.INTERNAL if local else SpanKind.CLIENT, attributes=attributes
    )
    with use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
        try:
            yield ModelCall(span)
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):
                span.set_attribute("gen_ai.response.finish_reasons", ("error",))
            _ended_by(span, exc)
            raise


@contextlib.contextmanager
def request(
    http: HTTPConnection, room_id: str | None = None, *, command: str | None = None
) -> Iterator[None]:
    """The span of an HTTP request that starts a run, or of a WebSocket's `command` (run, stop) that does;
    the run started inside it becomes its child.

    A `traceparent` header from the client (on the request, or on the request that opened the WebSocket)
    makes it, and so the run, part of the client's trace. A refusal (a room already running, say) answers
    the client; it is recorded, not counted as an error.
    """
    tracer = _tracer
    if tracer is None:
        yield
        return
    from opentelemetry.trace import SpanKind, use_span

    route = _route(http.url.path, http.path_params)
    attributes: dict[str, Any] = {"http.route": route}
    if command is None:
        method = http.scope["method"]
        attributes["http.request.method"] = method
    else:
        method = command
        attributes["moot.command"] = command
    if room_id is not None:
        attributes["moot.room.id"] = room_id
    span = tracer.start_span(
        f"{method} {route}", context=_extract(http.headers), kind=SpanKind.SERVER, attributes=attributes
    )
    with use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
        try:
            yield
        except Exception as exc:
            from moot.exceptions import MootError

            if isinstance(exc, MootError):  # the client's to mend: told in the answer, not a server error
                span.set_attribute("error.type", _error_type(exc))
            else:
                _ended_by(span, exc)
            raise


# ---- across processes -----------------------------------------------------------------------------------


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers (`traceparent`, `tracestate`), for a message to another
    process; empty when tracing is off or nothing is being traced."""
    if _tracer is None:
        return {}
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    headers: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(headers)
    return headers


@contextlib.contextmanager
def attached(carried: Mapping[str, Any] | None) -> Iterator[None]:
    """Makes a carrier from another process the parent of the spans begun in the block (and of the tasks
    created in it). The carrier is untrusted: only well-formed W3C fields are taken, the rest is ignored."""
    if _tracer is None or not carried:
        yield
        return
    from opentelemetry import context

    token = context.attach(_extract(carried))
    try:
        yield
    finally:
        context.detach(token)


def _extract(carried: Mapping[str, Any]) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    fields = {
        name: value
        for name in _CARRIED
        if isinstance(value := carried.get(name), str) and len(value) <= _CARRIED_CHARS
    }
    return TraceContextTextMapPropagator().extract(fields)


# ---- helpers --------------------------------------------------------------------------------------------


def _ended_by(span: Span, exc: BaseException) -> None:
    """Records what ended a span early: an error, or a cancellation (a pause), which is no error."""
    import asyncio

    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        span.set_attribute("moot.cancelled", True)
    elif isinstance(exc, Exception):
        _error(span, _error_type(exc), str(exc))


def _error(span: Span, error_type: str, message: str) -> None:
    """Error status with error.type; the message is scrubbed of secrets and capped, with no traceback."""
    from opentelemetry.trace import Status, StatusCode

    said = scrub(message, limit=500)
    span.set_attribute("error.type", error_type)
    span.add_event("exception", {"exception.type": error_type, "exception.message": said})
    span.set_status(Status(StatusCode.ERROR, said))


def _error_type(exc: BaseException) -> str:
    return type(exc).__qualname__


def _server(base_url: str | None) -> dict[str, Any]:
    """server.address and server.port of a model's URL: host and port only, never a path or credentials."""
    if not base_url:
        return {}
    try:
        parts = urlsplit(base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return {}
    return {"server.address": parts.hostname, "server.port": port} if parts.hostname else {}


def _route(path: str, params: Mapping[str, Any]) -> str:
    """The path with its parameters put back as names (`/rooms/{room_id}/run`): one route, one span name."""
    names = {str(value): f"{{{name}}}" for name, value in params.items()}
    return "/".join(names.get(part, part) for part in path.split("/"))


def _short(text: str) -> str:
    """A name a server sent (its model, its finish reason): untrusted, so scrubbed and capped."""
    return scrub(text, limit=200)
