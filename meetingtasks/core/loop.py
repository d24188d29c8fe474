"""The one way the platform runs work in the background: a named daemon thread that runs until stopped.

:class:`BackgroundThread` runs a body (a subscriber's listen loop, the bridge's stream reader, the local bus's
dispatcher) until :meth:`~BackgroundThread.stop`; the body reads :attr:`~BackgroundThread.stopping` to end, and
waits on it instead of sleeping so that a stop is never late. :class:`Loop` is the common case: one step every
``interval_s`` (lease renewal, the delayed pump, the watchdog, the stats reporter), surviving Redis outages.
``start()`` and ``stop()`` are idempotent, and a body may stop its own thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class BackgroundThread:
    """Run ``body`` on a daemon thread called ``name`` from :meth:`start` until :meth:`stop`."""

    def __init__(self, name: str, body: Callable[[], object], *, join_timeout_s: float = 5.0) -> None:
        self.name = name
        self.body = body
        self.join_timeout_s = join_timeout_s
        #: Set by :meth:`stop`: the body ends when it sees it (``while not stopping.is_set()``,
        #: ``stopping.wait(s)`` for a pause that a stop cuts short).
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> bool:
        """Start the thread unless it runs; True if this call started it."""
        with self._lock:
            if self._thread is not None:
                return False
            self.stopping.clear()
            self._thread = threading.Thread(target=self.body, name=self.name, daemon=True)
            self._thread.start()
            return True

    def stop(self, timeout_s: float | None = None) -> bool:
        """Ask the body to end and wait for it (``join_timeout_s`` at most); True if a thread was running."""
        self.stopping.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.join_timeout_s if timeout_s is None else timeout_s)
        return thread is not None


class Loop(BackgroundThread):
    """Run ``step`` every ``interval_s`` on a daemon thread; survives Redis outages, logs each one once."""

    def __init__(self, name: str, interval_s: float, step: Callable[[], object]) -> None:
        super().__init__(name, self._run)
        self.interval_s = interval_s
        self.step = step
        self._failing = False

    def _run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            try:
                self.step()
            except Exception as exc:
                if not self._failing:
                    log.warning("%s: %s; retrying every %.1fs", self.name, exc, self.interval_s)
                self._failing = True
            else:
                if self._failing:
                    log.info("%s: recovered", self.name)
                self._failing = False
