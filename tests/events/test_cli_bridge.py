"""``meetingtasks bridge``: starts, stops cleanly on SIGTERM, and refuses a broken set-up in one line."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.support.processes import ROOT


def test_the_bridge_command_stops_cleanly_on_sigterm(start_bridge) -> None:
    bridge = start_bridge()
    bridge.proc.send_signal(signal.SIGTERM)
    assert bridge.proc.wait(timeout=20) == 0
    log = bridge.log()
    assert "bridge ready: consumer" in log and "bridge stopped:" in log
    assert "Traceback" not in log


def test_a_module_that_cannot_be_imported_is_one_line_and_exit_1(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meetingtasks.cli", "bridge", "--include", "no_such_module_here"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: --include no_such_module_here: cannot import it (No module named 'no_such_module_here')"
    ]


def test_a_subscription_to_an_unknown_task_type_is_refused_at_start(env: dict[str, str], tmp_path) -> None:
    (tmp_path / "typo_subscriptions.py").write_text(
        "from meetingtasks import on_event\n\n"
        "@on_event('meeting_events', 'meeting.created', dispatch='meeting_creat')\n"
        "def on_created(event):\n"
        "    return {}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "meetingtasks.cli", "bridge", "--include", "typo_subscriptions"],
        env={**env, "PYTHONPATH": f"{tmp_path}:{env['PYTHONPATH']}"}, cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: subscriptions dispatch unknown task types: typo_subscriptions:on_created")
    assert "did you mean 'meeting_create'" in line
