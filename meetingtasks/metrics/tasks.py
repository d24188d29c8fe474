"""Task counters and histograms, fed by the status channel (one JSON event per accepted transition).

Counting from ``P status`` keeps the worker hot path untouched: the transition Lua script already
publishes every change with ``type``, ``service``, ``priority``, ``wait_s`` (on STARTED) and ``run_s`` (on
RETRYING and terminal states). Pub/sub is fire-and-forget, so transitions published while the exporter
is down or reconnecting are not counted; Prometheus' ``rate()``/``increase()`` treat the exporter's
restart as a counter reset, so dashboards stay right apart from that gap.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

LABELS = ("service", "type", "priority")
#: Seconds; spans signaling (milliseconds) to transcoding (minutes).
RUN_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
WAIT_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_UNKNOWN = "unknown"
_MAX_LABEL = 100

#: Status -> the counter it increments (suffix of ``meetingtasks_tasks_<suffix>_total``).
STATUS_COUNTERS = {
    "STARTED": "started",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "RETRYING": "retried",
    "DEAD_LETTERED": "dead_lettered",
    "CANCELLED": "cancelled",
    "TIMED_OUT": "timed_out",
}
_HELP = {
    "published": "Tasks accepted by the dispatcher (queued now or scheduled for later)",
    "started": "Task runs started by a worker (each attempt counts)",
    "succeeded": "Tasks that finished successfully",
    "failed": "Tasks that failed permanently (PermanentError)",
    "retried": "Failed attempts sent back for a retry",
    "dead_lettered": "Tasks moved to the dead-letter queue",
    "cancelled": "Tasks cancelled before or while running",
    "timed_out": "Tasks stopped by their time limit",
}


def _label(value: Any) -> str:
    if value is None or value == "":
        return _UNKNOWN
    return str(value)[:_MAX_LABEL]


class TaskMetrics:
    """The task metrics of one exporter, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counters = {
            name: Counter(f"meetingtasks_tasks_{name}", text, LABELS, registry=registry)
            for name, text in _HELP.items()
        }
        self.run_seconds = Histogram(
            "meetingtasks_task_run_seconds", "Run time of one attempt, from STARTED to its outcome",
            LABELS, buckets=RUN_BUCKETS_S, registry=registry,
        )
        self.wait_seconds = Histogram(
            "meetingtasks_task_queue_wait_seconds", "Time a task waited in its queue once runnable",
            LABELS, buckets=WAIT_BUCKETS_S, registry=registry,
        )
        self.events = Counter(
            "meetingtasks_status_events", "Status events received by the exporter", ("status",), registry=registry
        )
        # prometheus_client's labels() validates and locks on every call; the label sets are few, so their
        # children are looked up once (this halves the cost of counting an event).
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, event: dict[str, Any]) -> None:
        """Count one status event; events of unknown shape are ignored (the feed is not ours alone)."""
        status = event.get("status")
        if not isinstance(status, str) or event.get("op", "status") != "status":
            return
        self._child(self.events, _label(status)).inc()
        labels = (_label(event.get("service")), _label(event.get("type")), _label(event.get("priority")))
        if status in ("QUEUED", "SCHEDULED"):
            # Only the dispatcher's transition names the type; the pump's SCHEDULED -> QUEUED and a
            # dead-letter replay do not, and must not count the same task twice.
            if event.get("type"):
                self._child(self.counters["published"], *labels).inc()
            return
        counter = STATUS_COUNTERS.get(status)
        if counter is None:
            return
        self._child(self.counters[counter], *labels).inc()
        wait_s = event.get("wait_s")
        if status == "STARTED" and isinstance(wait_s, int | float):
            self._child(self.wait_seconds, *labels).observe(max(0.0, float(wait_s)))
        run_s = event.get("run_s")
        if status != "STARTED" and isinstance(run_s, int | float):
            self._child(self.run_seconds, *labels).observe(max(0.0, float(run_s)))
