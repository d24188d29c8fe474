"""A quick task type that now and then dies, hangs past its hard limit or runs long, so that a job sent ahead to its
prefork process waits in the pipe behind it (tests/test_pipeline_faults.py)."""
from __future__ import annotations

import os
import time

from pydantic import BaseModel

from meetingtasks.core.priority import Priority
from meetingtasks.core.registry import task_type
from meetingtasks.store.platform import get_platform


class Piped(BaseModel):
    tag: str
    mode: str = ""  # "", "exit", "hang", "sleep"
    seconds: float = 0.0


@task_type("ai", "t_piped", payload=Piped, priority=Priority.LOW, timeout=1)
def t_piped(p: Piped) -> str:
    r = get_platform().redis()
    r.rpush("test:piped-runs", f"{p.tag}|{os.getpid()}")
    if p.mode == "exit":
        os._exit(3)
    if p.mode == "hang":
        while True:  # ignores the soft limit's exception to force the hard limit
            try:
                time.sleep(0.1)
            except BaseException:
                continue
    if p.mode == "sleep":
        time.sleep(p.seconds)
    r.rpush("test:done", p.tag)
    return p.tag
