"""meetingtasks: a Celery-based task and event platform on Redis for a video-meeting backend."""

from meetingtasks.dispatcher import Batch, TaskHandle, dispatch, dispatch_batch
from meetingtasks.errors import (
    ConfigurationError,
    DispatchError,
    InvalidPayload,
    MeetingTasksError,
    MessageTooLarge,
    PermanentError,
    TaskFailed,
    TaskNotFound,
    UnknownTaskType,
    WaitTimeout,
)
from meetingtasks.platform import Platform, configure, get_platform
from meetingtasks.priority import Priority
from meetingtasks.registry import task_type
from meetingtasks.settings import Settings, load_settings
from meetingtasks.status import Status

__all__ = [
    "Batch",
    "ConfigurationError",
    "DispatchError",
    "InvalidPayload",
    "MeetingTasksError",
    "MessageTooLarge",
    "PermanentError",
    "Platform",
    "Priority",
    "Settings",
    "Status",
    "TaskFailed",
    "TaskHandle",
    "TaskNotFound",
    "UnknownTaskType",
    "WaitTimeout",
    "configure",
    "dispatch",
    "dispatch_batch",
    "get_platform",
    "load_settings",
    "task_type",
]
