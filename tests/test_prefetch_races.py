"""Races of a solo worker's overlapped fetch (meetingtasks.worker.transport, ``Channel._prefetch``) and of the
wake list that FETCH empties, found in review."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from meetingtasks.dispatcher import Dispatcher
from meetingtasks.platform import Platform
from meetingtasks.status import Status
from tests.conftest import WorkerProcess, wait_for


def test_a_batch_that_ends_as_the_start_flusher_fires_does_not_stall_the_worker(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    # Tasks a little longer than the start flusher's age (25 ms): each batch is one task, fetched early behind the
    # one before, and the flusher's thread often fires just as the consumer ends a batch. If the flusher reads the
    # prefetched reply after the consumer decided to wait for it, the consumer waits for a reply that never comes.
    n = 400
    d = Dispatcher(platform)
    handles = [d.dispatch("t_record", {"tag": f"s-{i}", "seconds": 0.022 + 0.001 * (i % 9)}, priority="low")
               for i in range(n)]
    start_worker("ai", "--pool", "solo")
    wait_for(lambda: r.llen("test:done") == n, timeout_s=90, message="every task to run (the worker stalled)")
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in handles), message="every outcome recorded")
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, message="every ack applied")
    done = [x.decode() for x in r.lrange("test:done", 0, -1)]
    assert sorted(done) == sorted(f"s-{i}" for i in range(n)), "each task ran exactly once"


@pytest.mark.xfail(strict=True, reason=(
    "a worker starts a message it fetched unstarted (prefork reserve, solo batch or prefetched batch) without "
    "reading the cancel flag again: a cancel issued meanwhile says CANCELLED, and the task runs all the same"))
@pytest.mark.parametrize("pool", [("--pool", "prefork", "--concurrency", "1"), ("--pool", "solo")])
def test_a_task_cancelled_while_its_worker_holds_it_unstarted_never_runs(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], pool: tuple[str, ...]) -> None:
    d = Dispatcher(platform)
    victim = d.dispatch("t_record", {"tag": "victim"}, priority="low")
    # Fetched first (normal before low), in the same fetch as the victim: while it runs, the worker holds the victim
    # unstarted (prefork: in its reserve; solo: behind it in the batch), and its status still says QUEUED.
    canceller = d.dispatch("t_cancel_other", {"tag": victim.id}, priority="normal")
    start_worker("ai", *pool, env_overrides={"MEETINGTASKS_SOLO_BATCH_MS": "100"})
    wait_for(lambda: canceller.status() == Status.SUCCEEDED, message="the canceller to finish")
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0 and r.llen("ai.low") == 0,
             message="the victim taken and dropped or run")
    wait_for(lambda: victim.status().is_terminal, message="the victim's outcome")
    done = [x.decode() for x in r.lrange("test:done", 0, -1)]
    # A cancel of a QUEUED task means it never runs (meetingtasks.cancel).
    assert "victim" not in done, "the cancelled task ran"
    assert victim.status() == Status.CANCELLED
    assert Status.STARTED not in [s for s, _, _ in victim.info().history]
