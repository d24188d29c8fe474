"""meetingtasks: a Celery-based task and event platform on Redis for a video-meeting backend."""

import sys
from typing import TYPE_CHECKING, Any

from meetingtasks.core import former_paths
from meetingtasks.core.optional_imports import skipped
from meetingtasks.worker.gc_tuning import collections_paused, starting_a_worker

# Nearly all the import allocates lives as long as the process: collections during it are wasted; a worker keeps
# them off until it freezes its start-up heap (see meetingtasks.worker.gc_tuning).
with collections_paused(until_frozen=starting_a_worker(sys.orig_argv)):
    # redis-py imports the OpenTelemetry metrics SDK only to note that it is installed (its metrics import it
    # again once configured): ~30 ms of every process's start-up (see meetingtasks.core.optional_imports).
    with skipped("opentelemetry.sdk.metrics"):
        import redis as _redis  # noqa: F401

    # The platform's maintenance task types (run by user workers, scheduled by beat) are built in.
    from meetingtasks.core.errors import (
        BrokerUnavailable,
        ConfigurationError,
        DispatchError,
        InvalidEvent,
        InvalidPayload,
        MeetingTasksError,
        MessageTooLarge,
        MoveRefused,
        PermanentError,
        ReplicationTimeout,
        TaskFailed,
        TaskNotFound,
        UnknownTaskType,
        WaitTimeout,
    )
    from meetingtasks.core.priority import Priority
    from meetingtasks.core.registry import task_type
    from meetingtasks.core.settings import Settings, load_settings
    from meetingtasks.enqueue.dispatcher import Batch, TaskHandle, dispatch, dispatch_batch
    from meetingtasks.events import Event, channel, on_event, publish_event, publish_events
    from meetingtasks.store.callbacks import BatchOutcome, TaskOutcome
    from meetingtasks.store.platform import Platform, configure, get_platform
    from meetingtasks.store.status import Status
    from meetingtasks.worker import maintenance as maintenance
    from meetingtasks.worker.current import current_task_id, running_as

# The module paths of earlier releases (meetingtasks.dispatcher, meetingtasks.flower, ...) still import.
former_paths.install()

if TYPE_CHECKING:
    from meetingtasks.store.cancel import TaskCancelled, cancel_task, is_cancelled, raise_if_cancelled
    from meetingtasks.worker.progress import report_progress

# Loaded on first use: the cancel module imports Celery, which a process that only dispatches never needs.
_LAZY = {"TaskCancelled", "cancel_task", "is_cancelled", "raise_if_cancelled"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from meetingtasks.store import cancel

        return getattr(cancel, name)
    if name == "report_progress":  # imports Celery too
        from meetingtasks.worker.progress import report_progress

        return report_progress
    raise AttributeError(f"module 'meetingtasks' has no attribute {name!r}")


__all__ = [
    "Batch",
    "BatchOutcome",
    "BrokerUnavailable",
    "ConfigurationError",
    "DispatchError",
    "Event",
    "InvalidEvent",
    "InvalidPayload",
    "MeetingTasksError",
    "MessageTooLarge",
    "MoveRefused",
    "PermanentError",
    "Platform",
    "Priority",
    "ReplicationTimeout",
    "Settings",
    "Status",
    "TaskCancelled",
    "TaskFailed",
    "TaskHandle",
    "TaskNotFound",
    "TaskOutcome",
    "UnknownTaskType",
    "WaitTimeout",
    "cancel_task",
    "channel",
    "configure",
    "current_task_id",
    "dispatch",
    "dispatch_batch",
    "get_platform",
    "is_cancelled",
    "load_settings",
    "on_event",
    "publish_event",
    "publish_events",
    "raise_if_cancelled",
    "report_progress",
    "running_as",
    "task_type",
]
