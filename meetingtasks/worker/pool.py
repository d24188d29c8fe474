"""Celery's prefork pool with the next job already in each child's pipe.

With Celery's fair scheduling a job is written to a child only once the child has sent its last result, so the
parent and the child take turns: the child sends its result and waits; the parent wakes (a process wake-up, 50-70
us on a busy 2-core VM), records the result, acks, and writes the next job; the child wakes in turn. Neither runs
while the other works, and with one child the pool ran about one task per 800 us for a no-op task.

Here a child may hold up to ``PIPELINE_DEPTH`` jobs: the one it runs and the next ones, written while it runs. A child
that ends a task reads the next one at once from its pipe, while the parent records the result. The consuming channel
decides what reaches the pool (see the reserve in ``meetingtasks.worker.transport``): it hands over at most
``PIPELINE_DEPTH`` messages per process, and more than one only while the tasks are quick (see
``meetingtasks.worker.pacing``). Each waiting job is leased like any other handed message, records STARTED only when
the child starts it, and has its cancel flag read again then if it waited (see ``meetingtasks.worker.task``). A job
already in a pipe when the consumer closes is run and settled, not dropped (see ``PipelinedAsynPool.flush``).

A job goes to the process with the fewest jobs: among the children a write can go to, the least loaded comes first,
so an idle child never watches the next task wait behind a busy one's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from celery.concurrency.asynpool import AsynPool
from celery.concurrency.prefork import TaskPool

from meetingtasks.worker.hub import quiet

#: Jobs a pool process may hold: the running one and up to two more, already in its pipe.
PIPELINE_DEPTH = 3


class _JobsPerProcess:
    """AsynPool's ``_busy_workers`` (a set of the write ends of busy children's pipes) as a count per child: a child
    is "busy" (takes no more jobs) once it holds ``depth`` of them."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.jobs: Counter[int] = Counter()
        self.sent_ahead = 0  # jobs written to a process that was running another
        self.most = 0  # the most jobs a process held at once

    def __contains__(self, fd: object) -> bool:
        return isinstance(fd, int) and self.jobs[fd] >= self.depth

    def __len__(self) -> int:
        return sum(1 for count in self.jobs.values() if count >= self.depth)

    def add(self, fd: int) -> None:
        """A job was written to ``fd``'s child."""
        held = self.jobs[fd] = self.jobs[fd] + 1
        if held > 1:
            self.sent_ahead += 1
            self.most = max(self.most, held)

    def job_done(self, fd: int) -> None:
        """One of ``fd``'s child's jobs is ready."""
        left = self.jobs[fd] - 1
        if left > 0:
            self.jobs[fd] = left
        else:
            self.jobs.pop(fd, None)

    def discard(self, fd: int) -> None:
        """``fd``'s child is gone (or its pipe closed): none of its jobs count any more."""
        self.jobs.pop(fd, None)

    def intersection_update(self, fds: Iterable[int]) -> None:
        keep = set(fds)
        for fd in [fd for fd in self.jobs if fd not in keep]:
            del self.jobs[fd]

    def clear(self) -> None:
        self.jobs.clear()


class PipelinedAsynPool(AsynPool):  # type: ignore[misc]
    """Celery's AsynPool with jobs written ahead to busy children, least loaded first (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._busy_workers = _JobsPerProcess(PIPELINE_DEPTH)
        self._mark_worker_as_available = self._busy_workers.job_done

    def flush(self) -> None:
        """Celery's flush (the consumer closing: a warm shutdown, a lost connection) drops every job not started
        yet, as the broker would redeliver it. A job already written to a live child's pipe is not taken back,
        though: the child runs it anyway, and with the job dropped its result, outcome and ack would be thrown away
        and the message run again elsewhere. Those stay, and the pool's drain settles them as it settles the
        running ones; only jobs still waiting in the parent are dropped (and put back by the worker)."""
        written = {key: job for key, job in self._cache.items()
                   if not job._accepted and job._write_to is not None and job._write_to._is_alive()}
        for key in written:
            del self._cache[key]
        try:
            super().flush()
        finally:
            self._cache.update(written)

    def register_with_event_loop(self, hub: Any) -> None:
        quiet(hub)  # before Celery's handlers take the hub's methods (see meetingtasks.worker.hub)
        super().register_with_event_loop(hub)

    def _create_write_handlers(self, hub: Any, *args: Any, **kwargs: Any) -> Any:
        created = super()._create_write_handlers(hub, *args, **kwargs)
        schedule_writes: Callable[..., Any] = hub.consolidate_callback
        jobs = self._busy_workers.jobs

        def least_loaded_first(ready_fds: list[int], *rest: Any) -> Any:
            # Celery's writer takes the ready pipes in the order given (its round robin starts anew at each call).
            return schedule_writes(sorted(ready_fds, key=jobs.__getitem__), *rest)

        hub.consolidate_callback = least_loaded_first
        return created


class PreforkPool(TaskPool):  # type: ignore[misc]
    """``--pool prefork`` of a meetingtasks worker (see the module docstring)."""

    Pool = PipelinedAsynPool
    # Celery would hold each request back on a semaphore of one per process until a process is free; the consuming
    # channel already hands over no more than PIPELINE_DEPTH per process.
    uses_semaphore = False

    def _get_info(self) -> dict[str, Any]:
        """``celery inspect stats``: Celery's figures of the pool, and how many jobs went to a busy process."""
        info: dict[str, Any] = super()._get_info()
        busy = getattr(self._pool, "_busy_workers", None)
        if isinstance(busy, _JobsPerProcess):
            info["jobs-sent-ahead"] = busy.sent_ahead
            info["most-jobs-per-process"] = max(1, busy.most)
        return info
