"""A task type that keeps the CPU (and the GIL) busy for a while, so that a threads pool's threads contend for the GIL
(tests/test_prefetch_races.py)."""
from __future__ import annotations

import time

from pydantic import BaseModel

from meetingtasks.core.priority import Priority
from meetingtasks.core.registry import task_type
from meetingtasks.store.platform import get_platform


class Spin(BaseModel):
    tag: str
    seconds: float = 0.002


@task_type("ai", "t_spin", payload=Spin, priority=Priority.LOW)
def t_spin(p: Spin) -> str:
    end = time.perf_counter() + p.seconds
    while time.perf_counter() < end:
        pass
    get_platform().redis().rpush("test:done", p.tag)
    return p.tag
