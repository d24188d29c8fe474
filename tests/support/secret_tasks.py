"""A test type with a field marked secret on its model (``Annotated[str, Secret]``) and a secret result; workers
load it with ``MEETINGTASKS_INCLUDE=tests.support.tasks,tests.support.secret_tasks``."""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Any

from pydantic import BaseModel, SecretStr

from meetingtasks.core.registry import task_type
from meetingtasks.core.secret_fields import Secret
from meetingtasks.store.platform import get_platform

INCLUDE = "tests.support.tasks,tests.support.secret_tasks"


class SecretHold(BaseModel):
    tag: str
    api_key: Annotated[str, Secret]


@task_type("ai", "t_secret_hold", payload=SecretHold)
def t_secret_hold(p: SecretHold) -> dict[str, Any]:
    """Runs until ``test:release:<tag>`` is set (at most 30 s); leaves the SHA-256 of the key it was given (not the
    key) in ``test:secret-seen:<tag>``; returns the key as a secret."""
    r = get_platform().redis()
    r.set(f"test:secret-seen:{p.tag}", hashlib.sha256(p.api_key.encode()).hexdigest())
    deadline = time.monotonic() + 30
    while not r.exists(f"test:release:{p.tag}") and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"tag": p.tag, "echo": SecretStr(p.api_key)}
