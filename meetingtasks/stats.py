"""Queue statistics per service and priority: queued, unacked, scheduled, dead-lettered."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from meetingtasks.lua import LuaScript
from meetingtasks.platform import Platform
from meetingtasks.priority import PRIORITY_ORDER, queue_name
from meetingtasks.registry import SERVICES

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


def collect(platform: Platform, services: tuple[str, ...] = SERVICES) -> list[QueueStats]:
    rows: list[QueueStats] = []
    keys = platform.keys
    for svc in services:
        client = platform.redis(svc)
        with client.pipeline(transaction=False) as pipe:
            for prio in PRIORITY_ORDER:
                pipe.llen(queue_name(svc, prio))
            queued = pipe.execute()
        unacked = _pairs(_COUNT_BY(client, [keys.unacked(svc)], [_UNACKED_QUEUE]))
        dead = _pairs(_COUNT_BY(client, [keys.dlq(svc)], [_DLQ_PRIORITY]))
        scheduled = platform.delayed.counts(client, svc)
        for prio, n in zip(PRIORITY_ORDER, queued, strict=True):
            rows.append(QueueStats(svc, prio.value, int(n), unacked.get(prio.value, 0), scheduled[prio],
                                   dead.get(prio.value, 0)))
        unknown = platform.dead_letters.count(client, svc) - sum(dead.values())
        if unknown:
            # Dead letters with no priority (garbage bytes): shown on a row of their own.
            rows.append(QueueStats(svc, "-", 0, 0, 0, unknown))
    return rows
