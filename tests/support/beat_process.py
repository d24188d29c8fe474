"""`meetingtasks beat` (or `celery -A beat beat`) as a subprocess, and the body of a ``start_beat`` fixture."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.conftest import ROOT

PUMP_READY = "delayed-set pump running"
LOCK_ACQUIRED = "beat: Acquired lock"


class BeatProcess:
    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.log_file = log_path.open("wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log_file, stderr=subprocess.STDOUT, cwd=ROOT,
                                     start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout_s: float = 30.0) -> BeatProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log():
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"beat exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"beat log has no {text!r} after {timeout_s}s:\n{self.log()}")

    def holds_lock(self) -> bool:
        return LOCK_ACQUIRED in self.log()

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log_file.close()


def beat_factory(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., BeatProcess]]:
    """Body of a ``start_beat`` fixture: ``start_beat("--include", "m", env_overrides={...}, celery_cli=False)``
    -> a running beat whose pumps are up; every beat is stopped at the end."""
    beats: list[BeatProcess] = []

    def start(*args: str, env_overrides: dict[str, str] | None = None, celery_cli: bool = False,
              ready: bool = True) -> BeatProcess:
        if celery_cli:
            argv = [sys.executable, "-m", "celery", "-A", "beat", "beat", "--loglevel", "INFO", *args]
        else:
            argv = [sys.executable, "-m", "meetingtasks.cli", "beat", *args]
        proc_env = {**env, "MEETINGTASKS_LOG_LEVEL": "INFO", **(env_overrides or {})}
        beat = BeatProcess(argv, proc_env, tmp_path / f"beat-{len(beats)}.log")
        beats.append(beat)
        return beat.wait_log(PUMP_READY) if ready else beat

    yield start
    for beat in beats:
        beat.stop()
