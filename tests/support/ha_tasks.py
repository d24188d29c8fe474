"""Task types and a subscription for the failover test; workers and the bridge load them with MEETINGTASKS_INCLUDE.

Each run appends ``<tag> <epoch seconds>`` to a ledger file: the record of what ran lives outside Redis, which is
what fails over.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pydantic import BaseModel

from meetingtasks.core.registry import task_type
from meetingtasks.events import Event, on_event

INCLUDE = "tests.support.ha_tasks"


class Entry(BaseModel):
    tag: str
    ledger: str


def _record(p: Entry) -> str:
    fd = os.open(p.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{p.tag} {time.time():.3f}\n".encode())  # one write() of a short line: appends stay whole
    finally:
        os.close(fd)
    return p.tag


@task_type("ai", "t_ha_ai", payload=Entry)
def t_ha_ai(p: Entry) -> str:
    return _record(p)


@task_type("media", "t_ha_media", payload=Entry)
def t_ha_media(p: Entry) -> str:
    return _record(p)


class Hold(Entry):
    seconds: float = 60.0


@task_type("ai", "t_ha_hold", payload=Hold, timeout=120)
def t_ha_hold(p: Hold) -> str:
    """Records its start, then sleeps without checking its cancel flag: only a terminate stops it early."""
    _record(p)
    time.sleep(p.seconds)
    return p.tag


@on_event("user_events", "user.logged_in", dispatch="t_ha_ai")
def ledger_entry_of(event: Event) -> dict[str, Any] | None:
    payload = event.payload
    if "ha_tag" not in payload:
        return None
    return {"tag": payload["ha_tag"], "ledger": payload["ledger"]}
