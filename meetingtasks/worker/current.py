"""The task a handler is running for: ``current_task_id()``.

Inside a worker it is the id of the Celery request being executed; outside one (a script or a test that
calls a handler function directly) it is the id set with :func:`running_as`, else ``None``. Handlers
derive everything that must come out the same on a redelivery (new ids, event ids, once-only values)
from it, which is what makes them idempotent.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("meetingtasks_task_id", default=None)


def current_task_id() -> str | None:
    """The id of the task being run in this thread, or ``None`` outside a task."""
    override = _override.get()
    if override is not None:
        return override
    from celery import current_task

    task = current_task._get_current_object() if current_task else None
    request = getattr(task, "request", None)
    task_id = getattr(request, "id", None)
    return str(task_id) if task_id else None


@contextlib.contextmanager
def running_as(task_id: str) -> Iterator[str]:
    """Run handler code outside a worker as if it were task ``task_id`` (same id twice = a redelivery)."""
    token = _override.set(task_id)
    try:
        yield task_id
    finally:
        _override.reset(token)
