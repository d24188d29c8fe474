"""The ai service's state: the result of every AI task (``Keys.ai_result``, JSON, kept ``op_ttl_s``), so a
caller can read a result again by task id without keeping the status record."""

from __future__ import annotations

from typing import Any

import orjson

from meetingtasks.services.settings import meeting_settings
from meetingtasks.store.platform import Platform

SERVICE = "ai"


class AIStore:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.redis = platform.redis(SERVICE)

    def save(self, task_id: str, kind: str, result: dict[str, Any]) -> None:
        self.redis.set(self.platform.keys.ai_result(task_id), orjson.dumps({"kind": kind, **result}),
                       ex=meeting_settings(self.platform).op_ttl_s)

    def get(self, task_id: str) -> dict[str, Any] | None:
        raw = self.redis.get(self.platform.keys.ai_result(task_id))
        return None if raw is None else dict(orjson.loads(raw))
