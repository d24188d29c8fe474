"""The console's audit log: who did what, when, to how many, kept in Redis (``P console-audit``).

A list, newest first, cut to :data:`KEEP` entries at each write. Writing it never blocks an action: a Redis
error here is the same error the action itself met.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from meetingtasks.core.message import dumps, loads
from meetingtasks.store.platform import Platform

#: Entries kept.
KEEP = 10_000


@dataclass(frozen=True)
class AuditEntry:
    who: str
    time: float
    action: str
    what: str
    count: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuditLog:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def record(self, who: str, action: str, what: str, count: int) -> AuditEntry:
        entry = AuditEntry(who=who, time=time.time(), action=action, what=what, count=count)
        key = self.platform.keys.console_audit
        with self.platform.redis().pipeline(transaction=True) as pipe:
            pipe.lpush(key, dumps(entry.to_dict()))
            pipe.ltrim(key, 0, KEEP - 1)
            pipe.execute()
        return entry

    def latest(self, offset: int = 0, limit: int = 50) -> list[AuditEntry]:
        rows = self.platform.redis().lrange(self.platform.keys.console_audit, offset, offset + limit - 1)
        out = []
        for raw in rows:
            try:
                out.append(AuditEntry(**loads(raw)))
            except (ValueError, TypeError):
                continue  # not an entry this module wrote
        return out
