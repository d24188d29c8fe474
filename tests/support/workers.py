"""Workers for the tests: the environment a worker subprocess runs with, and the subprocess itself."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from meetingtasks.store.platform import Platform
from tests.support.processes import ROOT, PartProcess
from tests.support.waiting import wait_for

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


def pool_stats(platform: Platform) -> dict[str, Any]:
    """The pool's part of ``celery inspect stats`` of the one worker running (as Flower asks for it)."""
    from meetingtasks.operations.flower import create_flower_app

    app = create_flower_app(platform.settings.model_copy(update={"flower_basic_auth": SecretStr("ops:pw")}))
    replies = wait_for(lambda: app.control.inspect(timeout=2).stats(), 20, message="the worker's stats")
    assert isinstance(replies, dict)
    (stats,) = replies.values()
    pool: dict[str, Any] = stats["pool"]
    return pool
