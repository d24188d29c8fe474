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

_STREAM = once_script("media_stream_start")
_RECORDING_START = once_script("media_recording_start")
_RECORDING_STOP = once_script("media_recording_stop")


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
