"""The module paths of earlier releases, from before the package was grouped by layer, still import.

Users' code and deployments name modules, not only ``from meetingtasks import ...``: Flower's start command
(``celery -A meetingtasks.flower flower``), a payload field marked
``Annotated[str, meetingtasks.secret_fields.Secret]``, an application's ``meetingtasks.app_settings.AppSettings``
and ``meetingtasks.registry.declare_service``, the profiling and top APIs. Each former path is an alias: importing
it imports the module where it lives now and gives that same module object (one set of classes and globals;
patching either name patches both). Nothing is imported until a former path is, and this module names the others
only as strings, so the layers stay as they are. ``python -m`` takes the new paths only.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

#: Former path -> where the module lives now.
FORMER_PATHS: dict[str, str] = {
    **{f"meetingtasks.{name}": f"meetingtasks.core.{name}" for name in (
        "app_settings", "applications", "backoff", "errors", "kombu_json", "logs", "message", "optional_imports",
        "priority", "redaction", "registry", "secret_fields", "sentinel", "settings", "signing", "tracing")},
    "meetingtasks.dispatcher": "meetingtasks.enqueue.dispatcher",
    **{f"meetingtasks.{name}": f"meetingtasks.store.{name}" for name in (
        "callbacks", "cancel", "connections", "deadletter", "dedup", "delayed", "keys", "moves", "platform",
        "replication", "reply_wait", "resp", "stats", "status", "status_schema", "wake")},
    "meetingtasks.metrics.rollups": "meetingtasks.store.rollup",
    "meetingtasks.metrics.rollup": "meetingtasks.store.rollup",
    **{f"meetingtasks.{name}": f"meetingtasks.worker.{name}" for name in (
        "app", "current", "maintenance", "profiling", "progress", "ratelimit", "task", "watchdog")},
    **{f"meetingtasks.{name}": f"meetingtasks.operations.{name}" for name in (
        "demo", "docs_gen", "embedded", "embedded_sentinel", "flower", "supervisor")},
}


class FormerPathFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds a former path (after every other finder: a real module of that name would win) and loads it as the
    module where it lives now."""

    def __init__(self) -> None:
        self._own_specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in FORMER_PATHS:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(FORMER_PATHS[spec.name])
        self._own_specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # Between the two calls the import system set the module's __spec__ to the alias's: give it back its own
        # (importlib.resources, pickling and reloads read it).
        module.__spec__ = self._own_specs.pop(module.__name__, module.__spec__)


def install() -> None:
    """Add the finder once per process (importing ``meetingtasks`` does)."""
    if not any(isinstance(finder, FormerPathFinder) for finder in sys.meta_path):
        sys.meta_path.append(FormerPathFinder())
