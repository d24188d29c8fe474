"""A platform part run as a subprocess for the tests: its own process group, its log kept for assertions."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent.parent
P = TypeVar("P", bound="PartProcess")


class PartProcess:
    """``argv`` started in ``ROOT`` with ``env``; stdout and stderr go to ``log_path``."""

    name = "process"

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.log_file = log_path.open("wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log_file, stderr=subprocess.STDOUT, cwd=ROOT,
                                     start_new_session=True)

    @staticmethod
    def cli(*args: str) -> list[str]:
        """The argv of ``meetingtasks <args>`` with this interpreter."""
        return [sys.executable, "-m", "meetingtasks.cli", *args]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until(self: P, ready: Callable[[], bool], timeout_s: float, what: str) -> P:
        """Poll ``ready`` until it holds; fail with the log if the process exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready():
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no {what} after {timeout_s}s:\n{self.log()}")

    def wait_log(self: P, text: str, timeout_s: float = 30.0) -> P:
        return self.wait_until(lambda: text in self.log(), timeout_s, repr(text))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a worker's pool children too) and reap the process."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL of the whole group if it lingers; safe to call twice."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        # Pool children may outlive their main process; they are in its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if not self.log_file.closed:
            self.log_file.close()
