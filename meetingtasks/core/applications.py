"""The applications built into the platform, loaded the way any application of yours is: by importing the
module that registers its services, channels, task types and subscriptions.

The platform core names no service, channel or event type; it learns them from these registrations. The
meeting system (:mod:`meetingtasks.services`) is the one built-in application. Your own is a module given to
``--include`` or ``MEETINGTASKS_INCLUDE`` (see docs/services.md, "Your own service").
"""

from __future__ import annotations

import importlib
import threading

#: Modules imported before the service, channel or type tables are first read.
BUILTIN: tuple[str, ...] = ("meetingtasks.services",)

_loaded = False
# Other threads wait for the whole import; the importing thread, reading a table meanwhile, gets what is there.
_lock = threading.RLock()
_loading = False


def loading_builtin() -> bool:
    """True while this process imports the built-in applications (what they declare is listed first)."""
    return _loading


def load_builtin() -> None:
    """Import the built-in applications (idempotent; cheap: they declare names and import their code lazily)."""
    global _loaded, _loading
    if _loaded:
        return
    with _lock:
        if _loaded or _loading:
            return
        _loading = True
        try:
            for module in BUILTIN:
                importlib.import_module(module)
        finally:
            _loading = False
        _loaded = True
