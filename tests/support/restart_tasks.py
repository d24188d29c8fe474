"""Task types for the Redis restart tests; workers load them with MEETINGTASKS_INCLUDE.

``t_hold`` stays running until the test creates its release file. It waits on the file system, not on Redis,
so that it keeps its message unacked across a Redis restart without touching Redis in between.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel

from meetingtasks.core.registry import task_type
from meetingtasks.store.platform import get_platform

INCLUDE = "tests.support.tasks,tests.support.event_tasks,tests.support.restart_tasks"
#: The longest ``t_hold`` waits for its release file before it gives up and fails.
HOLD_LIMIT_S = 90.0


class Hold(BaseModel):
    tag: str
    release_path: str


@task_type("ai", "t_hold", payload=Hold, timeout=120)
def t_hold(p: Hold) -> str:
    get_platform().redis().rpush("test:held:started", p.tag)
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not Path(p.release_path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{p.tag}: not released within {HOLD_LIMIT_S}s")
        time.sleep(0.05)
    get_platform().redis().rpush("test:held:finished", p.tag)
    return p.tag
