"""The meeting service's once-scripts, called directly (``meetingtasks/services/lua/meeting_*.lua``)."""

from __future__ import annotations

import orjson
import pytest
import redis

from meetingtasks.services.operation import once_script
from meetingtasks.store.platform import Platform
from tests.lua.conftest import Change

CREATE = once_script("meeting_create")
START = once_script("meeting_start")
END = once_script("meeting_end")
JOIN = once_script("meeting_join")
LEAVE = once_script("meeting_leave")
STORE_AI = once_script("meeting_store_ai")


class Meeting:
    """The keys of meeting ``m-1`` in the order the scripts take them."""

    def __init__(self, platform: Platform) -> None:
        k = platform.keys
        self.hash, self.live = k.meeting("m-1"), k.meetings_live
        self.participants, self.left = k.meeting_participants("m-1"), k.meeting_left("m-1")
        self.ai, self.notices = k.meeting_ai("m-1"), k.meeting_notices("m-1")


@pytest.fixture
def m(platform: Platform) -> Meeting:
    return Meeting(platform)


def test_create_refuses_an_existing_meeting(m: Meeting, r: redis.Redis, change: Change) -> None:
    assert change(CREATE, [m.hash], ["title", "Standup", "state", "scheduled"]) == {"created": True}
    assert r.hgetall(m.hash) == {b"title": b"Standup", b"state": b"scheduled"}
    assert change(CREATE, [m.hash], ["title", "Other"]) == {"taken": True}
    assert r.hget(m.hash, "title") == b"Standup"


def test_start_sets_a_scheduled_meeting_live_until_its_end(m: Meeting, r: redis.Redis, change: Change) -> None:
    assert change(START, [m.hash, m.live], ["100.5", "m-1"]) == {"refused": "unknown"}
    r.hset(m.hash, mapping={"state": "scheduled", "max_duration_s": "60"})
    assert change(START, [m.hash, m.live], ["100.5", "m-1"]) == {"started": True, "ends_at": 160.5}
    assert r.hmget(m.hash, "state", "started_at", "ends_at") == [b"live", b"100.5", b"160.500"]
    assert r.zscore(m.live, "m-1") == 160.5
    assert change(START, [m.hash, m.live], ["200", "m-1"]) == {"state": "live"}


def test_end_takes_everyone_out_and_lets_the_meeting_expire(m: Meeting, r: redis.Redis, change: Change) -> None:
    keys = [m.hash, m.live, m.participants, m.left, m.ai, m.notices]
    assert change(END, keys, ["9.0", "host", "u-1", "m-1", 3600]) == {"refused": "unknown"}
    r.hset(m.hash, mapping={"state": "live", "started_at": "5.0"})
    r.zadd(m.live, {"m-1": 65})
    r.hset(m.participants, mapping={"u-1": "{}", "u-2": "{}"})
    r.hset(m.ai, "summary", "{}")
    r.hset(m.notices, "u-1|reminder", "t-9")
    out = change(END, keys, ["9.0", "host", "u-1", "m-1", 3600])
    assert sorted(out.pop("participants")) == ["u-1", "u-2"]
    assert out == {"ended": True, "previous": "live", "started_at": "5.0"}
    assert {k: orjson.loads(v) for k, v in r.hgetall(m.left).items()} == {
        b"u-1": {"left_at": 9.0, "reason": "meeting ended"}, b"u-2": {"left_at": 9.0, "reason": "meeting ended"}}
    assert not r.exists(m.participants) and r.zscore(m.live, "m-1") is None
    assert r.hmget(m.hash, "state", "ended_at", "reason", "ended_by", "previous_state") == [
        b"ended", b"9.0", b"host", b"u-1", b"live"]
    assert all(0 < r.ttl(key) <= 3600 for key in (m.hash, m.left, m.ai, m.notices))
    assert change(END, keys, ["10.0", "again", "", "m-1", 3600]) == {"already": True, "reason": "host"}


def test_join_admits_to_a_live_meeting_with_room(m: Meeting, r: redis.Redis, change: Change) -> None:
    keys = [m.hash, m.participants, m.left]
    assert change(JOIN, keys, ["u-1", "{}", 2]) == {"refused": "unknown"}
    r.hset(m.hash, "state", "scheduled")
    assert change(JOIN, keys, ["u-1", "{}", 2]) == {"refused": "scheduled"}
    r.hset(m.hash, "state", "live")
    r.hset(m.left, "u-1", "{}")
    assert change(JOIN, keys, ["u-1", '{"joined_at":1}', 2]) == {"joined": True, "count": 1}
    assert r.hget(m.participants, "u-1") == b'{"joined_at":1}' and not r.hexists(m.left, "u-1")
    assert change(JOIN, keys, ["u-1", "{}", 2]) == {"already": True, "count": 1}
    assert change(JOIN, keys, ["u-2", "{}", 2]) == {"joined": True, "count": 2}
    assert change(JOIN, keys, ["u-3", "{}", 2]) == {"refused": "full"}
    assert r.hlen(m.participants) == 2


def test_leave_moves_a_participant_to_the_left(m: Meeting, r: redis.Redis, change: Change) -> None:
    keys = [m.hash, m.participants, m.left]
    assert change(LEAVE, keys, ["u-1", "{}"]) == {"refused": "unknown"}
    r.hset(m.hash, "state", "live")
    assert change(LEAVE, keys, ["u-1", "{}"]) == {"refused": "not_in"}
    r.hset(m.participants, mapping={"u-1": "{}", "u-2": "{}"})
    assert change(LEAVE, keys, ["u-1", '{"left_at":3}']) == {"left": True, "count": 1}
    assert r.hget(m.left, "u-1") == b'{"left_at":3}' and not r.hexists(m.participants, "u-1")
    r.hset(m.hash, "state", "ended")
    assert change(LEAVE, keys, ["u-2", "{}"]) == {"refused": "ended"}
    assert r.hexists(m.participants, "u-2")


def test_store_ai_keeps_a_result_as_long_as_the_meeting(m: Meeting, r: redis.Redis, change: Change) -> None:
    assert change(STORE_AI, [m.hash, m.ai], ["summary", '{"text":"x"}']) == {"refused": "unknown"}
    r.hset(m.hash, "state", "live")
    assert change(STORE_AI, [m.hash, m.ai], ["summary", '{"text":"x"}']) == {"stored": True}
    assert r.hget(m.ai, "summary") == b'{"text":"x"}' and r.ttl(m.ai) == -1  # the meeting has no expiry yet
    r.expire(m.hash, 500)
    assert change(STORE_AI, [m.hash, m.ai], ["emotion", "{}"]) == {"stored": True}
    assert 0 < r.ttl(m.ai) <= 500
