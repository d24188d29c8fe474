"""The small single-purpose scripts, called directly: callback claim, cancel flag, count-by, rate slot, event
append, exists-each, stream trim."""

from __future__ import annotations

import time

import redis

from meetingtasks.lua import LuaScript
from meetingtasks.store.platform import Platform

CLAIM_CALLBACK = LuaScript.load("claim_callback")
SET_CANCEL_FLAG = LuaScript.load("set_cancel_flag")
COUNT_BY = LuaScript.load("count_by")
RESERVE_RATE_SLOT = LuaScript.load("reserve_rate_slot")
APPEND_EVENT = LuaScript.load("append_event")
EXISTS_EACH = LuaScript.load("exists_each")
TRIM_STREAM = LuaScript.load("trim_stream")


def test_claim_callback_takes_a_due_entry_once(platform: Platform, r: redis.Redis) -> None:
    outbox = platform.keys.callbacks
    r.zadd(outbox, {"t:due": 10, "t:later": 50})
    assert CLAIM_CALLBACK(r, [outbox], ["t:due", "20", "80"]) == 1
    assert r.zscore(outbox, "t:due") == 80  # leased: another pump retries it at 80
    assert CLAIM_CALLBACK(r, [outbox], ["t:due", "20", "90"]) == 0  # a racing pump: not due any more
    assert CLAIM_CALLBACK(r, [outbox], ["t:later", "20", "80"]) == 0
    assert CLAIM_CALLBACK(r, [outbox], ["t:gone", "20", "80"]) == 0
    assert r.zscore(outbox, "t:later") == 50 and r.zscore(outbox, "t:gone") is None


def test_set_cancel_flag_copies_the_flag_into_an_existing_record_only(platform: Platform, r: redis.Redis) -> None:
    keys = platform.keys
    r.hset(keys.status("t-1"), "status", "QUEUED")
    assert SET_CANCEL_FLAG(r, [keys.cancel("t-1"), keys.status("t-1")], ["5.5", 300]) is None
    assert r.get(keys.cancel("t-1")) == b"5.5" and 0 < r.ttl(keys.cancel("t-1")) <= 300
    assert r.hget(keys.status("t-1"), "cancel_requested_at") == b"5.5" and 0 < r.ttl(keys.status("t-1")) <= 300
    SET_CANCEL_FLAG(r, [keys.cancel("t-2"), keys.status("t-2")], ["6.0", 300])
    assert r.get(keys.cancel("t-2")) == b"6.0" and not r.exists(keys.status("t-2"))


def test_count_by_counts_values_by_the_patterns_capture(r: redis.Redis) -> None:
    r.hset("h", mapping={"a": '{"priority":"high"}', "b": '{"priority":"high"}', "c": '{"priority":"low"}',
                         "d": "no match"})
    reply = COUNT_BY(r, ["h"], ['"priority":"(%a+)"'])
    assert dict(zip(reply[::2], reply[1::2], strict=True)) == {b"high": 2, b"low": 1}
    assert COUNT_BY(r, ["no-such-hash"], ["(.*)"]) == []


def test_reserve_rate_slot_spaces_slots_by_the_interval(r: redis.Redis) -> None:
    assert RESERVE_RATE_SLOT(r, ["rate"], ["1000", "250"]) == 0  # the first slot is now
    assert RESERVE_RATE_SLOT(r, ["rate"], ["1000", "250"]) == 250
    assert RESERVE_RATE_SLOT(r, ["rate"], ["1100", "250"]) == 400
    assert r.get("rate") == b"1750" and 0 < r.pttl("rate") <= 1650 + 1000
    assert RESERVE_RATE_SLOT(r, ["rate"], ["5000", "250"]) == 0  # idle past the last slot: now again


def test_append_event_appends_an_id_once_and_announces_it(r: redis.Redis) -> None:
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("live")
    try:
        entry = APPEND_EVENT(r, ["event-id:e-1", "stream"], [60, '{"id":"e-1"}', "live"])
        assert entry is not None and r.xlen("stream") == 1
        assert r.xrange("stream")[0][1] == {b"event": b'{"id":"e-1"}'}  # type: ignore[index]
        assert APPEND_EVENT(r, ["event-id:e-1", "stream"], [60, '{"id":"e-1"}', "live"]) is None
        assert r.xlen("stream") == 1 and 0 < r.ttl("event-id:e-1") <= 60
        assert APPEND_EVENT(r, ["event-id:e-2", "stream"], [60, '{"id":"e-2"}', ""]) is not None  # not announced
        r.publish("live", b"end")
        announced: list[bytes] = []
        deadline = time.monotonic() + 10
        while announced[-1:] != [b"end"]:
            assert time.monotonic() < deadline, f"no end marker within 10 s: {announced}"
            message = pubsub.get_message(timeout=1)
            if message is not None:
                announced.append(message["data"])
        assert announced == [b'{"id":"e-1"}', b"end"]
    finally:
        pubsub.close()


def test_exists_each_answers_per_key(r: redis.Redis) -> None:
    r.set("a", 1)
    r.hset("c", "f", 1)
    assert EXISTS_EACH(r, ["a", "b", "c"]) == [1, 0, 1]
    assert EXISTS_EACH(r, []) == []


def test_trim_stream_keeps_what_a_group_still_needs(r: redis.Redis) -> None:
    ids = [r.xadd("s", {"n": i}, id=f"{i + 1}-0") for i in range(5)]
    r.xgroup_create("s", "g", id="0")
    r.xreadgroup("g", "c", {"s": ">"}, count=3)  # entries 1-3 delivered, none acknowledged
    r.xack("s", "g", ids[0])
    reply = TRIM_STREAM(r, ["s"], [1000, 0, 1000])
    fields = dict(zip(reply[::2], reply[1::2], strict=True))
    assert fields == {b"trimmed": 1, b"length": 4, b"groups": 1, b"min_id": b"2-0"}  # 2-0 is pending: kept
    assert TRIM_STREAM(r, ["no-stream"], [1000, 0, 1000]) == [b"trimmed", 0, b"length", 0, b"groups", 0, b"min_id", b""]


def test_trim_stream_without_groups_keeps_the_retention_window(r: redis.Redis) -> None:
    r.xadd("old", {"n": 1}, id="1-0")  # 1970: far outside any window
    r.xadd("old", {"n": 2}, id="*")
    fields = TRIM_STREAM(r, ["old"], [60_000, 0, 1000])
    assert fields[:6] == [b"trimmed", 1, b"length", 1, b"groups", 0]


def test_trim_stream_keeps_acknowledged_entries_for_replay_up_to_the_cap(r: redis.Redis) -> None:
    for _ in range(6):
        r.xadd("s", {"n": 1}, id="*")
    r.xgroup_create("s", "g", id="0")
    delivered = r.xreadgroup("g", "c", {"s": ">"}, count=6)[0][1]
    r.xack("s", "g", *[entry_id for entry_id, _ in delivered[:5]])  # the newest one stays pending
    # A replay window of an hour keeps every acknowledged entry, the cap of 3 only the newest three.
    reply = TRIM_STREAM(r, ["s"], [1000, 3_600_000, 3])
    fields = dict(zip(reply[::2], reply[1::2], strict=True))
    assert fields[b"trimmed"] == 3 and fields[b"length"] == 3
    assert [entry_id for entry_id, _ in r.xrange("s")] == [entry_id for entry_id, _ in delivered[3:]]
    # Without a replay window the acknowledged ones go, the pending one stays.
    reply = TRIM_STREAM(r, ["s"], [1000, 0, 3])
    assert [entry_id for entry_id, _ in r.xrange("s")] == [delivered[5][0]]
