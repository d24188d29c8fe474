"""Priorities and the queue names they map to.

This module is the only place that knows how queue names are spelled.
Priority lives in four separate Redis lists per service, consumed in strict order by kombu's
``queue_order_strategy="priority"``; per-message priority numbers are never used.
"""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @classmethod
    def parse(cls, value: Priority | str | None, default: Priority) -> Priority:
        """Return the priority named by ``value`` (case-insensitive), or ``default`` for ``None``."""
        if value is None:
            return default
        if isinstance(value, Priority):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise ValueError(f"unknown priority {value!r}: use one of {names}") from None


#: Strict consumption order, highest first.
PRIORITY_ORDER: tuple[Priority, ...] = (Priority.CRITICAL, Priority.HIGH, Priority.NORMAL, Priority.LOW)


def queue_name(service: str, priority: Priority) -> str:
    """The Redis list (and Celery queue) holding ``service``'s tasks of ``priority``."""
    return f"{service}.{priority.value}"


def service_queues(service: str) -> list[str]:
    """The four queues of a service in the order a worker consumes them."""
    return [queue_name(service, p) for p in PRIORITY_ORDER]


def parse_queue(queue: str) -> tuple[str, Priority] | None:
    """Split ``"<svc>.<priority>"`` into its parts, or ``None`` when it is not one of ours."""
    service, _, prio = queue.rpartition(".")
    if not service:
        return None
    try:
        return service, Priority(prio)
    except ValueError:
        return None
