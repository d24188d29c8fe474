"""JSON log lines from a real worker carry the task's service, id, type, priority, attempt and trace id."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace

from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.store.platform import Platform
from tests.ops.conftest import OPS_INCLUDE
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

# Slow tier: it drives an external tool and waits for its scrapes and exports.
pytestmark = pytest.mark.slow


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_handler_log_line_carries_the_task_context_and_trace_id(
    platform: Platform, start_worker: Callable[..., WorkerProcess], spans: Any, ops_tasks: None,
) -> None:
    # Given a worker writing JSON logs
    worker = start_worker("ai", env_overrides={**OPS_INCLUDE, "MEETINGTASKS_LOG_JSON": "true"})

    # When a task whose handler logs is dispatched inside a trace
    with trace.get_tracer("tests").start_as_current_span("checkout") as root:
        handle = Dispatcher(platform).dispatch("t_log", {"tag": "json-1"}, priority="high")
    trace_id = format(root.get_span_context().trace_id, "032x")
    handle.wait(timeout=30)

    # Then the handler's line is one JSON object with the whole context
    def handler_line() -> dict[str, Any] | None:
        return next((line for line in json_lines(worker.log()) if line["message"] == "handling json-1"), None)

    line = wait_for(handler_line, 10, message="the handler's JSON log line")
    assert line == {
        "time": line["time"], "level": "INFO", "logger": "tests.ops", "message": "handling json-1",
        "component": "worker", "service": "ai", "task_id": handle.id, "task_type": "t_log", "priority": "high",
        "attempt": 1, "trace_id": trace_id,
    }
    # and the worker's own lines are JSON too (the ready line among them), without a task context
    ready = [entry for entry in json_lines(worker.log()) if entry["message"].endswith(" ready.")]
    assert ready and ready[0]["component"] == "worker" and "task_id" not in ready[0]
