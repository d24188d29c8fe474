"""Every way of starting a worker gives the same correct worker: four queues in priority order."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from meetingtasks import dispatch
from meetingtasks.store.platform import Platform
from tests.support.processes import ROOT
from tests.support.waiting import wait_for

# Slow tier: every test runs worker subprocesses through kills, redeliveries or timeouts.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "celery", "-A", "meetingtasks.services.ai", "worker", "--pool", "threads", "-c", "1",
         "--loglevel", "INFO"],
        ["-m", "workers.ai", "--pool", "threads", "-c", "1", "--loglevel", "INFO"],
    ],
    ids=["celery-cli", "workers-entry-point"],
)
def test_worker_entry_points_consume_the_service_queues_in_order(
    command: list[str], env: dict[str, str], platform: Platform, tmp_path: Path
) -> None:
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, *command], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: " ready." in log_path.read_text(errors="replace"), timeout_s=30, message="worker ready")
            text = log_path.read_text()
            assert all(f".> ai.{p} " in text for p in ("critical", "high", "normal", "low"))
            assert "speech_recognition" in text and "t_echo" in text
            assert dispatch("t_echo", {"tag": "entry"}).wait(timeout=20) == {"tag": "entry"}
        finally:
            proc.terminate()
            deadline = time.monotonic() + 15
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
