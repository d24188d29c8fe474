"""The bridge turns stream events into tasks: durably, exactly once, sharing work, surviving crashes."""

from __future__ import annotations

import pytest
import redis

from meetingtasks import publish_event, publish_events
from meetingtasks.events.bridge import Bridge
from meetingtasks.store.platform import Platform
from tests.events.conftest import queued, triggers_per_event
from tests.support.waiting import wait_for


def login_events(count: int, **extra: object) -> list[dict[str, object]]:
    return [{"channel": "user_events", "type": "user.logged_in", "source": "test", "payload": {"n": n, **extra}}
            for n in range(count)]


def test_events_published_while_the_bridge_is_down_trigger_once_each(platform: Platform, r: redis.Redis,
                                                                     make_bridge) -> None:
    # Given no bridge running (it never ran), 1,000 events published in one batch
    events = publish_events(login_events(1000))
    ids = {e.id for e in events}
    assert r.llen("ai.normal") == 0

    # When a bridge starts
    bridge = make_bridge()

    # Then every event triggers its set of two tasks (t_event_a, t_event_b), none twice
    wait_for(lambda: r.llen("ai.normal") >= 1000 and r.llen("user.normal") >= 1000, 60, message="1,000 sets")
    wait_for(lambda: bridge.stats.events == 1000, 10, message="1,000 events acknowledged")
    for queue in ("ai.normal", "user.normal"):
        counts = triggers_per_event(r, queue)
        assert set(counts) == ids
        assert max(counts.values()) == 1, f"an event triggered twice on {queue}"
    assert r.xpending(platform.keys.event_stream("user_events"), platform.keys.bridge_group)["pending"] == 0

    # And a bridge started afterwards (a restart) triggers nothing again
    bridge.stop()
    again = make_bridge()
    publish_event("user_events", "user.logged_in", {"n": -1}, source="test")
    wait_for(lambda: r.llen("ai.normal") == 1001, 20, message="the new event's task")
    assert again.stats.tasks == 2 and r.llen("user.normal") == 1001


def test_a_redelivered_event_never_triggers_twice(platform: Platform, r: redis.Redis, make_bridge) -> None:
    # Given an event that already triggered its tasks
    bridge = make_bridge()
    event = publish_event("user_events", "user.logged_in", {"n": 1}, source="test")
    wait_for(lambda: bridge.stats.events == 1, 20, message="the event handled")

    # When the same event lands in the stream again (e.g. appended by a second publisher path)
    r.xadd(platform.keys.event_stream("user_events"), {"event": event.to_json()})

    # Then it is handled and acknowledged, and counted as a duplicate, but no task is queued again
    wait_for(lambda: bridge.stats.events == 2, 20, message="the copy handled")
    assert bridge.stats.duplicates == 2
    assert [m["event_id"] for m in queued(r, "ai.normal")] == [event.id]
    assert [m["event_id"] for m in queued(r, "user.normal")] == [event.id]


def test_triggered_tasks_have_ids_derived_from_the_event(platform: Platform, r: redis.Redis, make_bridge) -> None:
    # Given a running bridge, when an event is published
    make_bridge()
    event = publish_event("user_events", "user.logged_in", {"n": 7}, source="test")
    wait_for(lambda: r.llen("ai.normal") == 1, 20, message="the task")

    # Then its task has the subscription's deterministic id, a QUEUED status and the event's payload mapping
    from meetingtasks.events.subscriptions import SUBSCRIPTIONS

    sub = SUBSCRIPTIONS.get("tests.support.event_tasks:probe_a")
    (message,) = queued(r, "ai.normal")
    assert message["id"] == sub.task_id(event.id)
    assert message["payload"] == {"event_id": event.id, "n": 7}
    assert platform.status.get(r, message["id"]).status == "QUEUED"


def test_bridges_share_the_work(platform: Platform, r: redis.Redis, make_bridge) -> None:
    # Given two bridges in one consumer group
    first, second = make_bridge(bridge_batch=10), make_bridge(bridge_batch=10)

    # When 400 events are published one by one
    ids = {publish_event("user_events", "user.logged_in", {"n": n}, source="test").id for n in range(400)}

    # Then each event triggers once, and both bridges did part of the work
    wait_for(lambda: first.stats.events + second.stats.events == 400, 60, message="400 events handled")
    counts = triggers_per_event(r, "ai.normal")
    assert set(counts) == ids and max(counts.values()) == 1
    assert first.stats.events > 0 and second.stats.events > 0, (first.stats, second.stats)


@pytest.mark.slow
def test_a_failing_subscription_is_retried_then_triggers_once(platform: Platform, r: redis.Redis,
                                                             make_bridge) -> None:
    # Given a subscription that fails twice before it works, and three attempts allowed
    bridge = make_bridge(event_max_attempts=3)

    # When its event is published
    event = publish_event("user_events", "user.registered", {"fail_times": 2}, source="test")

    # Then the event stays pending while it fails, is re-claimed, and triggers exactly once
    wait_for(lambda: r.llen("ai.normal") == 1, 30, message="the task after two failures")
    assert int(r.get(f"test:event:flaky:{event.id}")) == 3
    assert bridge.stats.failures == 2
    wait_for(lambda: bridge.stats.events == 1, 10, message="the event acknowledged")
    assert platform.dead_letters.count(r, "ai") == 0


def test_a_subscription_that_keeps_failing_is_dead_lettered_with_the_reason(platform: Platform, r: redis.Redis,
                                                                           make_bridge) -> None:
    # Given a subscription that always raises, two attempts allowed
    bridge = make_bridge(event_max_attempts=2)

    # When its event is published
    event = publish_event("user_events", "user.profile_updated", {"mode": "raise"}, source="test")

    # Then after two failed runs the event is acknowledged and a dead letter says what failed and why
    wait_for(lambda: bridge.stats.dead_letters == 1, 30, message="the dead letter")
    wait_for(lambda: bridge.stats.events == 1, 10, message="the event acknowledged")
    assert int(r.get(f"test:event:broken:{event.id}")) == 2
    (letter,) = platform.dead_letters.list(r, "ai")  # t_event_a is an ai type; the test module has no service
    assert "failed 2 times" in letter.reason and event.id in letter.reason
    assert letter.error == "RuntimeError: the subscription is broken"
    assert letter.payload["id"] == event.id and letter.attempts == 2 and not letter.replayable
    assert platform.status.get(r, letter.id).status == "DEAD_LETTERED"
    assert r.llen("ai.normal") == 0


def test_a_payload_the_task_refuses_is_dead_lettered_at_once(platform: Platform, r: redis.Redis,
                                                            make_bridge) -> None:
    # Given a subscription that returns a payload its task type's model refuses
    bridge = make_bridge(event_max_attempts=5)

    # When its event is published
    event = publish_event("user_events", "user.profile_updated", {"mode": "invalid"}, source="test")

    # Then it is dead-lettered after one run (retrying cannot help), naming the fields
    wait_for(lambda: bridge.stats.dead_letters == 1, 20, message="the dead letter")
    assert int(r.get(f"test:event:broken:{event.id}")) == 1
    (letter,) = platform.dead_letters.list(r, "ai")
    assert "refuses" in letter.reason
    assert "payload.event_id" in letter.error and "payload.n" in letter.error


def test_a_malformed_stream_entry_is_dead_lettered_under_the_channel_owner(platform: Platform, r: redis.Redis,
                                                                          make_bridge) -> None:
    # Given a running bridge, when something writes garbage straight into a stream
    bridge = make_bridge()
    stream = platform.keys.event_stream("media_events")
    r.xadd(stream, {"event": b'{"type": "stream.started"'})
    r.xadd(stream, {"other": b"x"})

    # Then both entries are acknowledged and dead-lettered under media, the channel's owner
    wait_for(lambda: bridge.stats.events == 2, 20, message="both entries handled")
    letters = platform.dead_letters.list(r, "media")
    assert len(letters) == 2
    assert all("malformed event on media_events" in letter.reason for letter in letters)
    assert r.xpending(stream, platform.keys.bridge_group)["pending"] == 0


def test_a_bridge_waits_out_a_redis_restart(tmp_path, settings) -> None:
    """Redis is killed and restarted under a running bridge: it reconnects by itself."""
    from meetingtasks.operations.embedded import RedisServer
    from meetingtasks.store.connections import reset_shared_clients
    from meetingtasks.store.platform import configure
    from tests.events.conftest import EVENT_TASKS, FAST

    # Given a bridge on a Redis of its own
    server = RedisServer(tmp_path / "redis").start()
    bridge = None
    try:
        platform = configure(settings.model_copy(update={**FAST, "redis_url": server.url}))
        bridge = Bridge(platform, includes=[EVENT_TASKS]).start()
        assert bridge.wait_ready(15)

        # When Redis is killed and started again on the same port
        server.restart(kill=True)
        reset_shared_clients()

        # Then an event published afterwards becomes its tasks without restarting the bridge
        publish_event("user_events", "user.logged_in", {"n": 1}, source="test")
        client = platform.redis()
        wait_for(lambda: client.llen("ai.normal") == 1, 20, message="the task after the restart")
        # and it counted its reconnect (the stream reader may count it just after the pub/sub path queued the task)
        wait_for(lambda: bridge.reconnects >= 1, 10, message="the bridge to count its reconnect")
    finally:
        if bridge is not None:
            bridge.stop()
            bridge.stop()  # safe twice
        server.stop()
        reset_shared_clients()


def test_two_bridges_racing_for_the_same_events_queue_each_task_once(platform: Platform, r: redis.Redis) -> None:
    """What happens when a slow bridge's events are re-claimed while it still works on them."""
    import threading

    from meetingtasks.events.reconnect import LinkClients
    from meetingtasks.events.triggers import BridgeStats, TriggerWriter

    # Given 300 events, and the same entries in the hands of two writers at once
    events = publish_events(login_events(300))
    stream = platform.keys.event_stream("user_events")
    rows = [(stream, entry_id.decode(), fields) for entry_id, fields in r.xrange(stream)]
    r.xgroup_create(stream, platform.keys.bridge_group, id="0")
    writers = [TriggerWriter(platform, BridgeStats()) for _ in range(2)]
    start = threading.Barrier(2)

    def run(writer: TriggerWriter) -> None:
        clients = LinkClients(platform.settings)
        start.wait()
        for i in range(0, len(rows), 5):  # small batches: many chances to interleave
            writer.handle(clients, rows[i:i + 5])
        clients.close()

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # Then every task was queued exactly once, and each writer saw the other's work as duplicates
    for queue in ("ai.normal", "user.normal"):
        counts = triggers_per_event(r, queue)
        assert set(counts) == {e.id for e in events} and max(counts.values()) == 1
    assert sum(w.stats.tasks for w in writers) == 600
    assert sum(w.stats.duplicates for w in writers) == 600
