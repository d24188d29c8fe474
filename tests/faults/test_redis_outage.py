"""Redis away for 30 s: dispatch fails clearly within its bound, workers consume again afterwards, and the
liveness check tells a worker that cannot consume from one that can."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from meetingtasks import BrokerUnavailable, configure, dispatch
from meetingtasks.core.settings import Settings
from meetingtasks.metrics.heartbeat import read_heartbeats
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.store.connections import reset_shared_clients
from meetingtasks.store.platform import Platform
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess, worker_env

# Slow tier: fault injection (kills, restarts, outages, refused writes) waits out real timeouts.
pytestmark = pytest.mark.slow

OUTAGE_S = 30


@pytest.fixture
def outage_env(own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = worker_env(own_redis.url, MEETINGTASKS_DISPATCH_RETRY_S="2", MEETINGTASKS_HEARTBEAT_INTERVAL_S="0.5")
    for key, value in env.items():
        if key.startswith("MEETINGTASKS_"):
            monkeypatch.setenv(key, value)
    import tests.support.tasks  # noqa: F401

    return env


def alive(platform: Platform, worker_pid: int) -> bool:
    beats = read_heartbeats(platform.redis(), platform, "ai")
    return any(b.pid == worker_pid and b.alive(time.time()) for b in beats)


def test_a_worker_consumes_again_after_redis_was_gone_for_30_seconds(
    own_redis: RedisServer, outage_env: dict[str, str], tmp_path: Path
) -> None:
    platform = configure(Settings())
    worker = WorkerProcess("ai", outage_env, tmp_path / "worker.log", ["--pool", "threads", "--concurrency", "2"])
    try:
        worker.wait_ready()
        assert dispatch("t_echo", {"tag": "before"}).wait(timeout=20) == {"tag": "before"}

        # When Redis is stopped for 30 s
        own_redis.stop()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="nothing was queued"):
            dispatch("t_echo", {"tag": "during"})
        assert time.monotonic() - started < 2 + 5, "dispatch must give up within dispatch_retry_s (+ slack)"
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - started)))  # the outage itself: nothing to poll
        own_redis.start()
        reset_shared_clients()

        # Then the same worker process consumes again by itself, and its heartbeat says so
        handle = dispatch("t_echo", {"tag": "after"})
        assert handle.wait(timeout=60) == {"tag": "after"}
        assert worker.proc.poll() is None
        wait_for(lambda: alive(platform, worker.proc.pid), timeout_s=20, message="a fresh heartbeat")
    finally:
        worker.stop()


def test_liveness_detects_a_worker_that_is_alive_but_cannot_consume(
    own_redis: RedisServer, outage_env: dict[str, str], tmp_path: Path
) -> None:
    platform = configure(Settings())
    worker = WorkerProcess("ai", outage_env, tmp_path / "worker.log", ["--pool", "threads", "--concurrency", "2"])
    try:
        worker.wait_ready()
        wait_for(lambda: alive(platform, worker.proc.pid), timeout_s=20, message="the first heartbeat")
        # When the worker process exists but its consumer cannot run (stopped)
        os.kill(worker.proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: not alive(platform, worker.proc.pid), timeout_s=20, message="the heartbeat to go stale")
            assert worker.proc.poll() is None  # the process is still there: a process check would say "fine"
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)
        # Then liveness comes back with consumption
        wait_for(lambda: alive(platform, worker.proc.pid), timeout_s=20, message="the heartbeat to come back")
        assert dispatch("t_echo", {"tag": "resumed"}).wait(timeout=20) == {"tag": "resumed"}
    finally:
        worker.stop()
