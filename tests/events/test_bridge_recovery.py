"""The bridge survives what production does to it: SIGKILL mid-batch, killed connections, outside publishers."""

from __future__ import annotations

import time

import orjson
import pytest
import redis

from meetingtasks import publish_event, publish_events
from meetingtasks.store.platform import Platform
from tests.events.conftest import queued, triggers_per_event
from tests.support.waiting import wait_for


def pending(platform: Platform, r: redis.Redis) -> int:
    return int(r.xpending(platform.keys.event_stream("user_events"), platform.keys.bridge_group)["pending"])


@pytest.mark.slow
def test_a_second_bridge_reclaims_what_a_killed_bridge_left(platform: Platform, r: redis.Redis,
                                                            start_bridge) -> None:
    # Given 1,000 events whose first subscription takes 3 ms each, and a bridge reading 50 at a time
    ids = {e.id for e in publish_events(
        {"channel": "user_events", "type": "user.logged_in", "source": "test", "payload": {"n": n, "sleep_s": 0.003}}
        for n in range(1000))}
    first = start_bridge(env_overrides={"MEETINGTASKS_BRIDGE_BATCH": "50"})

    # When it is killed with SIGKILL in the middle of a batch: a batch's tasks land with its acknowledgement, so
    # the moment the queue grows is the one moment nothing is pending; wait until the next batch has been read
    # (its 50 events take 150 ms or more, far longer than from this check to the kill)
    wait_for(lambda: r.llen("ai.normal") >= 150 and pending(platform, r) > 0, 60,
             message="the first bridge to be under way, a batch read")
    first.kill()
    done_by_first = r.llen("ai.normal")
    assert done_by_first < 1000
    assert pending(platform, r) > 0, "the kill should leave a batch read but unacknowledged"

    # And a second bridge starts
    start_bridge(env_overrides={"MEETINGTASKS_BRIDGE_BATCH": "50"})

    # Then the second bridge re-claims the pending events: every event triggers its set once, none twice
    wait_for(lambda: r.llen("ai.normal") >= 1000 and r.llen("user.normal") >= 1000, 90, message="all sets")
    wait_for(lambda: pending(platform, r) == 0, 30, message="nothing left pending")
    for queue in ("ai.normal", "user.normal"):
        counts = triggers_per_event(r, queue)
        assert set(counts) == ids, f"{len(ids - set(counts))} events lost on {queue}"
        assert max(counts.values()) == 1, f"an event triggered twice on {queue}"


def test_an_event_sent_with_plain_publish_triggers_once(platform: Platform, r: redis.Redis, make_bridge) -> None:
    # Given two bridges (both hear every pub/sub message)
    first, second = make_bridge(), make_bridge()

    # When an outside service publishes an event the way redis-cli would, without an id
    message = orjson.dumps({"type": "user.logged_in", "source": "go-gateway", "payload": {"n": 5}})
    assert r.publish("user_events", message) >= 2

    # Then it is appended to the stream once and triggers its tasks once
    wait_for(lambda: r.llen("ai.normal") == 1 and r.llen("user.normal") == 1, 20, message="the tasks")
    time.sleep(0.5)  # nothing else may arrive: give a duplicate the chance to show up
    assert r.xlen(platform.keys.event_stream("user_events")) == 1
    assert r.llen("ai.normal") == 1 and r.llen("user.normal") == 1
    assert first.stats.appended + second.stats.appended == 1
    (task,) = queued(r, "ai.normal")
    entry = r.xrange(platform.keys.event_stream("user_events"))[0][1][b"event"]
    stored = orjson.loads(entry)
    assert task["event_id"] == stored["id"] and stored["source"] == "go-gateway"
    assert stored["channel"] == "user_events" and stored["payload"] == {"n": 5}


def test_an_outside_event_with_an_id_is_bridged_once_however_often_it_is_heard(platform: Platform, r: redis.Redis,
                                                                              make_bridge) -> None:
    # Given a running bridge, and an event published through the platform (stream + pub/sub)
    make_bridge()
    ours = publish_event("user_events", "user.logged_in", {"n": 1}, source="test")

    # When an outside publisher sends an event with its own id three times
    message = orjson.dumps({"id": "cpp-42", "type": "user.logged_in", "payload": {"n": 2}})
    for _ in range(3):
        r.publish("user_events", message)

    # Then each event is in the stream once and triggered once
    wait_for(lambda: r.llen("ai.normal") == 2, 20, message="both tasks")
    time.sleep(0.5)
    assert sorted(m["event_id"] for m in queued(r, "ai.normal")) == sorted([ours.id, "cpp-42"])
    assert r.xlen(platform.keys.event_stream("user_events")) == 2


def test_garbage_on_a_channel_is_dead_lettered(platform: Platform, r: redis.Redis, make_bridge) -> None:
    # Given a running bridge, when outside publishers send garbage and an unknown event type
    bridge = make_bridge()
    r.publish("signaling_events", b"not json")
    r.publish("signaling_events", orjson.dumps({"type": "webrtc.offr", "payload": {}}))

    # Then both land in the dead-letter queue of signaling (the channel's owner) with the reason
    wait_for(lambda: platform.dead_letters.count(r, "signaling") == 2, 20, message="two dead letters")
    errors = " | ".join(letter.error for letter in platform.dead_letters.list(r, "signaling"))
    assert "not JSON" in errors
    assert "did you mean 'webrtc.offer'" in errors
    assert r.xlen(platform.keys.event_stream("signaling_events")) == 0
    assert bridge.stats.dead_letters == 2


def _kill(r: redis.Redis, kind: str) -> int:
    return int(r.execute_command("CLIENT", "KILL", "TYPE", kind))


def test_the_bridge_resumes_after_its_connections_are_killed(platform: Platform, r: redis.Redis,
                                                            make_bridge) -> None:
    # Given a running bridge that has handled an event
    bridge = make_bridge()
    publish_event("user_events", "user.logged_in", {"n": 0}, source="test")
    wait_for(lambda: r.llen("ai.normal") == 1, 20, message="the first task")

    # When Redis drops every normal connection (the stream reader's among them)
    assert _kill(r, "normal") >= 1
    killed_at = time.monotonic()

    # Then a durable event published afterwards is turned into its task within 5 s
    publish_event("user_events", "user.logged_in", {"n": 1}, source="test")
    wait_for(lambda: r.llen("ai.normal") == 2, 5, message="the task after the kill")
    assert time.monotonic() - killed_at < 5

    # When Redis drops every pub/sub connection (the bridge's listener)
    assert _kill(r, "pubsub") >= 1
    killed_at = time.monotonic()

    # Then an outside PUBLISH is bridged again within 5 s (pub/sub keeps nothing for a disconnected
    # listener, so the outside publisher repeats its event, with its id, until it is heard)
    message = orjson.dumps({"id": "after-kill", "type": "user.logged_in", "payload": {"n": 2}})

    def heard() -> bool:
        r.publish("user_events", message)
        return r.llen("ai.normal") == 3

    wait_for(heard, 5, interval_s=0.1, message="the outside event after the pub/sub kill")
    assert time.monotonic() - killed_at < 5
    time.sleep(0.3)
    assert r.llen("ai.normal") == 3, "a repeated outside event triggered twice"
    assert bridge.reconnects >= 2
