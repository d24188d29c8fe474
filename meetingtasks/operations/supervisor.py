"""A small process supervisor for ``meetingtasks up``: start parts, wait until each is ready, restart the
ones that die (within a limit), stop them all on request with nothing left behind.

Each part runs in its own session (process group), so stopping it reaches its children too (a prefork
worker's pool); on Linux each part also gets SIGTERM if the supervisor itself dies (``PR_SET_PDEATHSIG``).
A part's output goes to ``<log_dir>/<name>.log``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from meetingtasks.core.errors import MeetingTasksError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class PartFailed(MeetingTasksError):
    """A part could not start, or died more often than allowed; the message is one line."""


ReadyCheck = Callable[["Part"], bool]


def log_contains(text: str) -> ReadyCheck:
    """Ready once ``text`` appears in the part's log."""
    return lambda part: text in part.log_text()


def http_ok(url: str, headers: dict[str, str] | None = None) -> ReadyCheck:
    """Ready once ``url`` answers 2xx (or 401: listening, just protected)."""

    def check(part: Part) -> bool:
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return bool(200 <= response.status < 300)
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except OSError:
            return False

    return check


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class PartSpec:
    """What to run: ``argv`` (``meetingtasks ...`` runs this interpreter), how to tell it is ready, what to
    show (``urls``), and the ports it will listen on (checked free before anything starts)."""

    name: str
    argv: list[str]
    ready: ReadyCheck
    urls: list[str] = field(default_factory=list)
    ports: list[tuple[str, int, str]] = field(default_factory=list)  # (host, port, setting that moves it)
    note: str = ""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGTERM it when `up` dies.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Part:
    """One supervised process."""

    def __init__(self, spec: PartSpec, env: dict[str, str], log_dir: Path) -> None:
        self.spec = spec
        self.env = env
        self.log_path = log_dir / f"{spec.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.started_at = 0.0
        self.deaths: list[float] = []
        self._log_offset = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def argv(self) -> list[str]:
        argv = list(self.spec.argv)
        if argv[0] == "meetingtasks":
            return [sys.executable, "-m", "meetingtasks.cli", *argv[1:]]
        if argv[0] == "celery":
            return [sys.executable, "-m", "celery", *argv[1:]]
        return argv

    def start(self) -> None:
        self.ready = False
        self.started_at = time.monotonic()
        with self.log_path.open("ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(self.spec.argv)}\n".encode())
            out.flush()
            self._log_offset = out.tell()
            preexec = _die_with_parent if sys.platform.startswith("linux") else None
            self.proc = subprocess.Popen(self.argv(), env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec)

    def log_text(self) -> str:
        """The log written since the last start."""
        with self.log_path.open("rb") as handle:
            handle.seek(self._log_offset)
            return handle.read().decode(errors="replace")

    def last_line(self) -> str:
        lines = [line.strip() for line in self.log_text().splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        return (errors or lines or ["(no output)"])[-1][:300]

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def check_ready(self) -> bool:
        if not self.ready and self.exit_code() is None:
            self.ready = self.spec.ready(self)
        return self.ready

    def signal_group(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the part's process group, SIGKILL it after ``timeout_s``. Safe to call twice."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout_s)
        # Whatever is left in the group (a pool child of a killed worker) goes too.
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        self.proc = None


class Supervisor:
    """Runs parts; ``start()`` returns once all are ready or raises :class:`PartFailed` with all stopped."""

    def __init__(self, specs: Sequence[PartSpec], env: dict[str, str], log_dir: Path, *,
                 echo: Callable[[str], None] = print, ready_timeout_s: float = 120.0, max_restarts: int = 3,
                 restart_window_s: float = 300.0) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.parts = [Part(spec, env, log_dir) for spec in specs]
        self.echo = echo
        self.ready_timeout_s = ready_timeout_s
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s

    def check_ports(self) -> None:
        for part in self.parts:
            for host, port, setting in part.spec.ports:
                if not port_free(host, port):
                    raise PartFailed(f"{part.name}: port {port} on {host} is taken; free it or set {setting}")

    def start(self) -> None:
        self.check_ports()
        try:
            for part in self.parts:
                part.start()
            self._wait_ready(self.parts)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, parts: Sequence[Part]) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        waiting = list(parts)
        while waiting:
            for part in list(waiting):
                code = part.exit_code()
                if code is not None:
                    raise PartFailed(f"{part.name} could not start (exit {code}): {part.last_line()} "
                                     f"(log: {part.log_path})")
                if part.check_ready():
                    waiting.remove(part)
                    self.echo(f"  ready  {part.name:<17} {time.monotonic() - part.started_at:5.1f}s")
            if waiting and time.monotonic() > deadline:
                names = ", ".join(p.name for p in waiting)
                raise PartFailed(f"not ready after {self.ready_timeout_s:.0f}s: {names} (logs in "
                                 f"{waiting[0].log_path.parent})")
            time.sleep(0.1)

    def watch(self) -> None:
        """Restart parts that died; raise :class:`PartFailed` when one dies too often. Call repeatedly."""
        for part in self.parts:
            code = part.exit_code()
            if code is None:
                continue
            now = time.monotonic()
            part.deaths = [t for t in part.deaths if now - t < self.restart_window_s] + [now]
            last = part.last_line()
            part.stop(timeout_s=1)  # collect what is left of its group
            if len(part.deaths) > self.max_restarts:
                raise PartFailed(
                    f"{part.name} died {len(part.deaths)} times within {self.restart_window_s:.0f}s "
                    f"(exit {code}): {last} (log: {part.log_path})")
            self.echo(f"  {part.name} exited ({code}): {last}; restarting "
                      f"({len(part.deaths)}/{self.max_restarts})")
            part.start()
            self._wait_ready([part])

    def stop(self) -> None:
        """Stop every part, the last started first. Safe to call twice."""
        running = [p for p in reversed(self.parts) if p.proc is not None]
        for part in running:  # signal all first so they shut down in parallel
            if part.exit_code() is None:
                part.signal_group(signal.SIGTERM)
        for part in running:
            part.stop()
