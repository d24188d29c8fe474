"""A task type for the profiler tests: its handler spends its time in a function with a name of its own.

Workers load it with ``MEETINGTASKS_INCLUDE=tests.support.tasks,tests.support.profile_tasks``.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from pydantic import BaseModel

from meetingtasks.core.priority import Priority
from meetingtasks.core.registry import task_type
from meetingtasks.store.platform import get_platform


class Work(BaseModel):
    tag: str
    busy_s: float = 0.2


def deliberately_slow_checksum(busy_s: float) -> str:
    """Hashes in a loop for ``busy_s`` seconds of CPU: the one place a profile must name."""
    digest = b""
    deadline = time.perf_counter() + busy_s
    while time.perf_counter() < deadline:
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@task_type("ai", "t_profiled", payload=Work, priority=Priority.NORMAL)
def t_profiled(p: Work) -> dict[str, Any]:
    checksum = deliberately_slow_checksum(p.busy_s)
    get_platform().redis().rpush("test:profiled:ran", p.tag)
    return {"tag": p.tag, "checksum": checksum[:8]}
