"""The media service's state: streams (``Keys.stream``), recordings (``Keys.recording``) and, per meeting,
its active recording and live streams (``Keys.meeting_media``: fields ``recording`` and ``stream:<id>``).

Every change is a once-script (:mod:`meetingtasks.services.operation`). Stopped streams and recordings
expire after ``domain_retention_s``.
"""

from __future__ import annotations

from typing import Any

from meetingtasks.services.operation import Operation, once_script
from meetingtasks.services.settings import meeting_settings
from meetingtasks.services.user.store import as_list
from meetingtasks.store.platform import Platform

SERVICE = "media"

# KEYS[2] stream, [3] meeting media hash. ARGV[3] stream id, [4] meeting, [5] user, [6] kind, [7] now.
_STREAM = once_script("""
if redis.call('HGET', KEYS[2], 'state') == 'live' then return cjson.encode({live = true}) end
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[2], 'meeting_id', ARGV[4], 'user_id', ARGV[5], 'kind', ARGV[6], 'state', 'live',
           'started_at', ARGV[7], 'chunks', 0)
redis.call('HSET', KEYS[3], 'stream:' .. ARGV[3], ARGV[7])
return cjson.encode({started = true})
""")

# KEYS[2] meeting media hash, [3] recording. ARGV[3] recording id, [4] meeting, [5] now.
_RECORDING_START = once_script("""
local active = redis.call('HGET', KEYS[2], 'recording')
if active then return cjson.encode({busy = active}) end
if redis.call('EXISTS', KEYS[3]) == 1 then return cjson.encode({refused = 'exists'}) end
redis.call('HSET', KEYS[3], 'meeting_id', ARGV[4], 'state', 'recording', 'started_at', ARGV[5])
redis.call('HSET', KEYS[2], 'recording', ARGV[3])
return cjson.encode({started = true})
""")

# KEYS[2] meeting media hash. ARGV[3] recording id or '' (the active one), [4] recording key prefix, [5] now,
# [6] retention s, [7] '1': the meeting's media ends (live streams stop too), [8] stream key prefix, [9] meeting.
_RECORDING_STOP = once_script("""
local id = ARGV[3]
if id == '' then id = redis.call('HGET', KEYS[2], 'recording') or '' end
local rec = false
if id ~= '' then
  local rk = ARGV[4] .. id
  local state = redis.call('HGET', rk, 'state')
  if not state then return cjson.encode({refused = 'unknown', recording_id = id}) end
  if redis.call('HGET', rk, 'meeting_id') ~= ARGV[9] then
    return cjson.encode({refused = 'other_meeting', recording_id = id})
  end
  if state == 'recording' then
    redis.call('HSET', rk, 'state', 'stopped', 'stopped_at', ARGV[5])
    redis.call('EXPIRE', rk, ARGV[6])
    rec = {recording_id = id, started_at = tonumber(redis.call('HGET', rk, 'started_at'))}
  else
    rec = {recording_id = id, already = true}
  end
  if redis.call('HGET', KEYS[2], 'recording') == id then redis.call('HDEL', KEYS[2], 'recording') end
end
local streams = {}
if ARGV[7] == '1' then
  for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do
    if string.sub(f, 1, 7) == 'stream:' then
      local sid = string.sub(f, 8)
      local sk = ARGV[8] .. sid
      redis.call('HSET', sk, 'state', 'stopped', 'stopped_at', ARGV[5])
      redis.call('EXPIRE', sk, ARGV[6])
      redis.call('HDEL', KEYS[2], f)
      streams[#streams + 1] = {stream_id = sid, user_id = redis.call('HGET', sk, 'user_id'),
                               kind = redis.call('HGET', sk, 'kind')}
    end
  end
end
return cjson.encode({recording = rec, streams = streams})
""")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class MediaStore:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.keys = platform.keys
        self.redis = platform.redis(SERVICE)

    def start_stream(self, op: Operation, stream_id: str, meeting_id: str, user_id: str, kind: str,
                     now: float) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(_STREAM, "stream", [self.keys.stream(stream_id),
                                                            self.keys.meeting_media(meeting_id)],
                                        [stream_id, meeting_id, user_id, kind, repr(now)])
        return out

    def add_chunk(self, stream_id: str, audio_ref: str | None) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(self.keys.stream(stream_id), "chunks", 1)
            if audio_ref:
                pipe.hset(self.keys.stream(stream_id), "audio_ref", audio_ref)
            pipe.execute()

    def start_recording(self, op: Operation, meeting_id: str, recording_id: str, now: float) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(_RECORDING_START, "recording-start",
                                        [self.keys.meeting_media(meeting_id), self.keys.recording(recording_id)],
                                        [recording_id, meeting_id, repr(now)])
        return out

    def stop_recording(self, op: Operation, meeting_id: str, recording_id: str | None, now: float, *,
                       end_media: bool) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(
            _RECORDING_STOP, "recording-stop", [self.keys.meeting_media(meeting_id)],
            [recording_id or "", self.keys.recording(""), repr(now), meeting_settings(self.platform).domain_retention_s,
             "1" if end_media else "0", self.keys.stream(""), meeting_id])
        out["streams"] = as_list(out.get("streams"))
        return out

    def stream(self, stream_id: str) -> dict[str, str]:
        return {_text(k): _text(v) for k, v in self.redis.hgetall(self.keys.stream(stream_id)).items()}

    def recording(self, recording_id: str) -> dict[str, str]:
        return {_text(k): _text(v) for k, v in self.redis.hgetall(self.keys.recording(recording_id)).items()}

    def active_recording(self, meeting_id: str) -> str | None:
        value = self.redis.hget(self.keys.meeting_media(meeting_id), "recording")
        return None if value is None else _text(value)
