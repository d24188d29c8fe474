"""Queued work survives a Redis restart with AOF, and a running worker reconnects by itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meetingtasks import dispatch_batch
from meetingtasks.core.settings import Settings
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.store.connections import reset_shared_clients
from meetingtasks.store.platform import Platform, configure
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess, worker_env

# Slow tier: fault injection (kills, restarts, outages, refused writes) waits out real timeouts.
pytestmark = pytest.mark.slow


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "aof", appendfsync="always").start()
    yield server
    server.stop()
    reset_shared_clients()


def test_queued_tasks_survive_a_sigkill_of_redis_with_aof_and_a_worker_reconnects(
    own_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = worker_env(own_redis.url)
    for key, value in env.items():
        if key.startswith("MEETINGTASKS_"):
            monkeypatch.setenv(key, value)
    import tests.support.tasks  # noqa: F401

    platform: Platform = configure(Settings())
    # Given 200 queued tasks and a worker that is already connected
    worker = WorkerProcess("ai", env, tmp_path / "worker.log", ["--pool", "threads", "--concurrency", "2"])
    try:
        worker.wait_ready()
        dispatch_batch([("t_record", {"tag": f"a-{i}", "seconds": 0.01}) for i in range(200)])
        # When Redis is SIGKILLed and restarted from its append-only file
        own_redis.restart(kill=True)
        reset_shared_clients()
        r = platform.redis()
        # A task whose handler hit the dead Redis waits in the delayed set for its retry: it survived too.
        survived = (r.llen("ai.low") + r.hlen(platform.keys.unacked("ai")) + r.llen("test:done")
                    + platform.delayed.count(r, "ai"))
        assert survived >= 200, f"only {survived} of 200 tasks are in Redis after the restart"
        # Then the same worker reconnects by itself and every task runs
        wait_for(lambda: len(set(platform.redis().lrange("test:done", 0, -1))) == 200, timeout_s=90,
                 message="all 200 tasks after the restart")
        assert worker.proc.poll() is None
    finally:
        worker.stop()
