"""Fixtures of the operations tests: any ``meetingtasks``/``celery`` command as a subprocess, and scraping."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import ROOT

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Process:
    """A command run in its own process group, output kept in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> None:
        self.argv = argv
        self.log_path = log_path
        self.log_file = log_path.open("wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log_file, stderr=subprocess.STDOUT, cwd=cwd,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout_s: float = 60.0) -> Process:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log():
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.argv} exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"{self.argv}: no {text!r} after {timeout_s}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.log_file.close()
        return self.proc.returncode


@pytest.fixture
def run_process(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Factory: ``run_process(["meetingtasks", "exporter"], env)`` (``meetingtasks`` runs this interpreter)."""
    started: list[Process] = []

    def run(argv: list[str], env: dict[str, str], *, name: str | None = None, cwd: Path = ROOT) -> Process:
        if argv[0] == "meetingtasks":
            argv = [sys.executable, "-m", "meetingtasks.cli", *argv[1:]]
        elif argv[0] == "celery":
            argv = [sys.executable, "-m", "celery", *argv[1:]]
        log_name = name or f"{Path(argv[2] if len(argv) > 2 else argv[0]).name}-{len(started)}"
        process = Process(argv, env, tmp_path / f"{log_name}.log", cwd)
        started.append(process)
        return process

    yield run
    for process in reversed(started):
        process.stop()


def scrape(url: str, timeout_s: float = 10.0) -> Samples:
    """Every sample of a Prometheus text endpoint: ``{(name, sorted labels): value}``."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and wanted <= set(lbls))


OPS_INCLUDE = {"MEETINGTASKS_INCLUDE": "tests.support.tasks,tests.support.ops_tasks"}


@pytest.fixture
def ops_tasks() -> None:
    """Registers the operations test task types in this process (the dispatcher validates against them)."""
    import tests.support.ops_tasks  # noqa: F401


@pytest.fixture(scope="session")
def spans() -> Iterator[Any]:
    """This process's finished spans, in memory (an SDK provider installed once for the session)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.clear()
