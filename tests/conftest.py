"""Shared fixtures: a real redis-server per session, settings per test, workers as subprocesses.

Fixtures only: the helpers tests import live in tests/support/ (processes, workers, waiting).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from meetingtasks.core.settings import Settings
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.store.connections import reset_shared_clients
from meetingtasks.store.platform import Platform, configure

# Re-exported for test files that still import them from here; new code imports from tests.support.
from tests.support.processes import ROOT
from tests.support.waiting import wait_for
from tests.support.workers import TEST_ENCRYPTION_KEY, WorkerProcess, worker_env

__all__ = ["ROOT", "TEST_ENCRYPTION_KEY", "WorkerProcess", "wait_for", "worker_env"]


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
