"""find_in_queue.lua, is_leased.lua, move_queued.lua and move_delayed.lua (meetingtasks.store.moves), called
directly."""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from meetingtasks.lua import LuaScript
from meetingtasks.store.platform import Platform
from tests.lua.conftest import Published

FIND = LuaScript.load("find_in_queue")
LEASED = LuaScript.load("is_leased")
MOVE_QUEUED = LuaScript.load("move_queued")
MOVE_DELAYED = LuaScript.load("move_delayed")


def _message(task_id: str, queue: str) -> bytes:
    return orjson.dumps({"body": "e30=", "headers": {"id": task_id, "task": "ai.echo"},
                         "properties": {"delivery_tag": f"tag-{task_id}", "delivery_info": {"routing_key": queue}}})


def _pairs(reply: list[Any]) -> dict[bytes, Any]:
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _transition_args(platform: Platform, task_id: str, status: str, attempt: str, now: float) -> list[Any]:
    keys = platform.keys
    event = orjson.dumps({"op": "status", "id": task_id, "status": status, "time": now, "attempt": int(attempt)})
    return [status, repr(now), attempt, 600, keys.status_channel, event, task_id, keys.batch(""),
            "priority", "high", "previous_priority", "low"]


def test_find_in_queue_reads_one_slice_newest_first(r: redis.Redis) -> None:
    # A message that only mentions the id (in its body) is not the task's own.
    impostor = orjson.dumps({"body": "t-1", "headers": {"id": "t-other"}})
    r.lpush("ai.low", _message("t-1", "ai.low"), impostor, _message("t-2", "ai.low"))  # newest: t-2
    assert _pairs(FIND(r, ["ai.low"], ["t-1", 0, 10])) == {b"index": 2, b"message": _message("t-1", "ai.low")}
    assert _pairs(FIND(r, ["ai.low"], ["t-1", 0, 2])) == {b"read": 2}  # not in the first slice
    assert _pairs(FIND(r, ["ai.low"], ["t-1", 2, 2])) == {b"index": 2, b"message": _message("t-1", "ai.low")}
    assert _pairs(FIND(r, ["ai.low"], ["t-3", 0, 10])) == {b"read": 3}
    assert _pairs(FIND(r, ["no-queue"], ["t-1", 0, 10])) == {b"read": 0}


def test_is_leased_finds_the_task_in_the_unacked_hash_only_by_its_own_id(r: redis.Redis) -> None:
    r.hset("unacked", mapping={"tag-1": b"[" + _message("t-1", "ai.low") + b',"","ai.low"]',
                               "tag-x": b'[{"body":"t-2","headers":{"id":"t-x"}},"","ai.low"]', "bad": b"t-2 not json"})
    assert LEASED(r, ["unacked"], ["t-1"]) == 1
    assert LEASED(r, ["unacked"], ["t-2"]) == 0


def test_move_queued_moves_the_message_wakes_and_records_the_transition(platform: Platform, r: redis.Redis,
                                                                        published: Published) -> None:
    keys = platform.keys
    skey = keys.status("t-1")
    r.hset(skey, mapping={"status": "QUEUED", "attempt": "1", "history": "QUEUED 1.0 1\n", "type": "ai.echo"})
    old, new = _message("t-1", "ai.low"), _message("t-1", "ai.high")
    r.lpush("ai.low", old, _message("t-2", "ai.low"))
    r.lpush("ai.high", _message("t-3", "ai.high"))
    move_keys = [skey, "ai.low", "ai.high", keys.wake("ai"), keys.deadlines, keys.callbacks]
    now = time.time()
    reply, events = published(lambda: MOVE_QUEUED(r, move_keys, [old, new, 1, *_transition_args(platform, "t-1",
                                                                                                 "QUEUED", "1", now)]))
    assert _pairs(reply) == {b"outcome": b"moved", b"status": b"QUEUED"}
    assert r.lrange("ai.low", 0, -1) == [_message("t-2", "ai.low")]
    assert r.lrange("ai.high", 0, -1) == [new, _message("t-3", "ai.high")]  # the back of the new line
    assert r.llen(keys.wake("ai")) == 1
    assert r.hmget(skey, "status", "priority", "previous_priority") == [b"QUEUED", b"high", b"low"]
    assert r.hget(skey, "history") == f"QUEUED 1.0 1\nQUEUED {now!r} 1\n".encode()
    assert [(e["id"], e["status"]) for e in events] == [("t-1", "QUEUED")]
    # Gone from the old queue (a worker took it): nothing changes; the record moved on: refused.
    assert _pairs(MOVE_QUEUED(r, move_keys, [old, new, 0, *_transition_args(platform, "t-1", "QUEUED", "1",
                                                                           now)])) == \
        {b"outcome": b"gone", b"status": b"QUEUED"}
    r.hset(skey, "status", "STARTED")
    assert _pairs(MOVE_QUEUED(r, move_keys, [new, old, 0, *_transition_args(platform, "t-1", "QUEUED", "1",
                                                                           now)])) == \
        {b"outcome": b"changed", b"status": b"STARTED"}
    assert r.lrange("ai.high", 0, 0) == [new]


def test_move_delayed_keeps_the_due_time_and_lengthens_the_records_life(platform: Platform, r: redis.Redis) -> None:
    keys = platform.keys
    skey = keys.status("t-1")
    r.hset(skey, mapping={"status": "SCHEDULED", "attempt": "2"})
    now = time.time()
    due_ms = int((now + 3_600) * 1000)
    old_entry, new_entry = b"ai.low\n" + _message("t-1", "ai.low"), b"ai.high\n" + _message("t-1", "ai.high")
    r.hset(keys.delayed_messages("ai"), "t-1", old_entry)
    r.zadd(keys.delayed("ai", "low"), {"t-1": due_ms})
    move_keys = [skey, keys.delayed_messages("ai"), keys.delayed("ai", "low"), keys.delayed("ai", "high"),
                 keys.deadlines, keys.callbacks]
    args = _transition_args(platform, "t-1", "SCHEDULED", "2", now)
    assert _pairs(MOVE_DELAYED(r, move_keys, [old_entry, new_entry, *args])) == \
        {b"outcome": b"moved", b"status": b"SCHEDULED"}
    assert r.zscore(keys.delayed("ai", "high"), "t-1") == due_ms and r.zcard(keys.delayed("ai", "low")) == 0
    assert r.hget(keys.delayed_messages("ai"), "t-1") == new_entry
    assert 3_600 < r.ttl(skey) <= 3_600 + 601  # lives ttl_s past its due time
    assert r.hget(skey, "priority") == b"high"
    # The entry no longer the one the caller read: gone; another attempt than the caller saw: changed.
    assert _pairs(MOVE_DELAYED(r, move_keys, [old_entry, new_entry, *args])) == \
        {b"outcome": b"gone", b"status": b"SCHEDULED"}
    stale = _transition_args(platform, "t-1", "SCHEDULED", "1", now)
    assert _pairs(MOVE_DELAYED(r, move_keys, [new_entry, old_entry, *stale]))[b"outcome"] == b"changed"
