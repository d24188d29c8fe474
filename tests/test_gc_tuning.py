"""The worker keeps its start-up objects out of the collector's full passes (see meetingtasks.worker.gc_tuning)."""

from __future__ import annotations

import gc

from celery.signals import worker_ready

from meetingtasks.worker.app import create_app


def test_a_ready_worker_has_frozen_its_long_lived_objects() -> None:
    create_app("ai")  # installs the signal handlers, as every worker's app does
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    survivor = [object() for _ in range(100)]
    try:
        worker_ready.send(sender=None)
        assert gc.get_freeze_count() >= len(survivor)
    finally:
        gc.unfreeze()
