"""A one-second periodic entry for the beat tests (``meetingtasks beat --include tests.support.beat_entries``)."""

from __future__ import annotations

import tests.support.scheduling_tasks  # noqa: F401 - registers t_tick
from beat.schedule import periodic

periodic("test-tick", "t_tick", every_s=1.0, payload={"tag": "tick"})
