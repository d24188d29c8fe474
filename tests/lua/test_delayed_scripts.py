"""pump_delayed.lua, remove_delayed.lua and replay_dead_letter.lua, called directly."""

from __future__ import annotations

import redis

from meetingtasks.core.priority import PRIORITY_ORDER
from meetingtasks.lua import LuaScript
from meetingtasks.store.platform import Platform
from tests.lua.conftest import Published

PUMP = LuaScript.load("pump_delayed")
REMOVE = LuaScript.load("remove_delayed")
REPLAY = LuaScript.load("replay_dead_letter")


def _delayed_keys(platform: Platform) -> list[str]:
    return [platform.keys.delayed_messages("ai"), *(platform.keys.delayed("ai", p.value) for p in PRIORITY_ORDER)]


def _hold(platform: Platform, r: redis.Redis, task_id: str, priority: str, due_ms: int) -> None:
    r.hset(platform.keys.delayed_messages("ai"), task_id, f"ai.{priority}\nm-{task_id}")
    r.zadd(platform.keys.delayed("ai", priority), {task_id: due_ms})


def _pump(platform: Platform, r: redis.Redis, now_s: float, limit: int = 100) -> int:
    keys = platform.keys
    return PUMP(r, _delayed_keys(platform), [int(now_s * 1000), limit, keys.status(""), keys.status_channel,  # type: ignore[no-any-return]
                                             repr(now_s), keys.wake("ai"), "ai", *(p.value for p in PRIORITY_ORDER)])


def test_pump_moves_due_entries_critical_first_and_queues_scheduled_records(platform: Platform, r: redis.Redis,
                                                                           published: Published) -> None:
    keys = platform.keys
    _hold(platform, r, "t-low", "low", 1000)
    _hold(platform, r, "t-crit", "critical", 2000)
    _hold(platform, r, "t-later", "critical", 9000)
    r.hset(keys.status("t-crit"), mapping={"status": "SCHEDULED", "attempt": "2", "history": "SCHEDULED 0.5 2\n",
                                           "type": 'ai."quoted"'})
    r.hset(keys.status("t-low"), mapping={"status": "CANCELLED"})  # not SCHEDULED: pushed, its record left alone
    moved, events = published(lambda: _pump(platform, r, 5.0, limit=1))
    assert moved == 1 and r.lrange("ai.critical", 0, -1) == [b"m-t-crit"]  # critical first, within the limit
    assert r.hmget(keys.status("t-crit"), "status", "history") == [b"QUEUED", b"SCHEDULED 0.5 2\nQUEUED 5.0 2\n"]
    assert [e.raw for e in events] == [b'{"op":"status","id":"t-crit","status":"QUEUED","time":5.0,"attempt":2,'
                                       b'"type":"ai.\\"quoted\\"","service":"ai","priority":"critical"}']
    assert _pump(platform, r, 5.0) == 1
    assert r.lrange("ai.low", 0, -1) == [b"m-t-low"] and r.hget(keys.status("t-low"), "status") == b"CANCELLED"
    assert r.hkeys(keys.delayed_messages("ai")) == [b"t-later"]
    assert r.zrange(keys.delayed("ai", "critical"), 0, -1) == [b"t-later"]
    assert r.llen(keys.wake("ai")) == 2
    assert _pump(platform, r, 5.0) == 0  # nothing due


def test_remove_takes_one_entry_out(platform: Platform, r: redis.Redis) -> None:
    _hold(platform, r, "t-1", "high", 1000)
    assert REMOVE(r, _delayed_keys(platform), ["t-1"]) == 1
    assert r.exists(platform.keys.delayed_messages("ai"), platform.keys.delayed("ai", "high")) == 0
    assert REMOVE(r, _delayed_keys(platform), ["t-1"]) == 0


def test_replay_resets_the_record_and_pushes_the_message_once(platform: Platform, r: redis.Redis,
                                                              published: Published) -> None:
    keys = platform.keys
    r.hset(keys.dlq("ai"), "l-1", "{}")
    r.zadd(keys.dlq_index("ai"), {"l-1": 1})
    r.hset(keys.status("t-1"), mapping={"status": "DEAD_LETTERED", "attempt": "3", "history": "FAILED 1.0 3\n",
                                        "error": "boom", "error_type": "E", "deliveries": "4", "finalized": "1.0"})
    call_keys = [keys.dlq("ai"), keys.dlq_index("ai"), "ai.high", keys.status("t-1"), keys.wake("ai")]
    event = b'{"op":"status","id":"t-1","status":"QUEUED","time":2.0,"attempt":1}'
    done, events = published(lambda: REPLAY(r, call_keys, ["l-1", "m-1", "2.0", keys.status_channel, event, 600]))
    assert done == 1 and [e.raw for e in events] == [event]
    record = r.hgetall(keys.status("t-1"))
    assert record[b"status"] == b"QUEUED" and record[b"attempt"] == b"1" and record[b"deliveries"] == b"0"
    assert record[b"history"] == b"FAILED 1.0 3\nQUEUED 2.0 1\n"
    assert b"error" not in record and b"error_type" not in record
    assert record[b"finalized"] == b"1.0"  # callbacks stay fired once
    assert r.lrange("ai.high", 0, -1) == [b"m-1"] and r.llen(keys.wake("ai")) == 1
    assert r.hlen(keys.dlq("ai")) == 0 and r.zcard(keys.dlq_index("ai")) == 0
    # A second replay (a racing one) finds the letter gone and pushes nothing.
    assert REPLAY(r, call_keys, ["l-1", "m-1", "3.0", keys.status_channel, event, 600]) == 0
    assert r.llen("ai.high") == 1


def test_replay_of_a_task_whose_record_expired_pushes_without_a_record(platform: Platform, r: redis.Redis) -> None:
    keys = platform.keys
    r.hset(keys.dlq("ai"), "l-2", "{}")
    call_keys = [keys.dlq("ai"), keys.dlq_index("ai"), "ai.low", keys.status("t-2"), keys.wake("ai")]
    assert REPLAY(r, call_keys, ["l-2", "m-2", "2.0", keys.status_channel, "{}", 600]) == 1
    assert r.lrange("ai.low", 0, -1) == [b"m-2"] and not r.exists(keys.status("t-2"))
