"""Task types for the scheduling, cancel and beat tests (workers load them via MEETINGTASKS_INCLUDE).

Like ``tests.support.tasks`` they leave traces under ``test:*`` so that tests assert on what really ran.
"""

from __future__ import annotations

import os
import time

from pydantic import BaseModel

from meetingtasks.core.registry import task_type
from meetingtasks.store.cancel import raise_if_cancelled
from meetingtasks.store.platform import get_platform


class Work(BaseModel):
    tag: str
    seconds: float = 0.0


def _record(kind: str, tag: str) -> None:
    get_platform().redis().rpush(f"test:{kind}", f"{tag}|{time.time()}|{os.getpid()}")


@task_type("ai", "t_cooperative", payload=Work, timeout=120)
def t_cooperative(p: Work) -> str:
    """Works in small steps and stops when cancelled, as a long handler should."""
    _record("started", p.tag)
    deadline = time.monotonic() + p.seconds
    while time.monotonic() < deadline:
        raise_if_cancelled()
        time.sleep(0.05)
    _record("finished", p.tag)
    return p.tag


@task_type("ai", "t_tick", payload=Work)
def t_tick(p: Work) -> str:
    _record("ticks", p.tag)
    return p.tag
