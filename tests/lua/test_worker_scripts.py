"""fetch.lua, give_back.lua and unrecord.lua, called directly with the ARGV the worker builds
(:func:`meetingtasks.worker.transport.fetch_args`)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from meetingtasks.core.priority import PRIORITY_ORDER, queue_name
from meetingtasks.lua import LuaScript
from meetingtasks.store.platform import Platform
from meetingtasks.store.rollup import KEEP_S, bucket_of, slot_of, wait_bucket
from meetingtasks.store.status import Status
from meetingtasks.worker.outcomes import outcome_entry
from meetingtasks.worker.quarantine import REFUSED_TAG_PREFIX, refused_entry_parts
from meetingtasks.worker.transport import fetch_args
from tests.lua.conftest import Published
from tests.support.waiting import wait_for

FETCH = LuaScript.load("fetch")
GIVE_BACK = LuaScript.load("give_back")
UNRECORD = LuaScript.load("unrecord")
QUEUES = [queue_name("ai", p) for p in PRIORITY_ORDER]


def _message(task_id: str, tag: str, **headers: Any) -> bytes:
    return orjson.dumps({"body": "e30=", "headers": {"id": task_id, "task": "ai.echo", "retries": 0, **headers},
                         "properties": {"delivery_tag": tag, "delivery_info": {"exchange": "", "routing_key": "x"}}})


def _fetch(platform: Platform, r: redis.Redis, limit: int, start_now: int, acks: list[str] | None = None,
           outcomes: list[list[str]] | None = None, queues: list[str] | None = None) -> list[Any]:
    keys = platform.keys
    queue_keys = QUEUES if queues is None else queues
    return FETCH(r, [keys.unacked("ai"), keys.unacked_index("ai"), keys.wake("ai"), *queue_keys],  # type: ignore[no-any-return]
                 fetch_args(platform, limit, start_now, acks or [], outcomes or []))


def _rows(reply: list[Any]) -> list[tuple[Any, ...]]:
    return [tuple(reply[i:i + 5]) for i in range(0, len(reply), 5)]


def test_fetch_pops_in_priority_order_records_unacked_and_started(platform: Platform, r: redis.Redis,
                                                                 published: Published) -> None:
    keys = platform.keys
    r.lpush("ai.low", _message("t-low", "tag-low"))
    r.lpush("ai.critical", _message("t-crit", "tag-crit", mt_enqueued_at=time.time() - 1))
    r.hset(keys.status("t-crit"), mapping={"status": "QUEUED", "history": "QUEUED 1.0 1\n",
                                           "cancel_requested_at": "2.0"})
    r.hset(keys.status("t-low"), mapping={"status": "QUEUED"})
    r.lpush("ai.low", _message("t-foreign", "tag-foreign"))
    r.lpush(keys.wake("ai"), 1)
    reply, events = published(lambda: _fetch(platform, r, 3, 1))
    rows = _rows(reply)
    assert [(q, started) for q, _, _, _, started in rows] == [(b"ai.critical", 1), (b"ai.low", -2), (b"ai.low", 1)]
    assert rows[0][2:4] == (1, 1)  # first delivery; the cancel flag's copy was in the record
    crit: dict[bytes, bytes] = r.hgetall(keys.status("t-crit"))  # type: ignore[assignment]
    assert crit[b"status"] == b"STARTED" and crit[b"deliveries"] == b"1" and crit[b"service"] == b"ai"
    assert crit[b"history"].startswith(b"QUEUED 1.0 1\nSTARTED ") and float(crit[b"wait_s"]) >= 1
    assert r.hmget(keys.status("t-low"), "status", "deliveries") == [b"QUEUED", b"1"]  # deferred: counted only
    # t-foreign has no record (a foreign producer's task): it starts now, even past the "start now" ones
    assert r.hget(keys.status("t-foreign"), "status") == b"STARTED"
    assert sorted(r.hkeys(keys.unacked("ai"))) == [b"tag-crit", b"tag-foreign", b"tag-low"]
    assert r.zcard(keys.unacked_index("ai")) == 3
    assert [(e["id"], e["status"]) for e in events] == [("t-crit", "STARTED"), ("t-foreign", "STARTED")]


def test_fetch_refuses_what_it_cannot_record_without_failing(platform: Platform, r: redis.Redis) -> None:
    r.lpush("ai.high", b"not json", orjson.dumps({"properties": {}}), b"x" * (platform.settings.max_message_bytes + 1))
    rows = _rows(_fetch(platform, r, 5, 5))
    assert [row[2] for row in rows] == [-1] * 3
    assert bytes(rows[0][3]).startswith(b"not JSON")
    assert rows[1][3] == b"properties.delivery_tag must be a non-empty string"
    assert rows[2][3] == b"message exceeds max_message_bytes"
    assert r.llen("ai.high") == 0
    # Each stays leased under the tag its row names until the worker files its dead letter: a worker that dies
    # before that leaves it to the restore sweep, not lost.
    keys = platform.keys
    tags = [row[4] for row in rows]
    assert len(set(tags)) == 3 and all(tag.startswith(REFUSED_TAG_PREFIX.encode()) for tag in tags)
    for (_, message, _, why, tag) in rows:
        entry = r.hget(keys.unacked("ai"), tag)
        assert entry is not None and refused_entry_parts(entry) == ("ai.high", why.decode(), message)
    assert r.zcard(keys.unacked_index("ai")) == 3


def test_a_refused_items_lease_never_takes_the_tag_of_another(platform: Platform, r: redis.Redis) -> None:
    # Given two fetches of one worker that read the same clock (the tag is the worker, the time and the place)
    keys = platform.keys
    args = fetch_args(platform, 5, 5, [], [])
    args[1] = "1700000000.5"
    tags = []
    for raw in (b"first", b"second"):
        r.lpush("ai.high", raw)
        ((_, _, _, _, tag),) = _rows(FETCH(r, [keys.unacked("ai"), keys.unacked_index("ai"), keys.wake("ai"),
                                                 *QUEUES], args))
        tags.append(tag)
    # Then each is leased under a tag of its own
    assert tags[0] != tags[1]
    assert [refused_entry_parts(r.hget(keys.unacked("ai"), tag))[2] for tag in tags] == [b"first", b"second"]  # type: ignore[arg-type,index]


def test_fetch_scores_every_lease_by_its_start_in_whole_seconds_rounded_up(platform: Platform,
                                                                          r: redis.Redis) -> None:
    # Given a message and an item the fetch refuses, fetched at 1700000000.25
    keys = platform.keys
    r.lpush("ai.high", _message("t-1", "tag-1"), b"not json")
    args = fetch_args(platform, 5, 5, [], [])
    args[1] = "1700000000.25"
    FETCH(r, [keys.unacked("ai"), keys.unacked_index("ai"), keys.wake("ai"), *QUEUES], args)
    # Then both leases are scored 1700000001: never earlier than the lease began (restored late, never early), and
    # a whole number, which Redis stores in a small sorted set as an integer (see worker.loops.lease_score)
    scores = r.zrange(keys.unacked_index("ai"), 0, -1, withscores=True)
    assert len(scores) == 2 and {score for _, score in scores} == {1700000001.0}
    # And a fetch at a whole second keeps it
    r.lpush("ai.high", _message("t-2", "tag-2"))
    args[1] = "1700000005.0"
    FETCH(r, [keys.unacked("ai"), keys.unacked_index("ai"), keys.wake("ai"), *QUEUES], args)
    assert r.zscore(keys.unacked_index("ai"), "tag-2") == 1700000005.0


def test_unrecord_by_tag_drops_a_refused_items_lease(platform: Platform, r: redis.Redis) -> None:
    keys = platform.keys
    r.lpush("ai.high", b"not json")
    ((_, message, _, _, tag),) = _rows(_fetch(platform, r, 5, 5))
    both = [keys.unacked("ai"), keys.unacked_index("ai")]
    for other in (b"other bytes", message[:-1], b"x" + message):  # the tag holds another item: left alone
        assert UNRECORD(r, both, [other, tag]) == b""
        assert r.hexists(keys.unacked("ai"), tag)
    assert UNRECORD(r, both, [message, tag]) == b""
    assert r.hlen(keys.unacked("ai")) == 0 and r.zcard(keys.unacked_index("ai")) == 0


def test_fetch_applies_outcomes_and_acks_before_it_fetches(platform: Platform, r: redis.Redis,
                                                          published: Published) -> None:
    keys = platform.keys
    r.hset(keys.status("t-done"), mapping={"status": "STARTED", "history": "STARTED 1.0 1\n", "deliveries": "1"})
    r.hset(keys.unacked("ai"), "tag-done", "[{}, \"\", \"ai.low\"]")
    r.zadd(keys.unacked_index("ai"), {"tag-done": 1})
    outcome = outcome_entry("t-done", Status.SUCCEEDED, 1, {"result": {"ok": True}}, 3.0)
    reply, events = published(lambda: _fetch(platform, r, 0, 0, ["tag-done"], [outcome], queues=[]))
    assert reply == []
    assert r.hget(keys.status("t-done"), "status") == b"SUCCEEDED"
    assert r.hget(keys.status("t-done"), "history") == b"STARTED 1.0 1\nSUCCEEDED 3.0 1\n"
    assert r.hlen(keys.unacked("ai")) == 0 and r.zcard(keys.unacked_index("ai")) == 0
    assert [(e["id"], e["status"], e["result"]) for e in events] == [("t-done", "SUCCEEDED", {"ok": True})]


def test_fetch_does_not_start_a_terminal_task_and_empties_stale_wake_tokens(platform: Platform,
                                                                           r: redis.Redis) -> None:
    keys = platform.keys
    r.hset(keys.status("t-gone"), mapping={"status": "CANCELLED"})
    r.lpush("ai.normal", _message("t-gone", "tag-gone"))
    assert [row[4] for row in _rows(_fetch(platform, r, 1, 1))] == [0]
    assert r.hget(keys.status("t-gone"), "status") == b"CANCELLED"
    assert r.hget(keys.status("t-gone"), "deliveries") == b"1"
    r.lpush(keys.wake("ai"), 1, 1)
    assert _fetch(platform, r, 4, 4) == []
    assert r.exists(keys.wake("ai")) == 0  # all four queues empty: the tokens were stale


def test_give_back_pushes_only_this_workers_delivery_back(platform: Platform, r: redis.Redis) -> None:
    keys = platform.keys
    r.lpush("ai.high", _message("t-1", "tag-1"))
    rows = _rows(_fetch(platform, r, 1, 0))
    queue, message, deliveries, _, _ = rows[0]
    args = [keys.status(""), queue, message, "tag-1", "t-1", deliveries]
    wake = [keys.unacked("ai"), keys.unacked_index("ai"), keys.wake("ai")]
    assert GIVE_BACK(r, wake, args) == 1
    assert r.lrange("ai.high", 0, -1) == [message]
    assert r.hlen(keys.unacked("ai")) == 0 and r.hget(keys.status("t-1"), "deliveries") == b"0"
    assert r.llen(keys.wake("ai")) == 1
    assert GIVE_BACK(r, wake, args) == 0  # a second give-back finds the delivery gone: nothing pushed twice
    assert r.llen("ai.high") == 1
    assert GIVE_BACK(r, wake, [keys.status("")]) == 0  # no messages


def test_unrecord_drops_only_the_entry_holding_this_message(platform: Platform, r: redis.Redis) -> None:
    keys = platform.keys
    r.lpush("ai.high", _message("t-1", "tag-1"))
    message = _rows(_fetch(platform, r, 1, 1))[0][1]
    both = [keys.unacked("ai"), keys.unacked_index("ai")]
    assert UNRECORD(r, both, [_message("t-other", "tag-1")]) == b""  # same tag, another message: left alone
    assert r.hexists(keys.unacked("ai"), "tag-1")
    assert UNRECORD(r, both, [message]) == b"t-1"
    assert r.hlen(keys.unacked("ai")) == 0 and r.zcard(keys.unacked_index("ai")) == 0
    for garbage in (b"not json", b"[]", orjson.dumps({"properties": {"delivery_tag": 5}})):
        assert UNRECORD(r, both, [garbage]) == b""


def test_fetch_counts_its_starts_and_the_outcomes_it_applies_for_top(platform: Platform, r: redis.Redis) -> None:
    keys = platform.keys
    now = time.time()
    slot = slot_of(now)
    r.lpush("ai.normal", _message("t-new", "tag-new", mt_enqueued_at=now - 0.5))
    r.hset(keys.status("t-new"), mapping={"status": "QUEUED", "type": "ai.echo"})
    r.hset(keys.status("t-ran"), mapping={"status": "STARTED", "type": "ai.echo"})
    # A deferred start and its outcome, applied in one write, count as a start and a success.
    r.hset(keys.status("t-both"), mapping={"status": "QUEUED", "type": "ai.echo"})
    outcomes = [outcome_entry("t-ran", Status.FAILED, 1, {"run_s": "0.1"}, now),
                outcome_entry("t-both", Status.STARTED, 1, {"wait_s": "0.002"}, now),
                outcome_entry("t-both", Status.SUCCEEDED, 1, {"run_s": "0.003"}, now)]
    assert len(_rows(_fetch(platform, r, 1, 1, outcomes=outcomes))) == 1
    counts: dict[bytes, bytes] = r.hgetall(keys.top_type(slot, "ai.echo"))  # type: ignore[assignment]
    by_status: dict[str, int] = {}
    for name, n in counts.items():
        status = name.decode().split("|")[0]
        by_status[status] = by_status.get(status, 0) + int(n)
    assert by_status == {"STARTED": 2, "FAILED": 1, "SUCCEEDED": 1}
    assert counts[f"FAILED|{bucket_of(0.1)}".encode()] == b"1"
    assert counts[f"SUCCEEDED|{bucket_of(0.003)}".encode()] == b"1"


def test_a_busy_workers_fetch_hands_its_counts_back_and_a_later_one_writes_them(platform: Platform,
                                                                               r: redis.Redis) -> None:
    keys = platform.keys
    now = time.time()
    slot = slot_of(now)
    r.lpush("ai.normal", _message("t-a", "tag-a", mt_enqueued_at=now - 0.3), _message("t-b", "tag-b"))
    r.hset(keys.status("t-ran"), mapping={"status": "STARTED", "type": "ai.echo"})
    queues = [keys.unacked("ai"), keys.unacked_index("ai"), keys.wake("ai"), *QUEUES]
    outcome = outcome_entry("t-ran", Status.SUCCEEDED, 1, {"run_s": "0.1"}, now)
    # Given a fetch that takes a message and applies an outcome, told not to write its counts
    before = r.info("commandstats")
    reply = FETCH(r, queues, fetch_args(platform, 1, 1, [], [outcome], write_counts=False))
    # Then it writes none (no HINCRBY or HSETNX) and hands them back after its one message (behind the probe's
    # receivers)
    after = r.info("commandstats")
    for command in ("cmdstat_hincrby", "cmdstat_hsetnx"):
        assert after.get(command, {}).get("calls", 0) == before.get(command, {}).get("calls", 0), command
    assert len(reply) == 6 and not r.exists(keys.top_type(slot, "ai.echo"))
    receivers, *carried = reply[5]
    assert receivers == -1  # no task events probe was asked for
    top_fields = sorted(carried[i + 2] for i in range(0, len(carried), 4) if carried[i + 1] == b"ai.echo")
    assert top_fields == [f"STARTED|{bucket_of(0.3)}".encode(), f"SUCCEEDED|{bucket_of(0.1)}".encode()]
    # When the next fetch carries them, told to write: they are written with its own start, each once
    reply = FETCH(r, queues, fetch_args(platform, 1, 1, ["tag-a"], [], counts=carried))
    assert len(reply) == 5
    counts: dict[bytes, bytes] = r.hgetall(keys.top_type(slot, "ai.echo"))  # type: ignore[assignment]
    assert counts == {f"STARTED|{bucket_of(0.3)}".encode(): b"1", f"SUCCEEDED|{bucket_of(0.1)}".encode(): b"1",
                      b"STARTED|-": b"1"}
    assert r.hget(keys.top_slot(slot), "ai.echo") == b"1" and r.ttl(keys.top_type(slot, "ai.echo")) > 0
    # The charts' minute counts the two starts of ai.normal (the outcome's record names no service)
    minute: dict[bytes, bytes] = r.hgetall(keys.rollup(int(now // 60)))  # type: ignore[assignment]
    assert minute == {b"ai|normal|started": b"2", f"ai|wait|{wait_bucket(0.3)}".encode(): b"1"}
    assert 3_800 < r.ttl(keys.rollup(int(now // 60))) <= KEEP_S
    # And a fetch that takes nothing (the worker is idle) writes its counts whatever it is told
    r.hset(keys.status("t-b"), mapping={"type": "ai.echo"})
    late = outcome_entry("t-b", Status.SUCCEEDED, 1, {"run_s": "0.1"}, now)
    assert FETCH(r, queues, fetch_args(platform, 1, 1, ["tag-b"], [late], write_counts=False)) == []
    assert r.hget(keys.top_type(slot, "ai.echo"), f"SUCCEEDED|{bucket_of(0.1)}") == b"2"


def test_fetch_publishes_the_task_events_probe_and_hands_back_who_received_it(platform: Platform,
                                                                           r: redis.Redis) -> None:
    keys = platform.keys
    queues = [keys.unacked("ai"), keys.unacked_index("ai"), keys.wake("ai"), *QUEUES]
    probe = ("/0.celeryev/task.multi", b"probe")
    # Without a subscriber the probe reaches nobody; without a probe there is no tail
    assert FETCH(r, queues, fetch_args(platform, 1, 1, [], [], probe=probe)) == [[0]]
    assert FETCH(r, queues, fetch_args(platform, 1, 1, [], [])) == []
    # With a monitor's pattern subscription (how kombu subscribes to Celery's events) it reaches the monitor
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("/0.celeryev/*")
    wait_for(lambda: r.pubsub_numpat() >= 1, 10, message="subscribed")
    r.lpush("ai.normal", _message("t-p", "tag-p"))
    reply = FETCH(r, queues, fetch_args(platform, 1, 1, [], [], probe=probe))
    assert len(reply) == 6 and reply[5] == [1]
    message = wait_for(lambda: pubsub.get_message(timeout=1), 10, message="the probe")
    assert message["channel"] == b"/0.celeryev/task.multi" and message["data"] == b"probe"  # type: ignore[index]
    pubsub.close()
