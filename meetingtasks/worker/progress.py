"""Progress reports from inside a running handler: ``report_progress(40, "denoising")``.

The percent and message land in the task's status record (``progress``, ``progress_message``) and are
published on the status channel as a ``status`` event of the running task, which the gateway pushes to
the client. The status and its history are left alone.
"""

from __future__ import annotations

from celery import current_task

from meetingtasks.worker.task import PlatformTask


def report_progress(percent: float, message: str = "") -> bool:
    """Report that the running task is ``percent`` (0-100) done. Returns False if the task is no longer
    running (it timed out or was cancelled meanwhile). Raises ``RuntimeError`` outside a task handler."""
    task = current_task._get_current_object() if current_task else None
    if not isinstance(task, PlatformTask) or not getattr(task.request, "id", None):
        raise RuntimeError("report_progress() works only inside a running task handler")
    if not 0 <= percent <= 100:
        raise ValueError(f"progress must be between 0 and 100 percent, got {percent}")
    task.apply_buffered_start()  # progress is refused unless the record says STARTED
    p = task.platform
    return p.status.progress(
        p.redis(task.spec.service), task.request.id, float(percent), message,
        attempt=int(task.request.retries or 0) + 1, fields=task._identity(),
    )
