"""The platform's periodic maintenance, as task types that beat schedules (see ``beat/schedule.py``).

They run on the **user** service at **high** priority: user tasks are short (logins, profile writes), so
maintenance never waits behind a long transcode or recognition job, and high priority keeps it ahead of a
normal-priority backlog without competing with critical work. Any ``meetingtasks worker user`` runs them.

- ``maintenance_queue_depths``: writes the ``stats`` rows (queued, unacked, scheduled, dead-lettered per
  service and priority) as one JSON snapshot to ``Keys.queue_depths``, for dashboards and autoscalers
  that want the numbers without running the counting scripts themselves.
- ``maintenance_trim_streams``: trims each event stream below what every consumer group acknowledged and
  warns of a stream over its cap (:func:`meetingtasks.events.retention.trim_streams`); returns the entries
  removed, the channels over the cap and, per channel, what was removed and what is left.

Task-status records need no job: every status write sets ``EXPIRE status_ttl_s`` (for a delayed task,
``status_ttl_s`` after its due time), so Redis expires them by itself.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from meetingtasks.core.message import dumps, loads
from meetingtasks.core.priority import Priority
from meetingtasks.core.registry import task_type
from meetingtasks.events.retention import trim_streams
from meetingtasks.store.platform import Platform, get_platform
from meetingtasks.store.stats import collect

log = logging.getLogger(__name__)

#: The service whose workers run maintenance.
MAINTENANCE_SERVICE = "user"


class NoPayload(BaseModel):
    """Maintenance jobs take no input."""

    model_config = ConfigDict(extra="forbid")


def refresh_queue_depths(platform: Platform) -> dict[str, Any]:
    """Write the current ``stats`` rows to ``Keys.queue_depths``; returns the snapshot."""
    snapshot = {"time": time.time(), "rows": [row.to_dict() for row in collect(platform)]}
    platform.redis().set(platform.keys.queue_depths, dumps(snapshot))
    return snapshot


def read_queue_depths(platform: Platform) -> dict[str, Any] | None:
    """The last snapshot ``maintenance_queue_depths`` wrote, or ``None``."""
    raw = platform.redis().get(platform.keys.queue_depths)
    return None if raw is None else dict(loads(raw))


@task_type(MAINTENANCE_SERVICE, "maintenance_queue_depths", payload=NoPayload, priority=Priority.HIGH,
           max_retries=0, timeout=60)
def maintenance_queue_depths(_: NoPayload) -> dict[str, int]:
    snapshot = refresh_queue_depths(get_platform())
    rows = snapshot["rows"]
    return {name: sum(int(row[name]) for row in rows) for name in ("queued", "unacked", "scheduled", "dead_lettered")}


@task_type(MAINTENANCE_SERVICE, "maintenance_trim_streams", payload=NoPayload, priority=Priority.HIGH,
           max_retries=0, timeout=300)
def maintenance_trim_streams(_: NoPayload) -> dict[str, Any]:
    trims = trim_streams(get_platform())
    return {"trimmed": sum(t.trimmed for t in trims), "over_cap": [t.channel for t in trims if t.over_cap],
            "channels": {t.channel: {"trimmed": t.trimmed, "length": t.length} for t in trims}}
