"""Keep the garbage collector's full passes off the task path.

A worker's start-up leaves a few hundred thousand long-lived objects (Celery, kombu, pydantic schemas, the task
types). CPython's full collection walks all of them: 30-60 ms on our 2-core VMs, a pause in the middle of
whatever task or fetch is running (it showed as the p99 of dispatch -> start at 200 tasks/s). ``gc.freeze()``
moves everything alive into a generation the collector never walks. It is done when the worker is initialised
(before prefork forks its children, which then share those pages instead of copying them when the collector
touches their headers), when it is ready, and when a prefork child has initialised.

A worker's start-up runs with automatic collections off, from the package import (when the process was started
as a worker: :func:`starting_a_worker`) until that first freeze: nearly everything start-up allocates lives as
long as the process and is frozen there, so the collections its allocations would trigger walk a growing heap
again and again (~40 ms of a ~0.45 s start) to find a few dozen garbage objects. Any other process importing
the package gets its collector back, as it was, when the import ends.

Celery is imported only by :func:`install`, so ``import meetingtasks`` can use this module without it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Automatic collections were turned off by :func:`pause_until_frozen`; :func:`resume` turns them back on.
_paused = False
#: :func:`freeze_long_lived` has run in this process (or in the parent it was forked from).
_frozen = False


@contextmanager
def collections_paused(*, until_frozen: bool = False) -> Iterator[None]:
    """No automatic collection within the block. Afterwards the collector is as it was found, or, with
    ``until_frozen``, stays off until the worker's first freeze."""
    if until_frozen:
        pause_until_frozen()
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def pause_until_frozen() -> None:
    """Turn automatic collections off (when they are on) until :func:`resume`, which the first freeze calls."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Undo :func:`pause_until_frozen` (a no-op when it turned nothing off or was undone already)."""
    global _paused
    if _paused:
        _paused = False
        gc.enable()


def starting_a_worker(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (the interpreter's, ``sys.orig_argv``) runs ``meetingtasks worker``: ``python -m
    meetingtasks worker ...``, ``python -m meetingtasks.cli worker ...`` or the ``meetingtasks`` script."""
    rest = list(argv[1:])
    while rest:
        arg = rest.pop(0)
        if arg == "-m":
            return rest[:1] in (["meetingtasks"], ["meetingtasks.cli"]) and rest[1:2] == ["worker"]
        if arg in ("-X", "-W"):  # options whose value is the next argument
            rest = rest[1:]
        elif not arg.startswith("-"):  # the script
            return Path(arg).name == "meetingtasks" and rest[:1] == ["worker"]
        elif arg == "-c":
            return False
    return False


def freeze_long_lived(**_: Any) -> None:
    """Keep everything alive now out of future collections, after collecting what the last freeze left young.

    The first freeze (``worker_init``) collects nothing first: a full pass over the start-up heap costs 30-50 ms
    of every start and finds ~100 garbage objects, which stay frozen (a few KiB, once). Later freezes collect
    first; with the start-up heap frozen that walks only what was created since (~1 ms).
    """
    global _frozen
    if _frozen:  # (gc.get_freeze_count() would tell as well, but it walks every frozen object: ~5 ms a call)
        gc.collect()
    gc.freeze()
    _frozen = True
    resume()


def install() -> None:
    """Connect to the worker's signals; connecting again is a no-op (Celery keys receivers by identity)."""
    from celery.signals import worker_init, worker_process_init, worker_ready

    for signal in (worker_init, worker_ready, worker_process_init):
        signal.connect(freeze_long_lived, weak=False)
