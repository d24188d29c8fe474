"""Installs an OpenTelemetry SDK in a worker or bridge process whose finished spans land in Redis.

Imported through MEETINGTASKS_INCLUDE by the tracing test: the subprocesses' spans are pushed as JSON to
the Redis list ``test:spans`` of the process's platform, where the test reads them next to the spans its
own in-memory exporter holds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from meetingtasks.store.platform import get_platform

SPANS_KEY = "test:spans"


def span_record(span: ReadableSpan) -> dict[str, object]:
    ctx = span.get_span_context()
    return {
        "name": span.name,
        "trace_id": format(ctx.trace_id, "032x") if ctx else None,
        "span_id": format(ctx.span_id, "016x") if ctx else None,
        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
        "kind": span.kind.name,
        "attributes": dict(span.attributes or {}),
    }


class RedisSpanExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = get_platform().redis()
        client.rpush(SPANS_KEY, *[json.dumps(span_record(s), default=str) for s in spans])
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


_provider = TracerProvider(resource=Resource.create({"service.name": "meetingtasks-test"}))
_provider.add_span_processor(SimpleSpanProcessor(RedisSpanExporter()))
trace.set_tracer_provider(_provider)
