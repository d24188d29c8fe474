"""Logging for every meetingtasks process: plain text, or JSON lines with ``MEETINGTASKS_LOG_JSON=1``.

A JSON line carries ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, ``component``
(worker, beat, bridge, gateway, exporter, up) and, inside a task, ``service``, ``task_id``, ``task_type``,
``priority``, ``attempt`` and ``trace_id`` (the OpenTelemetry trace, when there is one), plus ``exc_info``
text for exceptions. The task fields come from Celery's current task, so any logger used inside a
handler gets them without passing anything.

Workers and beat are wired through Celery's ``setup_logging`` signal (:func:`install_celery_logging`, called
by :func:`meetingtasks.worker.app.create_app` and the beat app), which also runs again in each prefork child. Other
processes call :func:`configure_logging` once at start.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from meetingtasks.core.settings import Settings
from meetingtasks.core.tracing import current_trace_id

#: Record attributes added by :class:`TaskContextFilter`, in the order JSON lines show them.
CONTEXT_FIELDS = ("component", "service", "task_id", "task_type", "priority", "attempt", "trace_id")
_PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_installed: dict[str, bool] = {}


def current_task_context() -> dict[str, Any]:
    """``service, task_id, task_type, priority, attempt`` of the task running in this thread, if any."""
    from celery import current_task

    task = current_task._get_current_object() if current_task else None
    spec = getattr(task, "spec", None)
    request = getattr(task, "request", None)
    if spec is None or request is None or getattr(request, "id", None) is None:
        return {}
    priority_of = getattr(task, "_priority", None)
    return {
        "service": spec.service,
        "task_id": request.id,
        "task_type": spec.name,
        "priority": priority_of().value if priority_of else None,
        "attempt": int(request.retries or 0) + 1,
    }


class TaskContextFilter(logging.Filter):
    """Adds :data:`CONTEXT_FIELDS` to every record (``None`` where unknown)."""

    def __init__(self, component: str, service: str | None = None) -> None:
        super().__init__()
        self.component = component
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        context: dict[str, Any] = {"component": self.component, "service": self.service}
        # A log line must never fail because the task context could not be read.
        with contextlib.suppress(Exception):
            context.update(current_task_context())
        context["trace_id"] = current_trace_id()
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, context.get(name))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; fields with no value are left out."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def build_handler(settings: Settings, component: str, service: str | None = None) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TaskContextFilter(component, service))
    handler.setFormatter(JsonFormatter() if settings.log_json else logging.Formatter(_PLAIN_FORMAT))
    handler.set_name("meetingtasks")
    return handler


def configure_logging(settings: Settings, *, component: str, service: str | None = None) -> None:
    """Make the root logger write to stderr in the configured format; calling it again replaces ours."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "meetingtasks"]:
        root.removeHandler(old)
    root.addHandler(build_handler(settings, component, service))
    root.setLevel(settings.log_level.upper())


def install_celery_logging(settings: Settings, *, component: str, service: str | None = None) -> None:
    """With ``log_json``, take over Celery's logging set-up in this process (and its pool children)."""
    if not settings.log_json or _installed.get(component):
        return
    from celery.signals import setup_logging

    def setup_json_logging(**kwargs: Any) -> None:
        configure_logging(settings, component=component, service=service)

    setup_logging.connect(setup_json_logging, weak=False)
    _installed[component] = True


def install_worker_logging(app: Any) -> None:
    """JSON logs for a service's worker (called by :func:`meetingtasks.worker.app.create_app`)."""
    install_celery_logging(app.mt_platform.settings, component="worker", service=app.mt_service)
