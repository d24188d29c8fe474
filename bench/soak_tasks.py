"""Task types of the soak (loaded with MEETINGTASKS_INCLUDE=bench.soak_tasks): one per service.

Each run is counted per task in ``soak:runs`` so the ledger can tell a task that ran twice. Handlers are
idempotent and say so: a task whose worker is killed mid-run runs again.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel

from meetingtasks.core.backoff import RetryPolicy
from meetingtasks.core.registry import task_type
from meetingtasks.services import SERVICES
from meetingtasks.store.platform import get_platform

RUNS_KEY = "soak:runs"
FAILED_ONCE_KEY = "soak:failed_once"


class SoakPayload(BaseModel):
    id: str
    fail: Literal["never", "once", "always"] = "never"
    work_ms: float = 0.0


class SoakFailure(Exception):
    """The failure a soak task was told to have."""


def _run(p: SoakPayload) -> str:
    client = get_platform().redis()
    client.hincrby(RUNS_KEY, p.id, 1)
    if p.work_ms:
        time.sleep(p.work_ms / 1000)
    if p.fail == "always":
        raise SoakFailure(f"{p.id} always fails")
    if p.fail == "once" and client.hsetnx(FAILED_ONCE_KEY, p.id, 1):
        raise SoakFailure(f"{p.id} fails once")
    return p.id


_POLICY = RetryPolicy(max_retries=2, base_s=0.2, max_s=1.0, jitter=True)

for _service in SERVICES:
    task_type(_service, f"soak_{_service}", payload=SoakPayload, retry_policy=_POLICY, idempotent=True)(_run)


# Events in the soak: `user.profile_updated` has no subscriber among the services, so the soak owns it.
from meetingtasks.events import Event  # noqa: E402
from meetingtasks.events.subscriptions import on_event  # noqa: E402

EVENT_CHANNEL, EVENT_TYPE = "user_events", "user.profile_updated"


@on_event(EVENT_CHANNEL, EVENT_TYPE, dispatch="soak_meeting")
def soak_from_event(event: Event) -> dict[str, str]:
    return {"id": str(event.payload["id"]), "fail": str(event.payload.get("fail", "never"))}
