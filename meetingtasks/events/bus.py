"""The local event bus: in-process events between parts of one service, without Redis.

::

    from meetingtasks.events import bus

    @bus.on("participant.muted")
    def update_mixer(data): ...

    @bus.on("participant.muted")
    async def notify_clients(data): ...      # coroutine handlers run on an asyncio loop

    bus.emit("participant.muted", {"user_id": "u1"})   # returns at once; False when dropped

``emit`` never blocks and never runs a handler in the caller: it appends to a bounded buffer
(``Settings.local_bus_buffer`` events) that one dispatcher thread drains. When the buffer is full the
event is refused and counted as ``dropped``; nothing is lost silently. Each handler runs isolated: one
that raises is logged (at most once a minute per handler) and counted as ``failed``; the others still
get the event. A coroutine handler runs on the event loop that was running where it was registered, or
on a loop thread of the bus when it was registered outside one.

Counters (:meth:`LocalBus.stats`): ``emitted`` (emit calls), ``dropped`` (refused, buffer full),
``processed`` / ``failed`` (handler runs that returned / raised; an async run counts when it ends) and
``pending`` (in the buffer).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from meetingtasks.core.loop import BackgroundThread
from meetingtasks.store.platform import get_platform

log = logging.getLogger(__name__)

Handler = Callable[[Any], Any]
H = TypeVar("H", bound=Handler)
_FAILURE_LOG_INTERVAL_S = 60.0
_FLUSH_EVERY = 1024  # events between two updates of the shared counters by the dispatcher thread


class _AsyncHandler:
    """A coroutine handler and the loop it runs on."""

    __slots__ = ("func", "loop")

    def __init__(self, func: Handler, loop: asyncio.AbstractEventLoop) -> None:
        self.func = func
        self.loop = loop


class LocalBus:
    """One bounded buffer, one dispatcher thread, many handlers per event name. ``stop()`` is safe twice."""

    def __init__(self, buffer: int = 10_000, *, name: str = "local-bus") -> None:
        if buffer < 1:
            raise ValueError(f"buffer must be >= 1 event, got {buffer}")
        self.capacity = buffer
        self.name = name
        self._queue: deque[tuple[str, Any]] = deque()
        self._handlers: dict[str, tuple[Handler | _AsyncHandler, ...]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = False
        self._runner = BackgroundThread(name, self._run)
        self._stop = self._runner.stopping
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_failure_log: dict[Handler, float] = {}
        # Written by the dispatcher thread only (published every _FLUSH_EVERY events and when idle).
        self._popped = 0
        self._processed = 0
        self._failed = 0
        # Written under _lock (emitters that overflow, async completions on loops).
        self._dropped = 0
        self._async_processed = 0
        self._async_failed = 0
        self._async_running = 0

    # --- handlers ------------------------------------------------------------------------------------------
    def on(self, name: str, handler: H | None = None) -> Any:
        """Register ``handler`` for events called ``name``; without a handler, a decorator."""
        if handler is None:
            return lambda func: self.on(name, func)
        entry: Handler | _AsyncHandler = handler
        if asyncio.iscoroutinefunction(handler):
            entry = _AsyncHandler(handler, self._loop_for_async())
        with self._lock:
            self._handlers[name] = (*self._handlers.get(name, ()), entry)
        self.start()
        return handler

    def off(self, name: str, handler: Handler) -> bool:
        """Unregister ``handler`` from ``name``; ``False`` if it was not registered."""
        with self._lock:
            current = self._handlers.get(name, ())
            # == rather than is: bound methods (``items.append``) are new objects at each attribute access
            kept = tuple(h for h in current if (h.func if isinstance(h, _AsyncHandler) else h) != handler)
            if len(kept) == len(current):
                return False
            if kept:
                self._handlers[name] = kept
            else:
                del self._handlers[name]
            return True

    def _loop_for_async(self) -> asyncio.AbstractEventLoop:
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            pass
        with self._lock:
            if self._own_loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name=f"{self.name}-loop", daemon=True).start()
                self._own_loop = loop
            return self._own_loop

    # --- emitting ----------------------------------------------------------------------------------------------
    def emit(self, name: str, data: Any = None) -> bool:
        """Queue an event for the handlers of ``name``; never blocks. ``False`` when the buffer is full."""
        queue = self._queue
        if len(queue) >= self.capacity:
            with self._lock:
                self._dropped += 1
            return False
        queue.append((name, data))
        if self._idle:
            self._wake.set()
        return True

    # --- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> LocalBus:
        self._runner.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the dispatcher thread (events still buffered stay counted as ``pending``)."""
        self._stop.set()
        self._wake.set()  # the dispatcher may be waiting for an event
        with self._lock:
            loop, self._own_loop = self._own_loop, None
        self._runner.stop(timeout_s)
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every buffered event was handled (async runs included); ``False`` on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._queue and self._idle and self._async_running == 0:
                return True
            time.sleep(0.001)
        return False

    def stats(self) -> dict[str, int]:
        with self._lock:
            dropped = self._dropped
            processed = self._processed + self._async_processed
            failed = self._failed + self._async_failed
        pending = len(self._queue)
        return {"emitted": self._popped + pending + dropped, "processed": processed, "failed": failed,
                "dropped": dropped, "pending": pending}

    # --- dispatcher thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        queue, handlers_of = self._queue, self._handlers
        popped = processed = failed = 0
        batches: dict[asyncio.AbstractEventLoop, list[tuple[Handler, Any]]] = {}
        while not self._stop.is_set():
            try:
                name, data = queue.popleft()
            except IndexError:
                self._publish_counts(popped, processed, failed)
                popped = processed = failed = 0
                if batches:
                    self._submit_async(batches)
                    batches = {}
                self._idle = True
                if not queue:  # checked after _idle is set: an emit in between will wake us
                    self._wake.wait(0.5)
                    self._wake.clear()
                self._idle = False
                handlers_of = self._handlers
                continue
            popped += 1
            for handler in handlers_of.get(name, ()):
                if isinstance(handler, _AsyncHandler):
                    batches.setdefault(handler.loop, []).append((handler.func, data))
                    continue
                try:
                    handler(data)
                    processed += 1
                except Exception:
                    failed += 1
                    self._log_failure(handler, name)
            if popped >= _FLUSH_EVERY:
                self._publish_counts(popped, processed, failed)
                popped = processed = failed = 0
                handlers_of = self._handlers  # pick up on/off made meanwhile
                if batches:
                    self._submit_async(batches)
                    batches = {}
        self._publish_counts(popped, processed, failed)

    def _publish_counts(self, popped: int, processed: int, failed: int) -> None:
        self._popped += popped
        with self._lock:
            self._processed += processed
            self._failed += failed

    def _log_failure(self, handler: Handler, name: str) -> None:
        now = time.monotonic()
        if now - self._last_failure_log.get(handler, -_FAILURE_LOG_INTERVAL_S) >= _FAILURE_LOG_INTERVAL_S:
            self._last_failure_log[handler] = now
            log.exception("%s: handler %s failed on %r (further failures counted, logged once a minute)",
                          self.name, getattr(handler, "__qualname__", handler), name)

    # --- async handlers ----------------------------------------------------------------------------------------
    def _submit_async(self, batches: dict[asyncio.AbstractEventLoop, list[tuple[Handler, Any]]]) -> None:
        for loop, calls in batches.items():
            with self._lock:
                self._async_running += len(calls)
            try:
                loop.call_soon_threadsafe(self._start_async, calls)
            except RuntimeError:  # the loop is closed: these runs cannot happen
                with self._lock:
                    self._async_running -= len(calls)
                    self._async_failed += len(calls)

    def _start_async(self, calls: list[tuple[Handler, Any]]) -> None:
        loop = asyncio.get_running_loop()
        for func, data in calls:
            try:
                task = loop.create_task(func(data))
            except Exception:
                self._async_finished(ok=False, func=func)
                continue
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._async_task_done, func=func))

    def _async_task_done(self, task: asyncio.Task[Any], *, func: Handler) -> None:
        self._tasks.discard(task)
        ok = not task.cancelled() and task.exception() is None
        if not ok and not task.cancelled():
            exc = task.exception()
            now = time.monotonic()
            if now - self._last_failure_log.get(func, -_FAILURE_LOG_INTERVAL_S) >= _FAILURE_LOG_INTERVAL_S:
                self._last_failure_log[func] = now
                log.error("%s: async handler %s failed: %s: %s", self.name, getattr(func, "__qualname__", func),
                          type(exc).__name__, exc, exc_info=exc)
        self._async_finished(ok=ok, func=func)

    def _async_finished(self, *, ok: bool, func: Handler) -> None:
        with self._lock:
            self._async_running -= 1
            if ok:
                self._async_processed += 1
            else:
                self._async_failed += 1


_default: LocalBus | None = None
_default_lock = threading.Lock()


def default_bus() -> LocalBus:
    """The process's bus, sized by ``Settings.local_bus_buffer`` of the default platform."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = LocalBus(get_platform().settings.local_bus_buffer)
    return _default


def on(name: str, handler: H | None = None) -> Any:
    """Register ``handler`` on the default bus (or use as ``@on(name)``)."""
    return default_bus().on(name, handler)


def off(name: str, handler: Handler) -> bool:
    return default_bus().off(name, handler)


def emit(name: str, data: Any = None) -> bool:
    """Queue an event on the default bus; never blocks; ``False`` when dropped (buffer full)."""
    return default_bus().emit(name, data)


def stats() -> dict[str, int]:
    return default_bus().stats()
