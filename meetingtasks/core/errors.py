"""The one exception tree of meetingtasks.

::

    MeetingTasksError
    ├── ConfigurationError          settings or environment are wrong (one line: key and reason)
    ├── DispatchError               a task could not be accepted for queuing
    │   ├── UnknownTaskType         (also a ValueError) the type is not in the routing table
    │   ├── InvalidPayload          (also a ValueError) the payload fails the type's model
    │   ├── MessageTooLarge         (also a ValueError) the encoded message exceeds max_message_bytes
    │   └── BrokerUnavailable       (also a ConnectionError) Redis could not be reached within dispatch_retry_s
    ├── ReplicationTimeout          fewer than min_replica_acks replicas confirmed a write in time (it is on the
    │                               primary, not yet safe from a failover)
    ├── TaskNotFound                no status, dead letter or schedule exists for an id
    ├── ReplayRefused               a dead letter that must not be queued again as it is (nothing queued)
    ├── MoveRefused                 a task's priority or due time cannot change now (nothing changed)
    ├── TaskFailed                  raised by TaskHandle.wait() when the task ended without success
    ├── WaitTimeout                 (also a TimeoutError) TaskHandle.wait() ran out of time
    ├── PermanentError              raised by a handler: a domain refusal, fails at once, never retried
    ├── InfrastructureError         the worker's own bookkeeping could not reach Redis or Redis refused it
    ├── InvalidReplay               (also a ValueError) an event replay's channel, subscription or window is wrong
    └── InvalidEvent                (also a ValueError) an event envelope refused at publish
        ├── UnknownChannel          the channel is not one of the event channels
        └── UnknownEventType        the event type is not declared for its channel

Control flow (retry later, cancelled) is expressed with Celery's own ``Retry`` and ``Ignore`` and is never
logged as a failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class MeetingTasksError(Exception):
    """Root of every error meetingtasks raises on purpose."""


class ConfigurationError(MeetingTasksError):
    """Settings or the environment are wrong; the message names the key and the reason."""


class DispatchError(MeetingTasksError):
    """A task could not be accepted: nothing was queued."""


class UnknownTaskType(DispatchError, ValueError):
    """The task type is not registered in the routing table."""


class InvalidPayload(DispatchError, ValueError):
    """The payload does not validate against the task type's model."""


def validation_message(task_type: str, exc: ValidationError) -> str:
    """The message of an :class:`InvalidPayload`, one line naming every failing field (worker and dispatcher
    alike): ``user_register: payload.email: value is not a valid email``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"payload.{where}: {err['msg']}")
    return f"{task_type}: " + "; ".join(parts)


class MessageTooLarge(DispatchError, ValueError):
    """The encoded message is larger than ``Settings.max_message_bytes``."""


class BrokerUnavailable(DispatchError, ConnectionError):
    """Redis could not be reached; the message says whether the task may have been queued."""


class ReplicationTimeout(MeetingTasksError):
    """Fewer than ``min_replica_acks`` replicas confirmed a write within ``replica_ack_timeout_ms``: it is stored on
    the primary, but a failover before a replica catches up would lose it."""


class TaskNotFound(MeetingTasksError, LookupError):
    """No record exists for the given task or dead-letter id."""


class ReplayRefused(MeetingTasksError):
    """A dead letter cannot be replayed as it is (e.g. it names another service's queue); nothing was queued."""


class MoveRefused(MeetingTasksError):
    """A task's priority or due time cannot change now: it started, finished, was fetched by a worker, is not
    scheduled, or lies deeper in its queue than ``reprioritize_scan_max``. Nothing changed."""


class TaskFailed(MeetingTasksError):
    """The awaited task ended in a state other than SUCCEEDED."""

    def __init__(self, task_id: str, status: str, error: str | None) -> None:
        self.task_id = task_id
        self.status = status
        self.error = error
        super().__init__(f"task {task_id} ended {status}: {error or 'no error recorded'}")


class WaitTimeout(MeetingTasksError, TimeoutError):
    """``TaskHandle.wait`` gave up before the task finished."""


class PermanentError(MeetingTasksError):
    """A handler's domain refusal (wrong password, meeting ended): FAILED at once, no retry, no dead letter."""


class InfrastructureError(MeetingTasksError):
    """A worker's bookkeeping write (status, outcome, ack, retry, dead letter, rate-limit deferral, fetch) did not
    happen: Redis was unreachable or refused it (out of memory, read-only replica during a failover, a busy script,
    a lost script cache). Never a task failure and never a reason to ack: the message stays leased and the write is
    retried with backoff, or the message is handed back or redelivered."""


class InvalidReplay(MeetingTasksError, ValueError):
    """An event replay was asked with an unknown channel or subscription or a wrong window; nothing was queued."""


class InvalidEvent(MeetingTasksError, ValueError):
    """An event envelope is malformed (field named in the message); nothing was published."""


class UnknownChannel(InvalidEvent):
    """The channel is not one of the platform's event channels (:mod:`meetingtasks.events.channels`)."""


class UnknownEventType(InvalidEvent):
    """The event type is not declared for the channel it was published on."""
