"""One trace from dispatch through a task, the event it publishes, the bridge, and the task the event triggers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from opentelemetry import trace

from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.store.platform import Platform
from tests.ops.conftest import Process
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

# Slow tier: it drives an external tool and waits for its scrapes and exports.
pytestmark = pytest.mark.slow

# The list tests.support.span_capture fills. Not imported from there: importing that module installs its
# Redis-writing tracer provider in this (pytest) process, for every later test too.
SPANS_KEY = "test:spans"
TRACED_ENV = {"MEETINGTASKS_INCLUDE": "tests.support.tasks,tests.support.ops_tasks,tests.support.span_capture"}


def test_one_trace_spans_dispatch_task_event_bridge_and_triggered_task(
    platform: Platform, r: redis.Redis, env: dict[str, str], spans: Any, ops_tasks: None,
    start_worker: Callable[..., WorkerProcess], run_process: Callable[..., Process],
) -> None:
    # Given a worker and a bridge that record their spans, and a span current in this process
    start_worker("ai", env_overrides=TRACED_ENV)
    bridge = run_process(["meetingtasks", "bridge"], {**env, **TRACED_ENV}, name="bridge")
    bridge.wait_log("bridge ready")
    spans.clear()

    # When a task is dispatched inside the trace; it publishes an event, which the bridge turns into a task
    with trace.get_tracer("tests").start_as_current_span("user request") as root:
        Dispatcher(platform).dispatch("t_traced_start", {"tag": "chain"})
    trace_id = format(root.get_span_context().trace_id, "032x")
    end_trace = wait_for(lambda: r.lrange("test:trace-end:chain", 0, -1), 60, message="the triggered task to run")

    # Then the triggered task ran in the same trace
    assert [t.decode() for t in end_trace] == [trace_id]  # type: ignore[union-attr]

    # and the spans form one chain, each the child of the one before
    def recorded() -> list[dict[str, Any]] | None:
        remote = [json.loads(raw) for raw in r.lrange(SPANS_KEY, 0, -1)]
        return remote if any(s["name"] == "run t_traced_end" for s in remote) else None

    remote = wait_for(recorded, 30, message="the last span to be exported")
    local = [{"name": s.name, "trace_id": format(s.context.trace_id, "032x"),
              "span_id": format(s.context.span_id, "016x"),
              "parent_id": format(s.parent.span_id, "016x") if s.parent else None}
             for s in spans.get_finished_spans()]
    by_id = {s["span_id"]: s for s in [*local, *remote]}  # type: ignore[union-attr]
    last = next(s for s in remote if s["name"] == "run t_traced_end")  # type: ignore[union-attr]
    ancestry = [last]
    while ancestry[-1]["parent_id"] in by_id:
        ancestry.append(by_id[ancestry[-1]["parent_id"]])
    chain = ["user request", "dispatch t_traced_start", "run t_traced_start", "publish emotion_detection.completed",
             "handle emotion_detection.completed", "dispatch t_traced_end", "run t_traced_end"]
    assert [s["name"] for s in reversed(ancestry)] == chain
    assert {s["trace_id"] for s in ancestry} == {trace_id}
    assert ancestry[-1]["parent_id"] is None  # the chain reaches the root span


def test_spans_are_exported_over_otlp_http_when_an_endpoint_is_set(
    platform: Platform, spans: Any, start_worker: Callable[..., WorkerProcess],
) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    # Given an OTLP/HTTP receiver and a worker told to export there
    received: list[tuple[str, bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        start_worker("ai", env_overrides={"MEETINGTASKS_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
                                          "OTEL_BSP_SCHEDULE_DELAY": "100"})

        # When a task runs inside a trace
        with trace.get_tracer("tests").start_as_current_span("otlp request") as root:
            handle = Dispatcher(platform).dispatch("t_echo", {"tag": "otlp"})
        handle.wait(timeout=30)

        # Then the worker posts its span, with our trace id, to /v1/traces
        trace_id = root.get_span_context().trace_id.to_bytes(16, "big")
        wait_for(lambda: any(b"run t_echo" in body and trace_id in body for _, body in received), 30,
                 interval_s=0.1, message="an OTLP export with the task's span")
        assert {path for path, _ in received} == {"/v1/traces"}
    finally:
        server.shutdown()
