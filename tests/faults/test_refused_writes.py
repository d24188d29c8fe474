"""Redis refuses writes for a few seconds (out of memory, or a read-only replica during a failover) while a worker
runs tasks: its bookkeeping (outcomes, acks, retries, dead letters, fetches) waits for Redis instead of failing the
task, and every task ends as on a healthy run, exactly once, in the same worker process."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from meetingtasks.enqueue.dispatcher import Dispatcher, TaskHandle
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

# Slow tier: fault injection (kills, restarts, outages, refused writes) waits out real timeouts.
pytestmark = pytest.mark.slow

REFUSE_S = 3.0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def refusing_writes(r: redis.Redis, how: str) -> Iterator[None]:
    """Make the shared test server refuse every write until the block ends; always restore it (the server is
    session-scoped). ``oom``: maxmemory 1 with noeviction. ``readonly``: a replica of a master that is not there
    (it keeps its data, answers reads, refuses writes with READONLY, and unblocks its BRPOP waiters)."""
    try:
        if how == "oom":
            r.config_set("maxmemory-policy", "noeviction")
            r.config_set("maxmemory", 1)
        else:
            r.replicaof("127.0.0.1", _closed_port())
        with pytest.raises(redis.ResponseError):
            r.set("test:probe", 1)
        yield
    finally:
        r.config_set("maxmemory", 0)
        r.execute_command("REPLICAOF", "NO", "ONE")


def _runs(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            tag = line.split("|")[0]
            counts[tag] = counts.get(tag, 0) + 1
    return counts


@pytest.mark.parametrize("pool", ["threads", "solo", "prefork"])
@pytest.mark.parametrize("how", ["oom", "readonly"])
def test_refused_writes_delay_the_bookkeeping_and_lose_nothing(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], tmp_path: Path,
        how: str, pool: str) -> None:
    runs_file = tmp_path / "runs"
    args = ("--pool", "solo") if pool == "solo" else ("--pool", pool, "--concurrency", "4")
    # Leases longer than the window: this test is about the bookkeeping, not about the restore sweep.
    worker = start_worker("ai", *args, env_overrides={"MT_TEST_RUNS_FILE": str(runs_file),
                                                     "MEETINGTASKS_VISIBILITY_TIMEOUT_S": "20"})
    d = Dispatcher(platform)
    nap_s = 0.6 if pool == "solo" else 1.5
    ok = [d.dispatch("t_nap", {"tag": f"ok-{i}", "seconds": nap_s}) for i in range(3)]
    once = d.dispatch("t_nap", {"tag": "fails-once", "seconds": nap_s, "fail_times": 1})
    never = d.dispatch("t_nap", {"tag": "fails-always", "seconds": nap_s, "fail_times": 99})
    handles: list[TaskHandle] = [*ok, once, never]
    wait_for(lambda: any(h.status() == Status.STARTED for h in handles), message="a task running")
    with refusing_writes(r, how):
        time.sleep(REFUSE_S)  # the window itself: tasks end, retry and dead-letter inside it; nothing to poll
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in [*ok, once]), timeout_s=40,
             message="every task to succeed")
    wait_for(lambda: never.status() == Status.DEAD_LETTERED, timeout_s=20, message="the failing task dead-lettered")
    assert worker.proc.poll() is None, worker.log()
    assert "Unrecoverable error" not in worker.log()
    assert _runs(runs_file) == {"ok-0": 1, "ok-1": 1, "ok-2": 1, "fails-once": 2, "fails-always": 2}, worker.log()
    # As on a healthy run: one retry, nothing recorded twice, nothing left STARTED.
    assert [s for s, _, _ in once.info().history] == [Status.QUEUED, Status.STARTED, Status.RETRYING,
                                                       Status.STARTED, Status.SUCCEEDED]
    for h in ok:
        assert [s for s, _, _ in h.info().history] == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED], h.id
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, timeout_s=10, message="nothing left unacked")
    assert r.zcard(platform.keys.unacked_index("ai")) == 0
    assert all(r.llen(q) == 0 for q in r.keys("ai.*"))
    time.sleep(1.0)  # nothing runs again after the fact (a duplicate would show in the runs file)
    assert _runs(runs_file)["ok-0"] == 1 and worker.proc.poll() is None


def test_a_retry_refused_past_the_grace_is_handed_back_or_left_leased_never_acked(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    runs_file = tmp_path / "runs"
    # A grace far shorter than the window: the retry's bookkeeping gives up, and so does the hand-back (Redis
    # refuses that write too), so the message is left in the unacked set for the restore sweep.
    worker = start_worker("ai", "--pool", "threads", "--concurrency", "2", env_overrides={
        "MT_TEST_RUNS_FILE": str(runs_file), "MEETINGTASKS_REDIS_OUTAGE_GRACE_S": "0.5"})
    once = Dispatcher(platform).dispatch("t_nap", {"tag": "fails-once", "seconds": 0.5, "fail_times": 1})
    wait_for(lambda: once.status() == Status.STARTED, message="the task running")
    with refusing_writes(r, "oom"):
        wait_for(lambda: "could not hand message" in worker.log(), timeout_s=15,
                 message="the retry and the hand-back to give up")
        assert r.hlen(platform.keys.unacked("ai")) == 1, "still unacked: not acked, not lost"
    wait_for(lambda: once.status() == Status.SUCCEEDED, timeout_s=30, message="the redelivered task to succeed")
    assert _runs(runs_file) == {"fails-once": 2}
    assert [s for s, _, _ in once.info().history] == [Status.QUEUED, Status.STARTED, Status.STARTED,
                                                       Status.SUCCEEDED]
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, timeout_s=10, message="nothing left unacked")
    assert worker.proc.poll() is None and "Unrecoverable error" not in worker.log()


@pytest.mark.parametrize("how", ["oom", "readonly"])
def test_a_worker_started_while_redis_refuses_writes_comes_up_when_it_accepts_them(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], how: str) -> None:
    # Given a worker that starts while Redis refuses every write (its start-up declares kombu's queue bindings,
    # a write: the soak caught a worker exiting there when the killer restarted it inside such a window)
    with refusing_writes(r, how):
        worker = start_worker("ai", "--pool", "threads", "--concurrency", "2", ready=False)
        wait_for(lambda: "Connection to broker lost" in worker.log() or worker.proc.poll() is not None,
                 timeout_s=30, message="the worker to meet the refusal (Celery's consumer restarts)")
        assert worker.proc.poll() is None, worker.log()
    # When Redis takes writes again, then the same process comes up and runs tasks
    worker.wait_ready()
    assert Dispatcher(platform).dispatch("t_echo", {"tag": "after"}).wait(timeout=30) == {"tag": "after"}
    assert worker.proc.poll() is None
