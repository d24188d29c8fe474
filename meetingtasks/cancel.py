"""Cancellation: a registry in Redis, so a worker that was down when the cancel came still obeys it."""

from __future__ import annotations

from meetingtasks.errors import TaskNotFound
from meetingtasks.platform import Platform
from meetingtasks.status import Status


def cancel_task(platform: Platform, task_id: str) -> Status:
    """Cancel ``task_id``; returns its status afterwards. Unknown ids raise :class:`TaskNotFound`."""
    raise TaskNotFound(f"cancel of {task_id!r}: not implemented yet")
