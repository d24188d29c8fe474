"""The media service's once-scripts, called directly (``meetingtasks/services/lua/media_*.lua``)."""

from __future__ import annotations

import redis

from meetingtasks.services.operation import once_script
from meetingtasks.store.platform import Platform
from tests.lua.conftest import Change

STREAM_START = once_script("media_stream_start")
RECORDING_START = once_script("media_recording_start")
RECORDING_STOP = once_script("media_recording_stop")


def test_stream_start_lists_a_live_stream_on_its_meeting(platform: Platform, r: redis.Redis, change: Change) -> None:
    stream, media = platform.keys.stream("s-1"), platform.keys.meeting_media("m-1")
    args = ["s-1", "m-1", "u-1", "audio", "7.5"]
    assert change(STREAM_START, [stream, media], args) == {"started": True}
    assert r.hgetall(stream) == {b"meeting_id": b"m-1", b"user_id": b"u-1", b"kind": b"audio", b"state": b"live",
                                 b"started_at": b"7.5", b"chunks": b"0"}
    assert r.hget(media, "stream:s-1") == b"7.5"
    assert change(STREAM_START, [stream, media], args) == {"live": True}
    # A stopped stream (expiring) started again lives on.
    r.hset(stream, mapping={"state": "stopped", "chunks": "9"})
    r.expire(stream, 100)
    assert change(STREAM_START, [stream, media], [*args[:4], "8.0"]) == {"started": True}
    assert r.ttl(stream) == -1 and r.hmget(stream, "chunks", "started_at") == [b"0", b"8.0"]


def test_recording_start_allows_one_active_recording(platform: Platform, r: redis.Redis, change: Change) -> None:
    keys = platform.keys
    media = keys.meeting_media("m-1")
    assert change(RECORDING_START, [media, keys.recording("r-1")], ["r-1", "m-1", "3.0"]) == {"started": True}
    assert r.hgetall(keys.recording("r-1")) == {b"meeting_id": b"m-1", b"state": b"recording", b"started_at": b"3.0"}
    assert r.hget(media, "recording") == b"r-1"
    assert change(RECORDING_START, [media, keys.recording("r-2")], ["r-2", "m-1", "4.0"]) == {"busy": "r-1"}
    r.hdel(media, "recording")
    assert change(RECORDING_START, [media, keys.recording("r-1")], ["r-1", "m-1", "5.0"]) == {"refused": "exists"}
    assert not r.exists(keys.recording("r-2"))


def test_recording_stop_stops_the_active_recording_and_with_the_media_the_streams(
        platform: Platform, r: redis.Redis, change: Change) -> None:
    keys = platform.keys
    media = keys.meeting_media("m-1")

    def stop(recording_id: str, end_media: str, meeting_id: str = "m-1") -> object:
        return change(RECORDING_STOP, [media], [recording_id, keys.recording(""), "9.0", 600, end_media,
                                                keys.stream(""), meeting_id])

    assert stop("", "0") == {"recording": False, "streams": {}}  # none active: nothing to stop
    assert stop("r-9", "0") == {"refused": "unknown", "recording_id": "r-9"}
    r.hset(keys.recording("r-1"), mapping={"meeting_id": "m-1", "state": "recording", "started_at": "3.0"})
    r.hset(media, mapping={"recording": "r-1", "stream:s-1": "4.0", "other": "x"})
    r.hset(keys.stream("s-1"), mapping={"state": "live", "user_id": "u-1", "kind": "video"})
    assert stop("r-1", "0", meeting_id="m-2") == {"refused": "other_meeting", "recording_id": "r-1"}
    assert stop("", "0") == {"recording": {"recording_id": "r-1", "started_at": 3.0}, "streams": {}}
    assert r.hmget(keys.recording("r-1"), "state", "stopped_at") == [b"stopped", b"9.0"]
    assert 0 < r.ttl(keys.recording("r-1")) <= 600 and not r.hexists(media, "recording")
    assert r.hget(keys.stream("s-1"), "state") == b"live"  # the media goes on
    assert stop("r-1", "1") == {"recording": {"recording_id": "r-1", "already": True},
                                "streams": [{"stream_id": "s-1", "user_id": "u-1", "kind": "video"}]}
    assert r.hmget(keys.stream("s-1"), "state", "stopped_at") == [b"stopped", b"9.0"]
    assert 0 < r.ttl(keys.stream("s-1")) <= 600
    assert r.hgetall(media) == {b"other": b"x"}
