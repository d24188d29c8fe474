"""Hostile review: the public interface lists ``unix://`` among the Redis URLs of the platform. A worker on one."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tests.support.tasks  # noqa: F401 - registers t_echo in this process
from meetingtasks.core.settings import Settings
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.store.platform import Platform
from tests.support.workers import WorkerProcess


@pytest.fixture
def unix_redis() -> Iterator[str]:
    """A redis-server listening on a unix socket too; its ``unix://`` URL (a short path: sockets allow ~100 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="mt-unix-", dir="/tmp"))
    socket_path = directory / "redis.sock"
    server = RedisServer(directory, extra_args=["--unixsocket", str(socket_path), "--unixsocketperm", "700"]).start()
    try:
        yield f"unix://{socket_path}"
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
def test_a_worker_on_a_unix_socket_url_starts_and_runs_a_task(
        unix_redis: str, start_worker: Callable[..., WorkerProcess]) -> None:
    # Given a Redis reached over its unix socket, the URL form documented with redis:// and rediss://
    settings = Settings(redis_url=unix_redis)
    # When a worker of a service starts on it (it stopped at once with kombu's "Database is int between 0 and
    # limit - 1, not tmp/.../redis.sock": the path read as a virtual host, and exited 0)
    start_worker("ai", "--pool", "solo", env_overrides={"MEETINGTASKS_REDIS_URL": unix_redis})
    # Then it runs what is dispatched there
    handle = Dispatcher(Platform(settings)).dispatch("t_echo", {"tag": "over-unix"})
    assert handle.wait(timeout=30) == {"tag": "over-unix"}


@pytest.mark.slow
def test_a_worker_that_cannot_start_exits_non_zero(env: dict[str, str], tmp_path: Path) -> None:
    # Given a broker URL that kombu refuses (a db that is not a number; the settings now refuse it at load too, so
    # tests/test_worker_exit_status.py lifts that check to reach Celery's own unrecoverable error)
    worker = WorkerProcess("ai", {**env, "MEETINGTASKS_REDIS_URL": "redis://127.0.0.1:1/abc"},
                           tmp_path / "worker.log", ["--pool", "solo"])
    # When the worker starts, Then it stops (Celery: "Unrecoverable error") with a failure status, so that a
    # supervisor (systemd Restart=on-failure, `restart: on-failure`, a CI step) sees it failed; `celery worker`
    # itself exits 1 here, `meetingtasks worker` dropped run_worker's exit code and exited 0
    try:
        code = worker.proc.wait(timeout=60)
    finally:
        worker.stop()
    assert code != 0, worker.log()[-1500:]
