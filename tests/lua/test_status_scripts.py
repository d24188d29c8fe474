"""transition.lua and progress.lua, called directly: what they write to the record, what they publish, what they
refuse."""

from __future__ import annotations

import time

import orjson
import redis

from meetingtasks.lua import LuaScript
from meetingtasks.store.platform import Platform
from meetingtasks.store.rollup import RETENTION_S, bucket_of, slot_of
from tests.lua.conftest import Published

TRANSITION = LuaScript.load("transition")
PROGRESS = LuaScript.load("progress")


def _transition(platform: Platform, r: redis.Redis, task_id: str, status: str, now: str, *fields: str,
                attempt: str = "1", force: str = "0") -> int:
    keys = platform.keys
    event = orjson.dumps({"op": "status", "id": task_id, "status": status, "time": float(now), "attempt": 1})
    return int(TRANSITION(r, [keys.status(task_id), keys.deadlines, keys.callbacks],
                      [status, now, attempt, 600, keys.status_channel, event, force, task_id, keys.batch(""), *fields]))


def test_a_transition_writes_the_record_appends_history_and_publishes(platform: Platform, r: redis.Redis,
                                                                      published: Published) -> None:
    skey = platform.keys.status("t-1")
    r.hset(skey, mapping={"status": "QUEUED", "history": "QUEUED 10.0 1\n", "deliveries": "2"})
    accepted, events = published(lambda: _transition(platform, r, "t-1", "RETRYING", "11.5", "error", "boom",
                                                     attempt="2"))
    assert accepted == 1
    record = r.hgetall(skey)
    assert record[b"status"] == b"RETRYING" and record[b"attempt"] == b"2" and record[b"updated_at"] == b"11.5"
    assert record[b"history"] == b"QUEUED 10.0 1\nRETRYING 11.5 2\n"
    assert record[b"error"] == b"boom"
    assert record[b"deliveries"] == b"0"  # the run ended: the poison guard's count starts again
    assert b"finalized" not in record
    assert 0 < r.ttl(skey) <= 600
    assert [e["status"] for e in events] == ["RETRYING"]


def test_the_first_terminal_transition_finalises_callbacks_deadline_and_batch(platform: Platform,
                                                                              r: redis.Redis) -> None:
    keys = platform.keys
    r.hset(keys.status("t-2"), mapping={"status": "STARTED", "deadline": "99", "on_success": "x", "batch": "b-1"})
    r.zadd(keys.deadlines, {"t-2": 99})
    r.hset(keys.batch("b-1"), mapping={"total": 1, "on_complete": "y"})
    assert _transition(platform, r, "t-2", "SUCCEEDED", "20.0", "result", "42") == 1
    assert r.hget(keys.status("t-2"), "finalized") == b"20.0"
    assert r.zscore(keys.deadlines, "t-2") is None
    assert r.zscore(keys.callbacks, "t:t-2") == 20.0 and r.zscore(keys.callbacks, "b:b-1") == 20.0
    assert r.hget(keys.batch("b-1"), "done") == b"1" and r.hget(keys.batch("b-1"), "n:SUCCEEDED") == b"1"


def test_a_terminal_record_refuses_a_later_transition_unless_forced(platform: Platform, r: redis.Redis,
                                                                    published: Published) -> None:
    skey = platform.keys.status("t-3")
    r.hset(skey, mapping={"status": "SUCCEEDED", "history": "SUCCEEDED 5.0 1\n", "finalized": "5.0"})
    refused, events = published(lambda: _transition(platform, r, "t-3", "STARTED", "6.0"))
    assert refused == 0 and events == []
    assert r.hget(skey, "status") == b"SUCCEEDED"
    assert _transition(platform, r, "t-3", "QUEUED", "7.0", force="1") == 1
    assert r.hget(skey, "history") == b"SUCCEEDED 5.0 1\nQUEUED 7.0 1\n"
    assert _transition(platform, r, "t-3", "FAILED", "8.0") == 1
    assert r.zcard(platform.keys.callbacks) == 0  # 'finalized' stayed: callbacks are filed once per task


def test_progress_is_recorded_only_for_a_started_task(platform: Platform, r: redis.Redis,
                                                      published: Published) -> None:
    keys = platform.keys
    r.hset(keys.status("t-4"), mapping={"status": "STARTED", "history": "STARTED 1.0 1\n"})
    r.hset(keys.status("t-5"), mapping={"status": "SUCCEEDED"})
    event = b'{"op":"status","id":"t-4","status":"STARTED","progress":50.0}'
    done, events = published(lambda: PROGRESS(r, [keys.status("t-4")],
                                              ["50.0", "half way", "2.0", 600, keys.status_channel, event]))
    assert done == 1 and events == [orjson.loads(event)]
    assert r.hmget(keys.status("t-4"), "progress", "progress_message", "updated_at", "history") == \
        [b"50.0", b"half way", b"2.0", b"STARTED 1.0 1\n"]
    for task_id in ("t-5", "t-missing"):
        refused, events = published(lambda task_id=task_id: PROGRESS(  # type: ignore[misc]
            r, [keys.status(task_id)], ["60.0", "", "3.0", 600, keys.status_channel, event]))
        assert refused == 0 and events == []
    assert r.hget(keys.status("t-5"), "progress") is None and not r.exists(keys.status("t-missing"))


def test_a_transition_of_a_run_is_counted_for_top_with_its_duration_bucket(platform: Platform,
                                                                          r: redis.Redis) -> None:
    keys = platform.keys
    now = time.time()
    slot = slot_of(now)
    r.hset(keys.status("t-6"), mapping={"status": "QUEUED", "type": "ai.echo"})
    assert _transition(platform, r, "t-6", "STARTED", repr(now), "wait_s", "0.25") == 1
    assert _transition(platform, r, "t-6", "SUCCEEDED", repr(now), "run_s", "1.5") == 1
    assert _transition(platform, r, "t-6", "SUCCEEDED", repr(now), force="1") == 1  # not re-entered: not counted
    assert r.hgetall(keys.top_type(slot, "ai.echo")) == {f"STARTED|{bucket_of(0.25)}".encode(): b"1",
                                                          f"SUCCEEDED|{bucket_of(1.5)}".encode(): b"1"}
    assert r.hget(keys.top_slot(slot), "ai.echo") == b"1"
    assert 0 < r.ttl(keys.top_type(slot, "ai.echo")) <= RETENTION_S
    # A status the rollups do not count (QUEUED), and a record with no type, leave nothing.
    _transition(platform, r, "t-7", "QUEUED", repr(now))
    _transition(platform, r, "t-7", "STARTED", repr(now))
    assert r.hlen(keys.top_slot(slot)) == 1


def test_identity_fields_are_written_where_the_record_lacks_them_or_holds_another_value(
        platform: Platform, r: redis.Redis, published: Published) -> None:
    # Given a record that has its type and service from the dispatch, a priority that a move changed, no worker
    skey = platform.keys.status("t-id")
    r.hset(skey, mapping={"status": "QUEUED", "type": "transcribe", "service": "ai", "priority": "normal"})
    # When a transition carries the task's identity (as every transition does, for its event) with a new priority
    _, events = published(lambda: _transition(platform, r, "t-id", "STARTED", "5.0", "type", "transcribe",
                                              "service", "ai", "priority", "high", "worker", "w:1"))
    # Then the record holds the event's identity and the new fields
    record = r.hgetall(skey)
    assert (record[b"type"], record[b"service"], record[b"priority"], record[b"worker"]) == (
        b"transcribe", b"ai", b"high", b"w:1")
    assert [e["status"] for e in events] == ["STARTED"]
    # And a record without them (a foreign producer's task) gets them
    bare = platform.keys.status("t-bare")
    r.hset(bare, mapping={"status": "QUEUED"})
    _transition(platform, r, "t-bare", "STARTED", "6.0", "type", "transcribe", "service", "ai", "priority", "low")
    assert r.hmget(bare, "type", "service", "priority") == [b"transcribe", b"ai", b"low"]
