"""The supervisor behind `up`, with small real processes: restart limit, start failures, group cleanup."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from meetingtasks.operations.supervisor import PartFailed, PartSpec, Supervisor, log_contains

ECHO = print


def python_part(name: str, code: str) -> PartSpec:
    return PartSpec(name, [sys.executable, "-c", code], log_contains("ready"))


def test_a_part_dying_past_the_limit_stops_with_a_clear_message(tmp_path: Path) -> None:
    # Given a part that becomes ready, then exits with 3 after a moment, every time
    flaky = python_part("flaky", "import sys, time; print('ready', flush=True); time.sleep(0.2); "
                                 "print('error: lost my marbles', flush=True); sys.exit(3)")
    steady = python_part("steady", "import time; print('ready', flush=True); time.sleep(60)")
    messages: list[str] = []
    supervisor = Supervisor([flaky, steady], {}, tmp_path, echo=messages.append, max_restarts=2)
    supervisor.start()
    steady_pid = supervisor.parts[1].proc.pid  # type: ignore[union-attr]

    # When it is watched
    deadline = time.monotonic() + 30
    with pytest.raises(PartFailed) as failed:
        while time.monotonic() < deadline:
            supervisor.watch()
            time.sleep(0.05)
    supervisor.stop()
    supervisor.stop()  # twice is fine

    # Then it was restarted twice, each time said in one line, and the third death ends it with the reason
    restarts = [m for m in messages if m.startswith("  flaky exited (3)")]
    assert [m.rsplit("(", 1)[1] for m in restarts] == ["1/2)", "2/2)"]
    assert "flaky died 3 times" in str(failed.value) and "lost my marbles" in str(failed.value)
    assert supervisor.parts[1].proc is None
    with pytest.raises(ProcessLookupError):
        os.kill(steady_pid, 0)


def test_a_part_exiting_before_ready_fails_the_start_and_stops_the_others(tmp_path: Path) -> None:
    steady = python_part("steady", "import time; print('ready', flush=True); time.sleep(60)")
    broken = python_part("broken", "import sys; print('error: bad config key', flush=True); sys.exit(2)")
    supervisor = Supervisor([steady, broken], {}, tmp_path, echo=ECHO)
    with pytest.raises(PartFailed, match=r"broken could not start \(exit 2\): error: bad config key"):
        supervisor.start()
    assert all(part.proc is None for part in supervisor.parts)
