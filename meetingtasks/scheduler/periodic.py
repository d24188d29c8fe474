"""The beat scheduler: redbeat's Redis schedule and lock, entries dispatched as platform tasks.

Differences from a stock ``RedBeatScheduler``:

- a due entry is dispatched through the platform's :class:`Dispatcher` (routing table, priority queue,
  status record) instead of Celery's producer, so ``task`` names a task type and ``kwargs`` is its payload;
- an entry whose previous run is still waiting (QUEUED or SCHEDULED: its workers are down or busy) is not
  queued again, so an outage does not pile up one run per period;
- the delayed-set pumps of all services start with the scheduler, before the lock is taken, so a standby
  beat pumps too;
- nothing blocks on Redis (so SIGTERM always works): beat starts while Redis is down, a tick that meets an
  outage logs once and waits, and a lock lost meanwhile is taken again before anything fires, so two beats
  never fire at once.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import redis
from celery.signals import beat_init
from redbeat.schedulers import RedBeatScheduler, acquire_distributed_beat_lock
from redis.exceptions import LockError

from meetingtasks.core.errors import TaskNotFound
from meetingtasks.enqueue.dispatcher import Dispatcher, TaskHandle
from meetingtasks.scheduler.pumps import ServicePumps
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status

log = logging.getLogger(__name__)

# redbeat takes its lock in a beat_init handler, where a Redis outage ends in a logged traceback and no lock;
# our tick takes the lock instead (blocking while another beat holds it) and waits out outages quietly.
beat_init.disconnect(acquire_distributed_beat_lock)

_WAITING = frozenset({Status.QUEUED, Status.SCHEDULED})


class PlatformScheduler(RedBeatScheduler):  # type: ignore[misc]
    lock: Any = None
    lock_key: str | None
    pumps: ServicePumps | None = None
    _failing = False
    _schedule_stored = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._held_back: dict[str, str] = {}  # entry name -> id of the waiting run it was held back for
        super().__init__(*args, **kwargs)

    @property
    def platform(self) -> Platform:
        platform: Platform = self.app.mt_platform
        return platform

    # --- lifecycle ------------------------------------------------------------------------------------------
    def setup_schedule(self) -> None:
        # Called once for the scheduler that runs (never for the lazy one the banner builds). Nothing here
        # may block on Redis: Celery's SIGTERM handler builds the scheduler again if this never returned.
        self.pumps = ServicePumps(self.platform).start()
        self._store_schedule()

    def _store_schedule(self) -> bool:
        """Write the static entries to Redis; ``False`` (logged once) while Redis is unavailable."""
        try:
            super().setup_schedule()
        except redis.RedisError as exc:
            if not self._failing:
                log.warning("beat: Redis unavailable (%s); retrying every %.1fs", exc, self.max_interval)
            self._failing = True
            self._schedule_stored = False
            return False
        self._schedule_stored = True
        return True

    def close(self) -> None:
        if self.pumps is not None:
            self.pumps.stop()
        try:
            super().close()
        except redis.RedisError as exc:  # releasing the lock during an outage: it expires by itself
            log.warning("beat: could not release the lock (%s); it expires by itself", exc)

    # --- ticking --------------------------------------------------------------------------------------------
    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._schedule_stored and not self._store_schedule():
            return float(self.max_interval)
        try:
            if self.lock_key and self.lock is None:
                acquire_distributed_beat_lock(sender=SimpleNamespace(scheduler=self))
            interval = float(super().tick(*args, **kwargs))
        except LockError as exc:
            log.warning("beat: lost the schedule lock (%s); waiting to take it again", exc)
            self.lock = None
            return 0.0
        except redis.RedisError as exc:
            if not self._failing:
                log.warning("beat: Redis unavailable (%s); retrying every %.1fs", exc, self.max_interval)
            self._failing = True
            return float(self.max_interval)
        if self._failing:
            log.info("beat: Redis reachable again")
        self._failing = False
        return interval

    @property
    def _maybe_due_kwargs(self) -> dict[str, Any]:
        return {}  # no Celery producer: entries go through the dispatcher

    # --- dispatching ----------------------------------------------------------------------------------------
    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        entry = self.reserve(entry) if advance else entry
        return self.dispatch_entry(entry.name, entry.task, entry.args, entry.kwargs, entry.options or {})

    def dispatch_entry(
        self, name: str, task_type: str, args: Any, kwargs: Any, options: dict[str, Any]
    ) -> TaskHandle | None:
        """Queue one run of entry ``name``; ``None`` when its previous run has not started yet."""
        platform = self.platform
        dispatcher = Dispatcher(platform)
        client = platform.redis()
        last_key = platform.keys.beat_last(name)
        last = client.get(last_key)
        if last is not None:
            previous = TaskHandle(last.decode() if isinstance(last, bytes) else str(last), dispatcher)
            try:
                waiting = previous.status() in _WAITING
            except TaskNotFound:
                waiting = False
            if waiting:
                if self._held_back.get(name) != previous.id:  # one line per stuck run, not one per period
                    log.warning("beat: %s: its last run %s has not started yet (are its workers up?); "
                                "not queued again until it does", name, previous.id)
                self._held_back[name] = previous.id
                return None
        payload = kwargs or (args[0] if args else {})
        handle = dispatcher.dispatch(task_type, payload, priority=options.get("priority"))
        client.set(last_key, handle.id, ex=platform.settings.status_ttl_s)
        return handle
