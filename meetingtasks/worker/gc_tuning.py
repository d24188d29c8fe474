"""Keep the garbage collector's full passes off the task path.

A worker's start-up leaves a few hundred thousand long-lived objects (Celery, kombu, pydantic schemas, the task
types). CPython's full collection walks all of them: 30-60 ms on our 2-core VMs, a pause in the middle of
whatever task or fetch is running (it showed as the p99 of dispatch -> start at 200 tasks/s). ``gc.freeze()``
moves everything alive into a generation the collector never walks. It is done when the worker is initialised
(before prefork forks its children, which then share those pages instead of copying them when the collector
touches their headers), when it is ready, and when a prefork child has initialised.
"""

from __future__ import annotations

import gc
from typing import Any

from celery.signals import worker_init, worker_process_init, worker_ready


def freeze_long_lived(**_: Any) -> None:
    """Keep everything alive now out of future collections, after collecting what the last freeze left young.

    The first freeze (``worker_init``) collects nothing first: a full pass over the start-up heap costs 30-50 ms
    of every start and finds ~100 garbage objects, which stay frozen (a few KiB, once). Later freezes collect
    first; with the start-up heap frozen that walks only what was created since (~1 ms).
    """
    if gc.get_freeze_count():
        gc.collect()
    gc.freeze()


def install() -> None:
    """Connect to the worker's signals; connecting again is a no-op (Celery keys receivers by identity)."""
    for signal in (worker_init, worker_ready, worker_process_init):
        signal.connect(freeze_long_lived, weak=False)
