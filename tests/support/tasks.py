"""Task types used only by the tests; workers load them with MEETINGTASKS_INCLUDE=tests.support.tasks.

Handlers leave their traces in Redis under ``test:*`` so that tests can assert on what really ran.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pydantic import BaseModel

from meetingtasks.core.backoff import RetryPolicy
from meetingtasks.core.errors import PermanentError
from meetingtasks.core.priority import Priority
from meetingtasks.core.registry import task_type
from meetingtasks.store.platform import get_platform


class Tagged(BaseModel):
    tag: str
    seconds: float = 0.0
    fail_times: int = 0


def _redis() -> Any:
    return get_platform().redis()


def _record(kind: str, tag: str) -> None:
    _redis().rpush(f"test:{kind}", f"{tag}|{time.time()}|{os.getpid()}")


@task_type("ai", "t_echo", payload=Tagged, priority=Priority.NORMAL, client=True)
def t_echo(p: Tagged) -> dict[str, Any]:
    _record("runs", p.tag)
    return {"tag": p.tag}


class Owned(BaseModel):
    user_id: str
    tag: str = ""


@task_type("ai", "t_owned", payload=Owned, client=True, subject_field="user_id")
def t_owned(p: Owned) -> dict[str, Any]:
    """Acts on its user's own resources: over the gateway, ``user_id`` is the token's subject."""
    return {"user_id": p.user_id, "tag": p.tag}


@task_type("ai", "t_record", payload=Tagged, priority=Priority.LOW)
def t_record(p: Tagged) -> str:
    if p.seconds:
        time.sleep(p.seconds)
    _redis().rpush("test:done", p.tag)
    return p.tag


@task_type("ai", "t_sleep", payload=Tagged, timeout=120, client=True)
def t_sleep(p: Tagged) -> str:
    _record("started", p.tag)
    time.sleep(p.seconds)
    _record("finished", p.tag)
    return p.tag


@task_type("ai", "t_flaky", payload=Tagged,
           retry_policy=RetryPolicy(max_retries=3, base_s=0.3, max_s=5, jitter=False))
def t_flaky(p: Tagged) -> str:
    _record("attempts", p.tag)
    if _redis().incr(f"test:flaky:{p.tag}") <= p.fail_times:
        raise ConnectionError(f"flaky failure for {p.tag}")
    return "ok"


@task_type("ai", "t_always_fails", payload=Tagged,
           retry_policy=RetryPolicy(max_retries=2, base_s=0.1, max_s=1, jitter=True))
def t_always_fails(p: Tagged) -> str:
    _record("attempts", p.tag)
    if _redis().get(f"test:heal:{p.tag}"):
        return "healed"
    raise RuntimeError(f"always fails: {p.tag}")


@task_type("ai", "t_permanent", payload=Tagged, client=True)
def t_permanent(p: Tagged) -> str:
    _record("attempts", p.tag)
    raise PermanentError(f"refused: {p.tag}")


@task_type("ai", "t_slow_backoff", payload=Tagged,
           retry_policy=RetryPolicy(max_retries=1, base_s=5, max_s=5, jitter=False))
def t_slow_backoff(p: Tagged) -> str:
    _record("attempts", p.tag)
    if _redis().incr(f"test:flaky:{p.tag}") <= p.fail_times:
        raise ConnectionError("fails once")
    return "ok"


@task_type("ai", "t_crash", payload=Tagged)
def t_crash(p: Tagged) -> str:
    """Kills its own process: a poison message."""
    _record("attempts", p.tag)
    os.kill(os.getpid(), 9)
    return "unreachable"


@task_type("ai", "t_hang", payload=Tagged, timeout=1)
def t_hang(p: Tagged) -> str:
    _record("attempts", p.tag)
    while True:  # ignores the soft limit's exception to force the hard limit
        try:
            time.sleep(0.1)
        except BaseException:
            continue


@task_type("ai", "t_nap", payload=Tagged,
           retry_policy=RetryPolicy(max_retries=1, base_s=0.2, max_s=0.2, jitter=False))
def t_nap(p: Tagged) -> str:
    """Sleeps and never touches Redis: a test can refuse Redis writes while it runs and still count its runs, in the
    file named by ``MT_TEST_RUNS_FILE`` (one ``tag|pid`` line per run). Fails its first ``fail_times``
    runs."""
    path = os.environ["MT_TEST_RUNS_FILE"]
    with open(path, "a") as f:
        f.write(f"{p.tag}|{os.getpid()}\n")
    with open(path) as f:
        runs = sum(1 for line in f if line.split("|")[0] == p.tag)
    time.sleep(p.seconds)
    if runs <= p.fail_times:
        raise RuntimeError(f"nap {p.tag} fails run {runs}")
    return p.tag


@task_type("ai", "t_cancel_other", payload=Tagged, priority=Priority.LOW)
def t_cancel_other(p: Tagged) -> str:
    """Cancels the task whose id is its tag: a test's way to cancel a task at a known moment (while this one runs, so
    while its worker holds the messages fetched behind it)."""
    from meetingtasks.store.cancel import cancel

    outcome = cancel(get_platform(), p.tag)
    _redis().rpush("test:done", f"cancelled {p.tag}")
    _redis().rpush("test:cancel-outcomes", outcome.describe())
    if p.seconds:  # runs on: the worker holds what it fetched behind this task for that long after the cancel
        time.sleep(p.seconds)
    return p.tag


@task_type("ai", "t_reply_polling", payload=Tagged)
def t_reply_polling(p: Tagged) -> dict[str, Any]:
    """Whether this worker's Redis calls poll for their replies, and a call that does (or blocks)."""
    from meetingtasks.store.connections import reply_polling

    _record("runs", p.tag)
    return {"polls": reply_polling() is not None}
