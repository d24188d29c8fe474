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

# KEYS[2] meeting. ARGV[3..] field/value pairs.
_CREATE = once_script("""
if redis.call('EXISTS', KEYS[2]) == 1 then return cjson.encode({taken = true}) end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
return cjson.encode({created = true})
""")

# KEYS[2] meeting, KEYS[3] live zset. ARGV[3] now, ARGV[4] meeting id.
_START = once_script("""
local state = redis.call('HGET', KEYS[2], 'state')
if not state then return cjson.encode({refused = 'unknown'}) end
if state ~= 'scheduled' then return cjson.encode({state = state}) end
local ends = tonumber(ARGV[3]) + tonumber(redis.call('HGET', KEYS[2], 'max_duration_s'))
redis.call('HSET', KEYS[2], 'state', 'live', 'started_at', ARGV[3], 'ends_at', string.format('%.3f', ends))
redis.call('ZADD', KEYS[3], ends, ARGV[4])
return cjson.encode({started = true, ends_at = ends})
""")

# KEYS[2] meeting, [3] live zset, [4] participants, [5] left, [6] ai, [7] notices. ARGV[3] now, [4] reason,
# [5] ended_by, [6] meeting id, [7] retention s. Everyone still in the meeting leaves with it.
_END = once_script("""
local state = redis.call('HGET', KEYS[2], 'state')
if not state then return cjson.encode({refused = 'unknown'}) end
if state == 'ended' then
  return cjson.encode({already = true, reason = redis.call('HGET', KEYS[2], 'reason')})
end
local participants = redis.call('HKEYS', KEYS[4])
for _, user in ipairs(participants) do
  redis.call('HSET', KEYS[5], user, cjson.encode({left_at = tonumber(ARGV[3]), reason = 'meeting ended'}))
end
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[2], 'state', 'ended', 'ended_at', ARGV[3], 'reason', ARGV[4], 'ended_by', ARGV[5],
           'previous_state', state)
redis.call('ZREM', KEYS[3], ARGV[6])
for _, k in ipairs({KEYS[2], KEYS[5], KEYS[6], KEYS[7]}) do redis.call('EXPIRE', k, ARGV[7]) end
return cjson.encode({ended = true, previous = state, participants = participants,
                     started_at = redis.call('HGET', KEYS[2], 'started_at')})
""")

# KEYS[2] meeting, [3] participants, [4] left. ARGV[3] user id, [4] entry JSON, [5] max participants.
_JOIN = once_script("""
local state = redis.call('HGET', KEYS[2], 'state')
if not state then return cjson.encode({refused = 'unknown'}) end
if state ~= 'live' then return cjson.encode({refused = state}) end
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then
  return cjson.encode({already = true, count = redis.call('HLEN', KEYS[3])})
end
if redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[5]) then return cjson.encode({refused = 'full'}) end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
redis.call('HDEL', KEYS[4], ARGV[3])
return cjson.encode({joined = true, count = redis.call('HLEN', KEYS[3])})
""")

# KEYS[2] meeting, [3] participants, [4] left. ARGV[3] user id, [4] entry JSON.
_LEAVE = once_script("""
local state = redis.call('HGET', KEYS[2], 'state')
if not state then return cjson.encode({refused = 'unknown'}) end
if state == 'ended' then return cjson.encode({refused = 'ended'}) end
if redis.call('HDEL', KEYS[3], ARGV[3]) == 0 then return cjson.encode({refused = 'not_in'}) end
redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
return cjson.encode({left = true, count = redis.call('HLEN', KEYS[3])})
""")

# KEYS[2] meeting, [3] ai hash. ARGV[3] kind, [4] result JSON. Kept as long as the meeting is.
_STORE_AI = once_script("""
if redis.call('EXISTS', KEYS[2]) == 0 then return cjson.encode({refused = 'unknown'}) end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
local ttl = redis.call('TTL', KEYS[2])
if ttl > 0 then redis.call('EXPIRE', KEYS[3], ttl) end
return cjson.encode({stored = true})
""")


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
