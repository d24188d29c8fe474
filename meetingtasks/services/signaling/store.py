"""The signaling service's state: sessions (``Keys.signal``) with their offer, answer and state (``open``,
``offered``, ``connected``, ``closed``), their ICE candidates (``Keys.signal_ice``), and the open sessions
scored by their last sign of life (``Keys.signals_alive``), which the beat job sweeps.

Every change is a once-script (:mod:`meetingtasks.services.operation`). A closed session's keys expire
after ``domain_retention_s``.
"""

from __future__ import annotations

from typing import Any

from meetingtasks.services.operation import Operation, once_script
from meetingtasks.services.settings import meeting_settings
from meetingtasks.services.user.store import as_list
from meetingtasks.store.platform import Platform

SERVICE = "signaling"

# KEYS[2] session, [3] ice, [4] alive. ARGV[3] session id, [4] user, [5] meeting or '', [6] now.
_OPEN = once_script("""
local state = redis.call('HGET', KEYS[2], 'state')
if state and state ~= 'closed' then
  redis.call('HSET', KEYS[2], 'last_seen', ARGV[6])
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[3])
  return cjson.encode({already = true, state = state})
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[2], 'user_id', ARGV[4], 'meeting_id', ARGV[5], 'state', 'open', 'opened_at', ARGV[6],
           'last_seen', ARGV[6])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[3])
return cjson.encode({opened = true})
""")

# Only a party of a session (its user or its peer) may keep it alive, close it or offer on it again: over the
# gateway the user is the token's subject, so a client cannot act on another user's session.
_PARTY = """
local function mt_party(session_key, user)
  return user == redis.call('HGET', session_key, 'user_id') or user == redis.call('HGET', session_key, 'peer')
end
"""

# KEYS[2] session, [4] alive. ARGV[3] session id, [4] user, [6] now.
_HEARTBEAT = once_script(_PARTY + """
local state = redis.call('HGET', KEYS[2], 'state')
if not state then return cjson.encode({refused = 'unknown'}) end
if state == 'closed' then return cjson.encode({refused = 'closed'}) end
if not mt_party(KEYS[2], ARGV[4]) then return cjson.encode({refused = 'not_party'}) end
redis.call('HSET', KEYS[2], 'last_seen', ARGV[6])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[3])
return cjson.encode({alive = true, state = state})
""")

# KEYS[2] session, [3] ice, [4] alive. ARGV[3] session id, [4] user, [5] reason, [6] now, [7] retention s.
_CLOSE = once_script(_PARTY + """
local state = redis.call('HGET', KEYS[2], 'state')
if not state then return cjson.encode({refused = 'unknown'}) end
if state == 'closed' then return cjson.encode({already = true}) end
if not mt_party(KEYS[2], ARGV[4]) then return cjson.encode({refused = 'not_party'}) end
redis.call('HSET', KEYS[2], 'state', 'closed', 'closed_at', ARGV[6], 'reason', ARGV[5])
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[7])
redis.call('EXPIRE', KEYS[3], ARGV[7])
return cjson.encode({closed = true, meeting_id = redis.call('HGET', KEYS[2], 'meeting_id'),
                     user_id = redis.call('HGET', KEYS[2], 'user_id')})
""")

# KEYS[2] session, [4] alive. ARGV[3] session id, [4] from, [5] to, [6] sdp, [7] meeting or '', [8] now.
# A session not opened yet is opened by its offer; a connected one may renegotiate.
_OFFER = once_script(_PARTY + """
local state = redis.call('HGET', KEYS[2], 'state')
if state == 'closed' then return cjson.encode({refused = 'closed'}) end
if state and not mt_party(KEYS[2], ARGV[4]) then return cjson.encode({refused = 'not_party'}) end
if not state then
  redis.call('HSET', KEYS[2], 'user_id', ARGV[4], 'opened_at', ARGV[8])
end
if ARGV[7] ~= '' and (redis.call('HGET', KEYS[2], 'meeting_id') or '') == '' then
  redis.call('HSET', KEYS[2], 'meeting_id', ARGV[7])
end
redis.call('HSET', KEYS[2], 'state', 'offered', 'offer', ARGV[6], 'offer_from', ARGV[4], 'offer_to', ARGV[5],
           'peer', ARGV[5], 'last_seen', ARGV[8])
redis.call('HDEL', KEYS[2], 'answer', 'answer_from')
redis.call('ZADD', KEYS[4], ARGV[8], ARGV[3])
return cjson.encode({offered = true, meeting_id = redis.call('HGET', KEYS[2], 'meeting_id') or ''})
""")

# KEYS[2] session, [4] alive. ARGV[3] session id, [4] from, [5] to, [6] sdp, [8] now.
_ANSWER = once_script("""
local state = redis.call('HGET', KEYS[2], 'state')
if not state then return cjson.encode({refused = 'unknown'}) end
if state == 'closed' then return cjson.encode({refused = 'closed'}) end
if state ~= 'offered' then return cjson.encode({refused = 'no_offer', state = state}) end
local offer_from = redis.call('HGET', KEYS[2], 'offer_from')
if offer_from ~= ARGV[5] or redis.call('HGET', KEYS[2], 'offer_to') ~= ARGV[4] then
  return cjson.encode({refused = 'mismatch', offer_from = offer_from})
end
redis.call('HSET', KEYS[2], 'state', 'connected', 'answer', ARGV[6], 'answer_from', ARGV[4], 'last_seen', ARGV[8])
redis.call('ZADD', KEYS[4], ARGV[8], ARGV[3])
return cjson.encode({connected = true, meeting_id = redis.call('HGET', KEYS[2], 'meeting_id') or '',
                     offer_from = offer_from})
""")

# KEYS[2] session, [3] ice, [4] alive. ARGV[3] session id, [4] from, [5] candidate, [6] entry JSON, [7] now.
_ICE = once_script("""
local state = redis.call('HGET', KEYS[2], 'state')
if not state then return cjson.encode({refused = 'unknown'}) end
if state == 'closed' then return cjson.encode({refused = 'closed'}) end
local from = ARGV[4]
if from ~= redis.call('HGET', KEYS[2], 'user_id') and from ~= redis.call('HGET', KEYS[2], 'peer') then
  return cjson.encode({refused = 'not_party'})
end
redis.call('HSET', KEYS[2], 'last_seen', ARGV[7])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[3])
if redis.call('HSETNX', KEYS[3], ARGV[5], ARGV[6]) == 0 then return cjson.encode({duplicate = true}) end
return cjson.encode({added = true, meeting_id = redis.call('HGET', KEYS[2], 'meeting_id') or ''})
""")

# KEYS[2] alive. ARGV[3] silent since (s), [4] limit, [5] session key prefix, [6] ice key suffix, [7] now,
# [8] retention s. Closes the silent sessions; returns them.
_CLOSE_SILENT = once_script("""
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
local closed = {}
for _, id in ipairs(ids) do
  local sk = ARGV[5] .. id
  redis.call('ZREM', KEYS[2], id)
  local state = redis.call('HGET', sk, 'state')
  if state and state ~= 'closed' then
    redis.call('HSET', sk, 'state', 'closed', 'closed_at', ARGV[7], 'reason', 'timeout')
    redis.call('EXPIRE', sk, ARGV[8])
    redis.call('EXPIRE', sk .. ARGV[6], ARGV[8])
    closed[#closed + 1] = {session_id = id, meeting_id = redis.call('HGET', sk, 'meeting_id') or '',
                           user_id = redis.call('HGET', sk, 'user_id') or ''}
  end
end
return cjson.encode({closed = closed})
""")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SignalingStore:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.keys = platform.keys
        self.redis = platform.redis(SERVICE)

    def _keys(self, session_id: str) -> list[str]:
        return [self.keys.signal(session_id), self.keys.signal_ice(session_id), self.keys.signals_alive]

    def open(self, op: Operation, session_id: str, user_id: str, meeting_id: str | None, now: float) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(_OPEN, "open", self._keys(session_id),
                                        [session_id, user_id, meeting_id or "", repr(now)])
        return out

    def heartbeat(self, op: Operation, session_id: str, user_id: str, now: float) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(_HEARTBEAT, "heartbeat", self._keys(session_id),
                                        [session_id, user_id, "", repr(now)])
        return out

    def close(self, op: Operation, session_id: str, user_id: str, reason: str, now: float) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(_CLOSE, "close", self._keys(session_id),
                                        [session_id, user_id, reason, repr(now),
                                         meeting_settings(self.platform).domain_retention_s])
        return out

    def offer(self, op: Operation, session_id: str, from_user: str, to_user: str, sdp: str,
              meeting_id: str | None, now: float) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(_OFFER, "offer", self._keys(session_id),
                                        [session_id, from_user, to_user, sdp, meeting_id or "", repr(now)])
        return out

    def answer(self, op: Operation, session_id: str, from_user: str, to_user: str, sdp: str,
               now: float) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(_ANSWER, "answer", self._keys(session_id),
                                        [session_id, from_user, to_user, sdp, "", repr(now)])
        return out

    def add_candidate(self, op: Operation, session_id: str, from_user: str, candidate: str, entry: str,
                      now: float) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(_ICE, "ice", self._keys(session_id),
                                        [session_id, from_user, candidate, entry, repr(now)])
        return out

    def close_silent(self, op: Operation, *, silent_since: float, limit: int, now: float) -> list[dict[str, Any]]:
        out = op.mutate(_CLOSE_SILENT, "close-silent", [self.keys.signals_alive],
                        [repr(silent_since), limit, self.keys.signal(""), self._ice_suffix(), repr(now),
                         meeting_settings(self.platform).domain_retention_s])
        return as_list(out.get("closed"))

    def _ice_suffix(self) -> str:
        """What ``Keys.signal_ice`` appends to ``Keys.signal``, for the sweep script that builds both."""
        return self.keys.signal_ice("x")[len(self.keys.signal("x")):]

    def session(self, session_id: str) -> dict[str, str]:
        return {_text(k): _text(v) for k, v in self.redis.hgetall(self.keys.signal(session_id)).items()}

    def candidates(self, session_id: str) -> dict[str, str]:
        return {_text(k): _text(v) for k, v in self.redis.hgetall(self.keys.signal_ice(session_id)).items()}
