"""Queue statistics per service and priority: queued, unacked, scheduled, dead-lettered."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from meetingtasks.core.priority import PRIORITY_ORDER, queue_name
from meetingtasks.lua import LuaScript
from meetingtasks.store.platform import Platform

#: Counts a hash's values by a Lua pattern's capture, server-side (lua/count_by.lua).
_COUNT_BY = LuaScript.load("count_by")
_UNACKED_QUEUE = r'%.(%a+)"%]$'
_DLQ_PRIORITY = r'"priority":"(%a+)"'


@dataclass(frozen=True)
class QueueStats:
    service: str
    priority: str
    queued: int
    unacked: int
    scheduled: int
    dead_lettered: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pairs(flat: list[Any]) -> dict[str, int]:
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}


#: Priority of the row holding a service's dead letters when there are too many to split by priority.
ALL_PRIORITIES = "all"


def collect(platform: Platform, services: tuple[str, ...] | None = None, *,
            split_dead_letters_up_to: int | None = None) -> list[QueueStats]:
    """The rows per service and priority of ``services`` (default: every service the platform knows, see
    :meth:`Platform.services`). Splitting dead letters by priority reads every letter (~1 s for 100,000); with
    ``split_dead_letters_up_to``, a service holding more is counted with HLEN instead, on one row of priority
    :data:`ALL_PRIORITIES` (what a page that must answer at once uses)."""
    rows: list[QueueStats] = []
    keys = platform.keys
    for svc in platform.services() if services is None else services:
        client = platform.redis(svc)
        with client.pipeline(transaction=False) as pipe:
            for prio in PRIORITY_ORDER:
                pipe.llen(queue_name(svc, prio))
            pipe.hlen(keys.dlq(svc))
            *queued, held = pipe.execute()
        unacked = _pairs(_COUNT_BY(client, [keys.unacked(svc)], [_UNACKED_QUEUE]))
        split = split_dead_letters_up_to is None or int(held) <= split_dead_letters_up_to
        dead = _pairs(_COUNT_BY(client, [keys.dlq(svc)], [_DLQ_PRIORITY])) if split else {}
        scheduled = platform.delayed.counts(client, svc)
        for prio, n in zip(PRIORITY_ORDER, queued, strict=True):
            rows.append(QueueStats(svc, prio.value, int(n), unacked.get(prio.value, 0), scheduled[prio],
                                   dead.get(prio.value, 0)))
        unknown = int(held) - sum(dead.values())
        if unknown:
            # Dead letters with no priority (garbage bytes), or all of them when not split: a row of their own.
            rows.append(QueueStats(svc, "-" if split else ALL_PRIORITIES, 0, 0, 0, unknown))
    return rows
