"""Task types and subscriptions used only by the event tests (bridges and workers load this module).

Every test subscription listens to event types that no service subscribes to (``user.logged_in``,
``user.registered``, ``user.profile_updated``), so the built-in table never interferes. Tasks record what
ran under ``test:event:*``; subscriptions that must fail count their attempts in Redis.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from meetingtasks.core.priority import Priority
from meetingtasks.core.registry import task_type
from meetingtasks.events import Event, on_event
from meetingtasks.store.platform import get_platform


class Probe(BaseModel):
    event_id: str
    n: int = 0


@task_type("ai", "t_event_a", payload=Probe, priority=Priority.NORMAL)
def t_event_a(p: Probe) -> dict[str, Any]:
    get_platform().redis().rpush("test:event:ran", f"a|{p.event_id}")
    return {"event_id": p.event_id}


@task_type("user", "t_event_b", payload=Probe, priority=Priority.NORMAL)
def t_event_b(p: Probe) -> dict[str, Any]:
    get_platform().redis().rpush("test:event:ran", f"b|{p.event_id}")
    return {"event_id": p.event_id}


# --- user.logged_in: a trigger set of two tasks per event -------------------------------------------------------
@on_event("user_events", "user.logged_in", dispatch="t_event_a")
def probe_a(event: Event) -> dict[str, Any]:
    if event.payload.get("sleep_s"):
        time.sleep(float(event.payload["sleep_s"]))  # keeps a bridge busy mid-batch for the kill test
    return {"event_id": event.id, "n": event.payload.get("n", 0)}


@on_event("user_events", "user.logged_in", dispatch="t_event_b")
def probe_b(event: Event) -> dict[str, Any]:
    return {"event_id": event.id, "n": event.payload.get("n", 0)}


# --- user.registered: fails ``fail_times`` times (counted in Redis), then triggers -------------------------------
@on_event("user_events", "user.registered", dispatch="t_event_a")
def flaky(event: Event) -> dict[str, Any]:
    runs = get_platform().redis().incr(f"test:event:flaky:{event.id}")
    if runs <= int(event.payload.get("fail_times", 0)):
        raise ConnectionError(f"flaky subscription, run {runs}")
    return {"event_id": event.id}


# --- user.profile_updated: "mode" picks a failure the bridge must dead-letter -------------------------------------
@on_event("user_events", "user.profile_updated", dispatch="t_event_a")
def broken(event: Event) -> dict[str, Any] | None:
    get_platform().redis().incr(f"test:event:broken:{event.id}")
    mode = event.payload.get("mode")
    if mode == "raise":
        raise RuntimeError("the subscription is broken")
    if mode == "invalid":
        return {"n": "not a number"}  # no event_id, n not an int: the payload model refuses it
    return None
