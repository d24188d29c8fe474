"""A task that ends while Redis is away has its outcome and ack buffered on the channel it was fetched on, whose
connection is gone: they are applied by whatever channel consumes next, so the task is recorded and acked exactly
once and never runs again (meetingtasks.worker.transport, orphaned buffers)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from meetingtasks.core.settings import Settings
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.store.connections import reset_shared_clients
from meetingtasks.store.platform import configure
from meetingtasks.store.status import Status
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess, worker_env

# Slow tier: fault injection (kills, restarts, outages, refused writes) waits out real timeouts.
pytestmark = pytest.mark.slow

VISIBILITY_S = 3.0


def _runs(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        counts[line.split("|")[0]] = counts.get(line.split("|")[0], 0) + 1
    return counts


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_tasks_that_end_while_redis_is_away_are_recorded_once_and_never_run_again(
        own_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: str) -> None:
    import tests.support.tasks  # noqa: F401 - registers t_nap

    runs_file = tmp_path / "runs"
    env = worker_env(own_redis.url, MT_TEST_RUNS_FILE=str(runs_file),
                     MEETINGTASKS_VISIBILITY_TIMEOUT_S=str(VISIBILITY_S))
    for key, value in env.items():
        if key.startswith("MEETINGTASKS_"):
            monkeypatch.setenv(key, value)
    platform = configure(Settings())
    r = platform.redis()
    args = ["--pool", "solo"] if pool == "solo" else ["--pool", "threads", "--concurrency", "2"]
    worker = WorkerProcess("ai", env, tmp_path / "worker.log", args)
    try:
        worker.wait_ready()
        d = Dispatcher(platform)
        handles = [d.dispatch("t_nap", {"tag": f"nap-{i}", "seconds": 1.0}) for i in range(2)]
        wait_for(lambda: any(h.status() == Status.STARTED for h in handles), message="a task running")
        own_redis.stop()  # SIGTERM: the AOF keeps the unacked set, the STARTED records and the queue
        wait_for(lambda: _runs(runs_file), timeout_s=10, message="a task to run")
        time.sleep(1.5)  # it ends while Redis is away (a nap takes 1 s): nothing to poll, Redis is down
        assert _runs(runs_file), "a task ended while Redis was away"
        # The consumer gives up its connection (and closes the channel holding the buffers) while Redis is away.
        worker.wait_log("Connection to broker lost", timeout_s=20)
        own_redis.start()
        reset_shared_clients()
        r = platform.redis()
        wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in handles), timeout_s=30,
                 message="both outcomes recorded")
        wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, timeout_s=10, message="both acks applied")
        # Past a lease and a sweep: a message left unacked would have been restored and run again by now.
        time.sleep(VISIBILITY_S + 2)
        assert _runs(runs_file) == {"nap-0": 1, "nap-1": 1}, worker.log()
        for h in handles:
            assert [s for s, _, _ in h.info().history] == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED], h.id
        assert r.hlen(platform.keys.unacked("ai")) == 0 and r.llen("ai.normal") == 0
        assert worker.proc.poll() is None
    finally:
        worker.stop()
