"""``meetingtasks worker`` exits with Celery's status: a supervisor restarting on failure (systemd
``Restart=on-failure``, compose ``restart: on-failure``, ``meetingtasks up``) must tell a worker that died from one
that was stopped."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.processes import ROOT
from tests.support.workers import WorkerProcess

# A broker URL that kombu refuses when the worker connects. The settings refuse this one at load now, so the check
# is lifted here to reach Celery's own "Unrecoverable error" (any such refusal kombu makes at start-up).
UNRECOVERABLE = """
import meetingtasks.core.settings as settings
settings.check_redis_url = lambda url: None
from meetingtasks.cli.main import main
main(["worker", "ai", "--pool", "solo"])
"""


@pytest.mark.slow
def test_a_worker_stopped_by_celerys_unrecoverable_error_exits_1(env: dict[str, str], tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", UNRECOVERABLE], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**env, "MEETINGTASKS_REDIS_URL": "redis://127.0.0.1:1/abc"})
    assert "Unrecoverable error" in out.stderr + out.stdout, out.stderr[-1500:]
    assert out.returncode == 1, out.stderr[-1500:]


@pytest.mark.slow
def test_a_worker_stopped_by_sigterm_exits_0(start_worker: Callable[..., WorkerProcess]) -> None:
    worker = start_worker("ai", "--pool", "solo")
    worker.stop(timeout_s=60)  # SIGTERM: Celery's warm shutdown
    assert worker.proc.returncode == 0, worker.log()[-1500:]
