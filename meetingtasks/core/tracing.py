"""OpenTelemetry tracing across the platform: dispatch -> task -> event -> bridge -> task.

The W3C trace context (``traceparent``/``tracestate``) travels in three places:

- a task message's headers: :func:`dispatch_headers` (called by ``Dispatcher.prepare``) starts a
  PRODUCER span ``dispatch <type>`` under the caller's current span and returns the headers to inject;
- a worker run: Celery's ``task_prerun``/``task_postrun`` signals (wired by :func:`install_worker_tracing`)
  open a CONSUMER span ``run <type>`` whose parent is taken from the message headers, and make it
  current, so everything the handler does (dispatches, events, logs) belongs to the trace;
- an event envelope's ``trace`` field: :func:`event_trace` (called by ``publish_event``) starts a PRODUCER
  span ``publish <event type>``; the bridge wraps its work for one event in :func:`consume_event`, so the
  tasks the event triggers continue the same trace.

Only ``opentelemetry-api`` is required: without an SDK configured spans are not recorded, but a trace
context that arrives is still passed on (and its trace id shows in JSON logs). With
``MEETINGTASKS_OTLP_ENDPOINT`` set, :func:`configure_tracing` installs the SDK with an OTLP/HTTP exporter
(``pip install 'meetingtasks[otel]'``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.settings import Settings

log = logging.getLogger(__name__)

TRACER_NAME = "meetingtasks"
#: Header names a W3C trace context uses; kept in task headers and event envelopes.
TRACE_HEADERS = ("traceparent", "tracestate")

_lock = threading.Lock()
_state: dict[str, Any] = {"configured": False, "worker_signals": False}
_running: dict[str, tuple[Span, object]] = {}


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits, or ``None`` outside any trace."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def active() -> bool:
    """True when there is a trace to continue or an SDK to start one; dispatch skips all tracing work
    otherwise (about 1 us instead of 5 us per task)."""
    if trace.get_current_span().get_span_context().is_valid:
        return True
    # trace.get_tracer_provider() reads the environment on every call (about 3 us); the module global it
    # falls back on stays None until an SDK provider is installed.
    return getattr(trace, "_TRACER_PROVIDER", None) is not None


def _inject(span: Span) -> dict[str, str]:
    if not span.get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def dispatch_headers(task_type: str, task_id: str, queue: str) -> dict[str, str]:
    """Record the ``dispatch <type>`` span and return the trace headers for the task message (``{}`` when
    there is no trace to continue and no SDK to start one)."""
    if not active():
        return {}
    span = tracer().start_span(
        f"dispatch {task_type}", kind=SpanKind.PRODUCER,
        attributes={"meetingtasks.task_id": task_id, "meetingtasks.task_type": task_type,
                    "messaging.destination.name": queue, "messaging.system": "redis"},
    )
    try:
        return _inject(span)
    finally:
        span.end()


def event_trace(channel: str, event_type: str, event_id: str) -> dict[str, str]:
    """Record the ``publish <event type>`` span; return the carrier for the envelope's ``trace`` field."""
    if not active():
        return {}
    span = tracer().start_span(
        f"publish {event_type}", kind=SpanKind.PRODUCER,
        attributes={"meetingtasks.event_id": event_id, "meetingtasks.event_type": event_type,
                    "messaging.destination.name": channel},
    )
    try:
        return _inject(span)
    finally:
        span.end()


@contextmanager
def consume_event(event_type: str, carrier: Mapping[str, Any] | None, **attributes: Any) -> Iterator[Span]:
    """Make the event's trace current while the bridge handles it (span ``handle <event type>``)."""
    parent = propagate.extract(dict(carrier or {}))
    attrs = {"meetingtasks.event_type": event_type,
             **{f"meetingtasks.{k}": v for k, v in attributes.items() if v is not None}}
    with tracer().start_as_current_span(f"handle {event_type}", context=parent, kind=SpanKind.CONSUMER,
                                        attributes=attrs) as span:
        yield span


# --- worker side ----------------------------------------------------------------------------------------------
def _carrier_of(request: Any) -> dict[str, str]:
    carrier = {}
    for name in TRACE_HEADERS:
        value = getattr(request, name, None)
        if value is None:
            value = (getattr(request, "headers", None) or {}).get(name)
        if isinstance(value, str):
            carrier[name] = value
    return carrier


def start_task_span(task: Any, task_id: str) -> None:
    carrier = _carrier_of(task.request)
    if not carrier and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return  # no SDK in this process and no trace to carry on: a span would record nothing and cost ~5% CPU
    spec = getattr(task, "spec", None)
    name = spec.name if spec is not None else task.name
    parent = propagate.extract(carrier)
    span = tracer().start_span(
        f"run {name}", context=parent, kind=SpanKind.CONSUMER,
        attributes={"meetingtasks.task_id": task_id, "meetingtasks.task_type": name,
                    "meetingtasks.service": spec.service if spec is not None else "",
                    "meetingtasks.attempt": int(task.request.retries or 0) + 1},
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    _running[task_id] = (span, token)


def end_task_span(task_id: str, state: str | None) -> None:
    entry = _running.pop(task_id, None)
    if entry is None:
        return
    span, token = entry
    if state in ("FAILURE", "RETRY"):
        span.set_status(Status(StatusCode.ERROR, state))
    span.set_attribute("meetingtasks.outcome", state or "")
    otel_context.detach(token)  # type: ignore[arg-type]
    span.end()


def install_worker_tracing(app: Any) -> None:
    """Open a span around every task run of this process's workers (once per process)."""
    configure_tracing(app.mt_platform.settings, f"meetingtasks-worker-{app.mt_service}")
    with _lock:
        if _state["worker_signals"]:
            return
        _state["worker_signals"] = True
    from celery.signals import task_postrun, task_prerun

    def open_task_span(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
        if task_id is not None and task is not None:
            start_task_span(task, task_id)

    def close_task_span(task_id: str | None = None, state: str | None = None, **kwargs: Any) -> None:
        if task_id is not None:
            end_task_span(task_id, state)

    task_prerun.connect(open_task_span, weak=False)
    task_postrun.connect(close_task_span, weak=False)


# --- export ---------------------------------------------------------------------------------------------------
def configure_tracing(settings: Settings, service_name: str) -> bool:
    """With ``otlp_endpoint`` set, export this process's spans over OTLP/HTTP. Returns True if it did."""
    if not settings.otlp_endpoint:
        return False
    with _lock:
        if _state["configured"]:
            return True
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            raise ConfigurationError(
                "MEETINGTASKS_OTLP_ENDPOINT is set but the OpenTelemetry SDK/OTLP exporter is not installed: "
                "pip install 'meetingtasks[otel]'"
            ) from None
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        endpoint = settings.otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        trace.set_tracer_provider(provider)
        _state["configured"] = True
        log.info("tracing: exporting spans of %s to %s", service_name, endpoint)
        return True
