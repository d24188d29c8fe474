"""System tools a few integration tests drive (Chromium, Prometheus, Node.js with celery-node, a TLS-enabled
redis-server): found, or the test skips with the command that installs it.

``pytest`` never installs anything by itself. ``.ci/run`` installs the tools first (``.ci/test-tools``) and
sets ``MEETINGTASKS_REQUIRE_TEST_TOOLS=1``, under which a missing tool fails the test instead of skipping it,
so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REQUIRED_ENV = "MEETINGTASKS_REQUIRE_TEST_TOOLS"
ALL_TOOLS = "sudo bash .ci/test-tools"
PROMETHEUS_INSTALL = "sudo apt-get install -y prometheus"


def missing(tool: str, install: str) -> None:
    """Skip (on a newcomer's machine) or fail (in CI) because ``tool`` is not there; ``install`` is the command
    that brings it."""
    message = f"{tool} is not installed; install it with: {install}  (or all test tools: {ALL_TOOLS})"
    if os.environ.get(REQUIRED_ENV) == "1":
        pytest.fail(f"{message} [{REQUIRED_ENV}=1: missing tools fail]")
    pytest.skip(message)


def executable(names: tuple[str | None, ...], tool: str, install: str) -> str:
    """The path of the first of ``names`` found on PATH, else skip or fail (see :func:`missing`)."""
    for name in names:
        if name and (path := shutil.which(name)):
            return path
    missing(tool, install)
    raise AssertionError("unreachable")  # pytest.skip and pytest.fail raise


def existing(path: Path, tool: str, install: str) -> Path:
    """``path`` if it exists, else skip or fail (see :func:`missing`)."""
    if not path.exists():
        missing(tool, install)
    return path
