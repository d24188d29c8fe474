"""What beat runs.

**The delayed-set pump** is not a periodic entry: every beat process (the lock holder and its standbys)
runs it for all five services on threads every ``pump_interval_s`` (default 0.2 s), and so does every
worker for its own service. A due task therefore moves to its queue within one pump interval, whether or
not beat is up, and never takes a hop through a queue itself.

**Periodic entries** are task types, dispatched through the platform (routing, priority, status) by the
one beat process holding the lock. The built-in ones are the platform's maintenance
(:mod:`meetingtasks.worker.maintenance`, run by ``user`` workers):

================  ============================  =====================================================
entry             task type                     every
================  ============================  =====================================================
queue-depths      maintenance_queue_depths      ``queue_depths_interval_s`` (30 s): stats snapshot
trim-streams      maintenance_trim_streams      ``stream_trim_interval_s`` (30 s): event streams
================  ============================  =====================================================

and the meeting system's own jobs, each run by a worker of its service:

======================  =====================  ===============================================================
entry                   task type              every
======================  =====================  ===============================================================
expire-logins           user_sessions_expire   ``login_sweep_interval_s`` (60 s): drop expired login sessions;
                                               a user left without one goes offline
end-overdue-meetings    meeting_overdue_end    ``meeting_sweep_interval_s`` (60 s): end live meetings past
                                               their maximum duration (their own scheduled end was lost)
close-silent-signaling  signaling_stale_close  ``signaling_sweep_interval_s`` (15 s): close signaling
                                               sessions without a heartbeat for
                                               ``signaling_heartbeat_timeout_s`` (60 s)
======================  =====================  ===============================================================

Services add their own jobs with :func:`periodic` in a module that beat loads (``--include`` or
``MEETINGTASKS_INCLUDE``)::

    from beat.schedule import periodic
    periodic("close-idle-meetings", "meeting_end", every_s=60, payload={...}, priority="low")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery.schedules import crontab as celery_crontab

from meetingtasks.core.priority import Priority
from meetingtasks.core.settings import Settings
from meetingtasks.services.settings import MeetingSettings


@dataclass(frozen=True)
class Periodic:
    """One periodic entry: a task type run ``every_s`` seconds or on a ``crontab`` ("m h dom mon dow")."""

    name: str
    task_type: str
    every_s: float | None = None
    crontab: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    priority: str | None = None

    def __post_init__(self) -> None:
        if (self.every_s is None) == (self.crontab is None):
            raise ValueError(f"periodic entry {self.name!r}: give exactly one of every_s or crontab")
        if self.every_s is not None and self.every_s <= 0:
            raise ValueError(f"periodic entry {self.name!r}: every_s must be > 0, got {self.every_s}")
        if self.crontab is not None and len(self.crontab.split()) != 5:
            raise ValueError(f"periodic entry {self.name!r}: crontab needs 5 fields (m h dom mon dow)")
        if self.priority is not None:
            Priority.parse(self.priority, Priority.NORMAL)

    def celery_entry(self) -> dict[str, Any]:
        """The entry in Celery's ``beat_schedule`` form (``kwargs`` carries the payload)."""
        if self.crontab is not None:
            minute, hour, day_of_month, month_of_year, day_of_week = self.crontab.split()
            schedule: Any = celery_crontab(minute, hour, day_of_month, month_of_year, day_of_week)
        else:
            schedule = timedelta(seconds=float(self.every_s or 0))
        options = {"priority": self.priority} if self.priority else {}
        return {"task": self.task_type, "schedule": schedule, "kwargs": dict(self.payload), "options": options}


_added: dict[str, Periodic] = {}


def periodic(
    name: str,
    task_type: str,
    *,
    every_s: float | None = None,
    crontab: str | None = None,
    payload: dict[str, Any] | None = None,
    priority: Priority | str | None = None,
) -> Periodic:
    """Add (or replace) a periodic entry; call it at import time of a module beat loads."""
    entry = Periodic(name, task_type, every_s, crontab, dict(payload or {}),
                     str(priority.value if isinstance(priority, Priority) else priority) if priority else None)
    _added[name] = entry
    return entry


def entries(settings: Settings) -> list[Periodic]:
    """The built-in entries (maintenance, the meeting system's jobs) followed by those added with :func:`periodic`."""
    meeting = MeetingSettings.load()
    builtin = [
        Periodic("queue-depths", "maintenance_queue_depths", every_s=settings.queue_depths_interval_s),
        Periodic("trim-streams", "maintenance_trim_streams", every_s=settings.stream_trim_interval_s),
        Periodic("expire-logins", "user_sessions_expire", every_s=meeting.login_sweep_interval_s),
        Periodic("end-overdue-meetings", "meeting_overdue_end", every_s=meeting.meeting_sweep_interval_s),
        Periodic("close-silent-signaling", "signaling_stale_close", every_s=meeting.signaling_sweep_interval_s),
    ]
    return [*(e for e in builtin if e.name not in _added), *_added.values()]


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule`` for ``settings``."""
    return {entry.name: entry.celery_entry() for entry in entries(settings)}
