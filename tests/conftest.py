"""Shared fixtures: a real redis-server per session, settings per test, workers as subprocesses."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from meetingtasks.connections import reset_shared_clients
from meetingtasks.embedded import RedisServer
from meetingtasks.platform import Platform, configure
from meetingtasks.settings import Settings
from tests.support.processes import ROOT, PartProcess


# pytest-celery's own cluster fixtures start Docker containers; there is no Docker engine here.
@pytest.fixture(scope="session")
def celery_backend_cluster() -> None:
    return None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop, restart or break it (the session's is shared)."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()
    reset_shared_clients()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A clean database on the session's server for each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url
    reset_shared_clients()


#: The key that seals secret task fields in tests (a fixed Fernet key: tests may read what was sealed with it).
TEST_ENCRYPTION_KEY = "L-UJ1fAmp3wECPflZBospTKk5cc7jKJZZycHIYim5TQ="


def worker_env(redis_url: str, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEETINGTASKS_")}
    env.update(
        MEETINGTASKS_REDIS_URL=redis_url,
        MEETINGTASKS_VISIBILITY_TIMEOUT_S="3",
        MEETINGTASKS_RESTORE_INTERVAL_S="0.5",
        MEETINGTASKS_RETRY_BACKOFF_BASE_S="0.2",
        MEETINGTASKS_RETRY_BACKOFF_MAX_S="2",
        MEETINGTASKS_PUMP_INTERVAL_S="0.05",
        MEETINGTASKS_INCLUDE="tests.support.tasks",
        MEETINGTASKS_DATA_DIR=str(ROOT / ".meetingtasks-test"),
        MEETINGTASKS_ENCRYPTION_KEYS=TEST_ENCRYPTION_KEY,
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.update(overrides)
    return env


@pytest.fixture
def env(redis_url: str) -> dict[str, str]:
    return worker_env(redis_url)


@pytest.fixture
def settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in env.items():
        if key.startswith("MEETINGTASKS_"):
            monkeypatch.setenv(key, value)
    return Settings()


@pytest.fixture
def platform(settings: Settings) -> Platform:
    import tests.support.tasks  # noqa: F401 - registers the test task types

    return configure(settings)


@pytest.fixture
def r(platform: Platform) -> redis.Redis:
    return platform.redis()


class WorkerProcess(PartProcess):
    """A `meetingtasks worker` subprocess; its log is kept for assertions and failure reports."""

    name = "worker"

    def __init__(self, service: str, env: dict[str, str], log_path: Path, args: list[str]) -> None:
        self.service = service
        super().__init__(self.cli("worker", service, "--loglevel", "INFO", *args), env, log_path)

    def wait_ready(self, timeout_s: float = 30.0) -> WorkerProcess:
        return self.wait_log(" ready.", timeout_s)

    def children(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]


@pytest.fixture
def start_worker(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: ``start_worker("ai", "--pool", "threads", env_overrides={...})`` -> a ready worker."""
    workers: list[WorkerProcess] = []

    def start(service: str, *args: str, env_overrides: dict[str, str] | None = None,
              ready: bool = True) -> WorkerProcess:
        args = args or ("--pool", "threads", "--concurrency", "2")
        proc_env = {**env, **(env_overrides or {})}
        w = WorkerProcess(service, proc_env, tmp_path / f"worker-{service}-{len(workers)}.log", list(args))
        workers.append(w)
        return w.wait_ready() if ready else w

    yield start
    for w in workers:
        w.stop()


def wait_for(predicate: Callable[[], object], timeout_s: float = 20.0, interval_s: float = 0.02,
             message: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; fail with ``message`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")
        time.sleep(interval_s)
