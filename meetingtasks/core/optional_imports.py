"""Keep libraries' eager probes for optional extras out of start-up.

Some libraries we import try an optional package at import time only to set a flag or build an ornament, and
pay for it whether or not anything uses it: redis-py 8 imports the OpenTelemetry metrics SDK (~30 ms on our 2-core
VMs, with psutil and its resource detection) only to note that it is installed; Celery's ``celery.bin.base``
builds a pygments lexer (~20-50 ms) to colour ``celery inspect`` output. Each library handles the package being absent
(``except ImportError``) and imports it again where it really needs it, so :func:`skipped` makes the package
look absent for the length of one import of that library. Nothing is left behind: the package imports
normally afterwards (tracing's SDK set-up, redis-py's own metrics once configured).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType


class _Absent(importlib.abc.MetaPathFinder):
    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if any(fullname == n or fullname.startswith(n + ".") for n in self.names):
            raise ModuleNotFoundError(f"{fullname} skipped at start-up", name=fullname)
        return None


@contextmanager
def skipped(*names: str) -> Iterator[None]:
    """Within the block, importing ``names`` (or their submodules) raises :class:`ModuleNotFoundError`
    unless they are imported already (then the block changes nothing)."""
    finder = _Absent([n for n in names if n not in sys.modules])
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
