"""The meeting service's state: meetings and their lifecycle (``scheduled`` -> ``live`` -> ``ended``),
participants, the AI results kept on a meeting, and the participants' pending notices.

Keys (see :mod:`meetingtasks.store.keys`): ``meeting:<id>`` (hash), ``:participants`` and ``:left`` (user id ->
JSON), ``:ai`` (kind -> JSON), ``:notices`` (``<user>|<kind>`` -> task id), and ``meetings:live``, the live
meetings scored by their automatic end, which the beat job sweeps. Every change is a once-script
(:mod:`meetingtasks.services.operation`). An ended meeting's keys expire after ``domain_retention_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from meetingtasks.services.operation import Operation, once_script
from meetingtasks.services.settings import meeting_settings
from meetingtasks.services.user.store import as_list
from meetingtasks.store.platform import Platform

SERVICE = "meeting"

_CREATE = once_script("meeting_create")
_START = once_script("meeting_start")
_END = once_script("meeting_end")
_JOIN = once_script("meeting_join")
_LEAVE = once_script("meeting_leave")
_STORE_AI = once_script("meeting_store_ai")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def notice_field(user_id: str, kind: str) -> str:
    return f"{user_id}|{kind}"


@dataclass(frozen=True)
class Meeting:
    id: str
    title: str
    host_id: str
    state: str
    record: bool
    max_duration_s: int
    start_at: float | None
    started_at: float | None
    ends_at: float | None
    ended_at: float | None
    reason: str | None
    auto_end_task: str | None

    def public(self) -> dict[str, Any]:
        return {"meeting_id": self.id, "title": self.title, "host_id": self.host_id, "state": self.state,
                "start_at": self.start_at, "started_at": self.started_at, "ends_at": self.ends_at,
                "ended_at": self.ended_at}


def _float(fields: dict[str, str], name: str) -> float | None:
    value = fields.get(name)
    return float(value) if value else None


class MeetingStore:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.keys = platform.keys
        self.redis = platform.redis(SERVICE)

    def _all(self, meeting_id: str) -> list[str]:
        k = self.keys
        return [k.meeting(meeting_id), k.meetings_live, k.meeting_participants(meeting_id),
                k.meeting_left(meeting_id), k.meeting_ai(meeting_id), k.meeting_notices(meeting_id)]

    # --- lifecycle --------------------------------------------------------------------------------------------
    def create(self, op: Operation, meeting_id: str, fields: dict[str, str]) -> dict[str, Any]:
        flat = [x for pair in fields.items() for x in pair]
        out: dict[str, Any] = op.mutate(_CREATE, "create", [self.keys.meeting(meeting_id)], flat)
        return out

    def start(self, op: Operation, meeting_id: str, now: float) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(_START, "start", [self.keys.meeting(meeting_id), self.keys.meetings_live],
                                        [repr(now), meeting_id])
        return out

    def end(self, op: Operation, meeting_id: str, *, now: float, reason: str, ended_by: str | None,
            name: str = "end") -> dict[str, Any]:
        keys = self._all(meeting_id)
        out: dict[str, Any] = op.mutate(
            _END, name, [keys[0], keys[1], keys[2], keys[3], keys[4], keys[5]],
            [repr(now), reason, ended_by or "", meeting_id, meeting_settings(self.platform).domain_retention_s])
        out["participants"] = as_list(out.get("participants"))
        return out

    def set_field(self, meeting_id: str, name: str, value: str) -> None:
        self.redis.hset(self.keys.meeting(meeting_id), name, value)

    def get(self, meeting_id: str) -> Meeting | None:
        raw = self.redis.hgetall(self.keys.meeting(meeting_id))
        if not raw:
            return None
        f = {_text(k): _text(v) for k, v in raw.items()}
        return Meeting(id=meeting_id, title=f.get("title", ""), host_id=f.get("host_id", ""),
                       state=f.get("state", "scheduled"), record=f.get("record", "1") == "1",
                       max_duration_s=int(f.get("max_duration_s", "0")), start_at=_float(f, "start_at"),
                       started_at=_float(f, "started_at"), ends_at=_float(f, "ends_at"),
                       ended_at=_float(f, "ended_at"), reason=f.get("reason") or None,
                       auto_end_task=f.get("auto_end_task") or None)

    def overdue(self, now: float, limit: int) -> list[str]:
        """Live meetings whose automatic end has passed."""
        ids = self.redis.zrangebyscore(self.keys.meetings_live, "-inf", now, start=0, num=limit)
        return [_text(i) for i in ids]

    # --- participants -----------------------------------------------------------------------------------------
    def join(self, op: Operation, meeting_id: str, user_id: str, entry: dict[str, Any]) -> dict[str, Any]:
        keys = self._all(meeting_id)
        out: dict[str, Any] = op.mutate(_JOIN, "join", [keys[0], keys[2], keys[3]],
                                        [user_id, orjson.dumps(entry),
                                         meeting_settings(self.platform).meeting_max_participants])
        return out

    def leave(self, op: Operation, meeting_id: str, user_id: str, entry: dict[str, Any]) -> dict[str, Any]:
        keys = self._all(meeting_id)
        out: dict[str, Any] = op.mutate(_LEAVE, "leave", [keys[0], keys[2], keys[3]], [user_id, orjson.dumps(entry)])
        return out

    def participants(self, meeting_id: str) -> dict[str, dict[str, Any]]:
        raw = self.redis.hgetall(self.keys.meeting_participants(meeting_id))
        return {_text(k): orjson.loads(v) for k, v in raw.items()}

    # --- AI results and notices -------------------------------------------------------------------------------
    def store_ai(self, op: Operation, meeting_id: str, kind: str, result: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(_STORE_AI, "store-ai", [self.keys.meeting(meeting_id),
                                                               self.keys.meeting_ai(meeting_id)],
                                        [kind, orjson.dumps(result)])
        return out

    def ai_result(self, meeting_id: str, kind: str) -> dict[str, Any] | None:
        raw = self.redis.hget(self.keys.meeting_ai(meeting_id), kind)
        return None if raw is None else dict(orjson.loads(raw))

    def ai_results(self, meeting_id: str) -> dict[str, Any]:
        raw = self.redis.hgetall(self.keys.meeting_ai(meeting_id))
        return {_text(k): orjson.loads(v) for k, v in raw.items()}

    def set_notice(self, meeting_id: str, user_id: str, kind: str, task_id: str) -> None:
        self.redis.hset(self.keys.meeting_notices(meeting_id), notice_field(user_id, kind), task_id)

    def notices(self, meeting_id: str, kind: str | None = None) -> dict[str, str]:
        """``<user>|<kind>`` -> pending notice task id (of ``kind`` only, when given)."""
        raw = self.redis.hgetall(self.keys.meeting_notices(meeting_id))
        out = {_text(k): _text(v) for k, v in raw.items()}
        return {k: v for k, v in out.items() if kind is None or k.endswith("|" + kind)}

    def drop_notices(self, meeting_id: str, fields: list[str]) -> None:
        if fields:
            self.redis.hdel(self.keys.meeting_notices(meeting_id), *fields)
