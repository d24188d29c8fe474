"""Task types for the dispatcher tests (callbacks, batches, progress, rate limits); loaded into workers with
MEETINGTASKS_INCLUDE=tests.support.tasks,tests.support.dispatcher_tasks. Traces go to ``test:*`` keys."""

from __future__ import annotations

import time
from typing import Any

from meetingtasks.core.registry import task_type
from meetingtasks.store.callbacks import BatchOutcome, TaskOutcome
from meetingtasks.store.platform import get_platform
from meetingtasks.worker.progress import report_progress
from tests.support.tasks import Tagged

INCLUDE = "tests.support.tasks,tests.support.dispatcher_tasks"


def _redis() -> Any:
    return get_platform().redis()


@task_type("ai", "t_on_outcome", payload=TaskOutcome)
def t_on_outcome(outcome: TaskOutcome) -> str:
    """A callback: records every outcome it is called with."""
    _redis().rpush("test:callbacks", outcome.model_dump_json())
    return outcome.task_id


@task_type("ai", "t_on_batch", payload=BatchOutcome)
def t_on_batch(outcome: BatchOutcome) -> str:
    _redis().rpush("test:batches", outcome.model_dump_json())
    return outcome.batch_id


@task_type("ai", "t_progress", payload=Tagged, client=True)
def t_progress(p: Tagged) -> str:
    """Reports 50% and then waits (up to 20 s) until the test sets ``test:release:<tag>``."""
    report_progress(50, f"halfway through {p.tag}")
    deadline = time.monotonic() + 20
    while not _redis().exists(f"test:release:{p.tag}") and time.monotonic() < deadline:
        time.sleep(0.02)
    report_progress(100, "done")
    return p.tag


@task_type("ai", "t_rated", payload=Tagged, rate_limit=5)
def t_rated(p: Tagged) -> str:
    """At most 5 starts per second across all workers."""
    _redis().rpush("test:rated", f"{p.tag}|{time.time()}")
    return p.tag

#: Worker environment for these types: fast watchdog, so timeouts and callbacks show up quickly.
WORKER_ENV = {"MEETINGTASKS_INCLUDE": INCLUDE, "MEETINGTASKS_WATCHDOG_INTERVAL_S": "0.05"}


def callbacks_seen() -> list[dict[str, Any]]:
    import json

    return [json.loads(raw) for raw in _redis().lrange("test:callbacks", 0, -1)]
