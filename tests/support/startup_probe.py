"""Loaded into a worker with ``--include``: once the worker is ready, it writes the state of the garbage
collector (``gc enabled=<bool> frozen=<count>``) and then the names of every module the process has imported, one a
line, to the file named by ``STARTUP_PROBE_OUT`` (tests/test_worker_startup.py)."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any

from celery.signals import worker_ready


def write_imported_modules(**_: Any) -> None:
    out = Path(os.environ["STARTUP_PROBE_OUT"])
    partial = out.with_suffix(".partial")
    state = f"gc enabled={gc.isenabled()} frozen={gc.get_freeze_count()}"
    partial.write_text("\n".join([state, *sorted(sys.modules)]))
    partial.replace(out)  # the test never reads half a list


worker_ready.connect(write_imported_modules, weak=False)
