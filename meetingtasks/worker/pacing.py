"""How much a prefork or threads worker holds ahead of its pool: the reserve's size, and how many jobs a busy pool
process may have waiting in its pipe (see ``meetingtasks.worker.pool``).

Both come from how long tasks run, learnt from each task handed to the pool and acked:

* the reserve holds, per pool process, about ``solo_batch_ms`` worth of tasks (at least one, at most
  ``SOLO_BATCH_MAX``), refilled when down to a quarter: a reserved message waits about that long at most before it runs
  or is reconsidered for priority (a refill's messages of a higher priority go ahead of it);
* a busy process may be sent jobs ahead (up to the pool's own limit) only while every task in the pool is of a type
  whose runs averaged under half the budget per job sent ahead (a quarter with two), so that a job waits in a pipe
  about half a budget at most. A task of a type not seen yet, or of a slower one, stops
  jobs from being sent ahead until it has ended: a quick task never waits behind it in a pipe while another process
  is free. A task much slower than its type's average still holds up the (at most ``PIPELINE_DEPTH - 1``) jobs
  already behind it: the one delay the pipeline adds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

#: Weight of the newest run in the moving averages.
_NEWEST = 0.2


@dataclass(slots=True)
class _Handed:
    at: float  # monotonic time of the hand-over
    waited: float  # tasks per process it had to wait for, its own included
    task_type: str
    holds_up: bool  # of a type a job sent ahead must not wait behind


@dataclass
class PoolPacing:
    """One consuming channel's estimates (``processes``: the pool's processes or threads; ``pipeline``: the most
    jobs one process may hold, the running one included)."""

    processes: int
    pipeline: int
    batch_max: int
    task_s: float | None = None  # how long a task runs in the pool (moving average over all types)
    reserve: int = 1  # reserved messages per pool process
    depth: int = 1  # jobs a pool process may hold now, the running one included
    _type_s: dict[str, float] = field(default_factory=dict)
    _handed: dict[str, _Handed] = field(default_factory=dict)
    _holding_up: set[str] = field(default_factory=set)  # delivery tags in the pool that jobs must not wait behind

    def handed(self, tag: str, task_type: str, in_pool: int, budget_s: float) -> None:
        """A message goes to the pool, which holds ``in_pool`` others: with every process busy it waits in the
        least loaded one's pipe."""
        known = self._type_s.get(task_type)
        holds_up = known is None or self.pipeline <= 1 or known > budget_s / 2 / (self.pipeline - 1)
        self._handed[tag] = _Handed(time.monotonic(), 1 + in_pool // max(1, self.processes), task_type, holds_up)
        if holds_up:
            self._holding_up.add(tag)

    def ended(self, tag: str, budget_s: float) -> None:
        """The pool is done with ``tag`` (acked or handed back): learn from its run and size the reserve and the
        pipeline again."""
        self._holding_up.discard(tag)
        handed = self._handed.pop(tag, None)
        if handed is None:
            return
        run_s = (time.monotonic() - handed.at) / handed.waited
        self.task_s = run_s if self.task_s is None else (1 - _NEWEST) * self.task_s + _NEWEST * run_s
        known = self._type_s.get(handed.task_type)
        self._type_s[handed.task_type] = run_s if known is None else (1 - _NEWEST) * known + _NEWEST * run_s
        per_process = int(budget_s / self.task_s) if self.task_s > 0 else 2 * self.batch_max
        self.reserve = max(1, min(self.batch_max, per_process))
        self.depth = max(1, min(self.pipeline, 1 + per_process // 2))

    def pool_limit(self) -> int:
        """How many messages the pool may hold now."""
        return self.processes * (1 if self._holding_up else self.depth)
