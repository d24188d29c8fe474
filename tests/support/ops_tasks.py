"""Task types and a subscription used by the operations tests (logs, tracing).

Loaded into workers and the bridge with MEETINGTASKS_INCLUDE=tests.support.tasks,tests.support.ops_tasks.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

from meetingtasks.core.registry import task_type
from meetingtasks.core.tracing import current_trace_id
from meetingtasks.events import Event, on_event, publish_event
from meetingtasks.store.platform import get_platform

log = logging.getLogger("tests.ops")


class Tagged(BaseModel):
    tag: str


@task_type("ai", "t_log", payload=Tagged)
def t_log(p: Tagged) -> str:
    log.info("handling %s", p.tag)
    return p.tag


@task_type("ai", "t_traced_start", payload=Tagged)
def t_traced_start(p: Tagged) -> str:
    """First hop of the traced chain: publishes an event the bridge turns into ``t_traced_end``."""
    publish_event("ai_events", "emotion_detection.completed", {"ops_tag": p.tag}, source="tests")
    return p.tag


@task_type("ai", "t_traced_end", payload=Tagged)
def t_traced_end(p: Tagged) -> str:
    get_platform().redis().rpush(f"test:trace-end:{p.tag}", current_trace_id() or "-")
    return p.tag


@on_event("ai_events", "emotion_detection.completed", dispatch="t_traced_end")
def traced_end_for(event: Event) -> dict[str, Any] | None:
    tag = event.payload.get("ops_tag") if isinstance(event.payload, dict) else None
    return {"tag": tag} if tag else None
