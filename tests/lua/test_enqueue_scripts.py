"""enqueue_many.lua (the dispatcher's publish path) and claim_and_enqueue.lua (dispatch with a dedup key), called
directly."""

from __future__ import annotations

import pytest
import redis

from meetingtasks.lua import Arg, LuaScript
from meetingtasks.store.dedup import claim_and_enqueue, claim_and_enqueue_script
from meetingtasks.store.platform import Platform
from tests.lua.conftest import Published

ENQUEUE_MANY = LuaScript.load("enqueue_many")
TRANSITION = LuaScript.load("transition")


def test_enqueue_many_writes_records_publishes_pushes_and_wakes(platform: Platform, r: redis.Redis,
                                                                published: Published) -> None:
    keys = platform.keys
    r.hset(keys.status("t-b"), "kept", "1")  # an id that has a record already: the new fields are added to it
    args: list[Arg] = [keys.status(""), "100.5", 600, keys.status_channel, "QUEUED 100.5 1\n", 2, "created_by", "me",
            "ai.echo", "ai.high", 2, "0", "t-a", "t-b", "m-a", "m-b",
            "ai.echo", "ai.low", 1, "1", "t-c", "123000", 2, "m-c", "on_success", "cb"]
    done, events = published(lambda: ENQUEUE_MANY(r, [keys.deadlines, keys.wake("")], args))
    assert done == 1
    assert r.lrange("ai.high", 0, -1) == [b"m-b", b"m-a"] and r.lrange("ai.low", 0, -1) == [b"m-c"]
    a = r.hgetall(keys.status("t-a"))
    assert a == {b"status": b"QUEUED", b"updated_at": b"100.5", b"attempt": b"1", b"history": b"QUEUED 100.5 1\n",
                 b"type": b"ai.echo", b"service": b"ai", b"priority": b"high", b"queue": b"ai.high",
                 b"created_at": b"100.5", b"created_by": b"me"}
    assert 0 < r.ttl(keys.status("t-a")) <= 600
    assert r.hget(keys.status("t-b"), "kept") == b"1" and r.hget(keys.status("t-b"), "status") == b"QUEUED"
    assert r.hget(keys.status("t-c"), "on_success") == b"cb"
    assert r.zscore(keys.deadlines, "t-c") == 123000
    assert r.exists(keys.status("~enqueue")) == 0  # the template record lives only inside the call
    assert r.llen(keys.wake("ai")) == 3  # a token per task, before the messages
    assert events[0].raw == (b'{"op":"status","id":"t-a","status":"QUEUED","time":100.5,"attempt":1,'
                                          b'"type":"ai.echo","service":"ai","priority":"high"}')
    assert [(e["id"], e["priority"]) for e in events] == [("t-a", "high"), ("t-b", "high"), ("t-c", "low")]


def test_enqueue_many_caps_the_wake_tokens(platform: Platform, r: redis.Redis) -> None:
    keys = platform.keys
    ids = [f"t-{i}" for i in range(70)]
    args: list[Arg] = [keys.status(""), "1.0", 600, keys.status_channel, "QUEUED 1.0 1\n", 0,
            "ai.echo", "ai.low", len(ids), "0", *ids, *(f"m-{i}" for i in range(70))]
    ENQUEUE_MANY(r, [keys.deadlines, keys.wake("")], args)
    assert r.llen("ai.low") == 70 and r.llen(keys.wake("ai")) == 64  # WAKE_TOKENS_MAX


def _commands(platform: Platform, task_id: str) -> list[tuple[object, ...]]:
    keys = platform.keys
    return [("EVALSHA", TRANSITION.sha, 3, keys.status(task_id), keys.deadlines, keys.callbacks,
             "QUEUED", "1.0", 1, 600, keys.status_channel, "{}", "0", task_id, keys.batch("")),
            ("LPUSH", "ai.low", f"m-{task_id}")]


def test_claim_and_enqueue_claims_once_and_runs_the_commands(platform: Platform, r: redis.Redis) -> None:
    script = claim_and_enqueue_script(TRANSITION)
    keys = platform.keys
    first = claim_and_enqueue(script, r, keys.dedup("k"), "t-1", 60, keys.status(""), _commands(platform, "t-1"))
    assert first == ("t-1", True)
    assert r.get(keys.dedup("k")) == b"t-1" and r.hget(keys.status("t-1"), "status") == b"QUEUED"
    second = claim_and_enqueue(script, r, keys.dedup("k"), "t-2", 60, keys.status(""), _commands(platform, "t-2"))
    assert second == ("t-1", False)
    assert r.lrange("ai.low", 0, -1) == [b"m-t-1"] and not r.exists(keys.status("t-2"))
    r.delete(keys.status("t-1"))  # the owner's record is gone: the key is released to the next dispatch
    third = claim_and_enqueue(script, r, keys.dedup("k"), "t-3", 60, keys.status(""), _commands(platform, "t-3"))
    assert third == ("t-3", True)


def test_claim_and_enqueue_refuses_a_bad_command_list_before_writing(platform: Platform, r: redis.Redis) -> None:
    keys = platform.keys
    script = claim_and_enqueue_script()  # nothing embedded
    with pytest.raises(redis.ResponseError, match="is not embedded"):
        claim_and_enqueue(script, r, keys.dedup("k"), "t-1", 60, keys.status(""), _commands(platform, "t-1"))
    with pytest.raises(redis.ResponseError, match="bad command list"):
        script(r, [keys.dedup("k")], ["t-1", 60, keys.status(""), 5, "LPUSH", "ai.low"])
    assert r.exists(keys.dedup("k"), keys.status("t-1"), "ai.low") == 0
