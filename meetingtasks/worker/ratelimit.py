"""Global rate limits: at most ``rate_limit`` tasks of a type start per second, across all workers.

Unlike Celery's per-worker ``rate_limit``, the budget lives in Redis (``P rate:<type>``), as a GCRA
"theoretical arrival time": each task reserves the next free slot, ``1/rate`` seconds after the previous one.
A task whose slot is now runs at once; a later slot sends the task back through the delayed set, due at its
slot, marked so that it runs then without reserving again (no thundering herd, no slot counted twice). Its
status shows SCHEDULED with ``rate_limited_until`` meanwhile; it is never failed for being over budget.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import redis

from meetingtasks.core.message import encode_task_message
from meetingtasks.core.signing import signer_for
from meetingtasks.lua import LuaScript
from meetingtasks.store.status import Status

if TYPE_CHECKING:
    from meetingtasks.worker.task import PlatformTask

log = logging.getLogger(__name__)

#: Message header of a task that already holds a slot.
SLOT_HEADER = "mt_rate_slot"

#: Reserves the next slot of a type's rate budget; the ms to wait for it (lua/reserve_rate_slot.lua).
_RESERVE = LuaScript.load("reserve_rate_slot")


def interval_ms(rate_per_s: float) -> float:
    """Milliseconds between two slots of a type limited to ``rate_per_s`` tasks per second."""
    if rate_per_s <= 0:
        raise ValueError(f"rate limit must be > 0 tasks/s, got {rate_per_s}")
    return 1000.0 / rate_per_s


def reserve_slot(client: redis.Redis, key: str, rate_per_s: float, now_s: float | None = None) -> float:
    """Reserve the next slot of the budget at ``key``; returns seconds until it (0.0 = run now)."""
    now_ms = (time.time() if now_s is None else now_s) * 1000
    wait_ms = _RESERVE(client, [key], [repr(now_ms), repr(interval_ms(rate_per_s))])
    return max(0, int(wait_ms)) / 1000


def defer_over_rate_limit(task: PlatformTask, raw_payload: Any) -> bool:
    """In the worker, before a run: True if the task was sent back to wait for its slot (skip this run)."""
    rate = task.spec.rate_limit_per_s
    req = task.request
    if not rate or getattr(req, SLOT_HEADER, None):
        return False
    p = task.platform
    client = p.redis(task.spec.service)
    # Both writes go through durably(): a Redis refusal here is bookkeeping, never a task failure (nor an ack).
    key = p.keys.rate(task.spec.name)
    wait_s = task.durably("reserving a rate-limit slot", lambda: reserve_slot(client, key, rate))
    if wait_s <= 0:
        return False
    due_s = time.time() + wait_s
    headers = {k: getattr(req, k) for k in ("mt_priority", "mt_dispatched_at", "mt_first_failure_at")
               if getattr(req, k, None)}
    headers.update({SLOT_HEADER: due_s, "mt_enqueued_at": due_s})
    queue = task._queue()
    message = encode_task_message(task_id=req.id, task_name=task.spec.name, payload=raw_payload, queue=queue,
                                  retries=int(req.retries or 0), headers=headers, root_id=req.root_id,
                                  parent_id=req.parent_id, signer=signer_for(p.settings))
    attempt = int(req.retries or 0) + 1

    def defer() -> None:
        with client.pipeline(transaction=True) as pipe:  # all or nothing: a refused write leaves no half deferral
            p.delayed.schedule(pipe, task.spec.service, req.id, queue, message, due_s)
            p.status.transition(pipe, req.id, Status.SCHEDULED, attempt=attempt,
                                fields={**task._identity(), "rate_limited_until": repr(due_s)})
            pipe.execute()

    task.durably("deferring over the rate limit", defer)
    log.debug("task %s (%s) over its rate limit of %s/s; runs in %.3fs", req.id, task.spec.name, rate, wait_s)
    return True
