"""`meetingtasks beat` (or `celery -A beat beat`) as a subprocess, and the body of a ``start_beat`` fixture."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.processes import PartProcess

PUMP_READY = "delayed-set pump running"
LOCK_ACQUIRED = "beat: Acquired lock"


class BeatProcess(PartProcess):
    name = "beat"

    def holds_lock(self) -> bool:
        return LOCK_ACQUIRED in self.log()


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
