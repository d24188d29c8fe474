"""Live subscribers hear pub/sub channels and come back by themselves after Redis drops them."""

from __future__ import annotations

import asyncio
import threading
import time

import redis

from meetingtasks import publish_event
from meetingtasks.events import AsyncLiveSubscriber, LiveMessage, LiveSubscriber
from meetingtasks.store.platform import Platform
from tests.support.waiting import wait_for


def test_a_live_subscriber_hears_events_and_any_other_channel(platform: Platform, r: redis.Redis) -> None:
    # Given a subscriber on an event channel, the status channel and a pattern
    heard: list[LiveMessage] = []
    sub = LiveSubscriber(platform, ["meeting_events", platform.keys.status_channel], patterns=["probe:*"],
                         callback=heard.append).start()
    try:
        assert sub.wait_ready(10)

        # When an event is published, a status message and a pattern match arrive
        event = publish_event("meeting_events", "meeting.created", {"meeting_id": "m1"}, source="meeting")
        r.publish(platform.keys.status_channel, b'{"op": "status", "id": "t1", "status": "QUEUED"}')
        r.publish("probe:one", b"1")

        # Then the callback gets each one, the event readable as an Event
        wait_for(lambda: len(heard) == 3, 10, message="three messages")
        assert heard[0].channel == "meeting_events" and heard[0].event() == event
        assert heard[1].json()["id"] == "t1"
        assert (heard[2].channel, heard[2].pattern, heard[2].data) == ("probe:one", "probe:*", b"1")
    finally:
        sub.stop()
        sub.stop()  # safe twice


def test_a_failing_callback_is_counted_and_the_subscriber_goes_on(platform: Platform, r: redis.Redis) -> None:
    heard: list[bytes] = []

    def callback(message: LiveMessage) -> None:
        if message.data == b"bad":
            raise ValueError("cannot handle this one")
        heard.append(message.data)

    sub = LiveSubscriber(platform, ["probe"], callback=callback).start()
    try:
        assert sub.wait_ready(10)
        for data in (b"bad", b"good"):
            r.publish("probe", data)
        wait_for(lambda: heard == [b"good"], 10, message="the good message")
        assert sub.failed == 1 and sub.received == 2
    finally:
        sub.stop()


def test_channels_can_be_added_and_removed_while_running(platform: Platform, r: redis.Redis) -> None:
    heard: list[str] = []
    sub = LiveSubscriber(platform, ["one"], callback=lambda m: heard.append(m.channel)).start()
    try:
        assert sub.wait_ready(10)
        sub.subscribe("two")
        wait_for(lambda: r.pubsub_numsub("two")[0][1] == 1, 10, message="the new subscription")
        sub.unsubscribe("one")
        wait_for(lambda: r.pubsub_numsub("one")[0][1] == 0, 10, message="the unsubscription")
        r.publish("one", b"x")
        r.publish("two", b"y")
        wait_for(lambda: heard == ["two"], 10, message="only the second channel")
    finally:
        sub.stop()


def test_a_live_subscriber_resumes_after_its_connection_is_killed(platform: Platform, r: redis.Redis) -> None:
    # Given a subscriber that is told when it reconnected
    heard: list[bytes] = []
    reconnected = threading.Event()
    sub = LiveSubscriber(platform, ["probe"], callback=lambda m: heard.append(m.data),
                         on_reconnect=reconnected.set).start()
    try:
        assert sub.wait_ready(10)

        # When Redis drops every pub/sub connection
        assert int(r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")) >= 1
        killed_at = time.monotonic()

        # Then within 5 s it is subscribed again and hears new messages, without a restart
        def heard_again() -> bool:
            r.publish("probe", b"after")
            return b"after" in heard

        wait_for(heard_again, 5, interval_s=0.05, message="a message after the kill")
        assert time.monotonic() - killed_at < 5
        assert reconnected.wait(1) and sub.reconnects == 1
    finally:
        sub.stop()


def test_the_async_subscriber_iterates_and_resumes_after_a_kill(platform: Platform, r: redis.Redis) -> None:
    async def scenario() -> None:
        reconnected = asyncio.Event()
        async with AsyncLiveSubscriber(platform, [platform.keys.status_channel],
                                       on_reconnect=reconnected.set) as sub:
            # Given a subscriber iterating the status channel
            r.publish(platform.keys.status_channel, b'{"id": "t1"}')
            first = await sub.get(timeout_s=5)
            assert first is not None and first.json() == {"id": "t1"}

            # When Redis drops the pub/sub connection
            assert int(r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")) >= 1
            loop = asyncio.get_running_loop()
            killed_at = loop.time()

            # Then within 5 s the iteration goes on with new messages
            message = None
            while message is None and loop.time() - killed_at < 5:
                r.publish(platform.keys.status_channel, b'{"id": "t2"}')
                message = await sub.get(timeout_s=0.1)
            assert message is not None and message.json() == {"id": "t2"}
            assert reconnected.is_set() and sub.reconnects == 1
            r.publish(platform.keys.status_channel, b'{"id": "t3"}')
            async for later in sub:  # the iterator form
                if later.json() == {"id": "t3"}:
                    break

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_live_subscriber_waits_out_a_redis_restart(tmp_path, settings) -> None:
    from meetingtasks.operations.embedded import RedisServer

    # Given a subscriber on a Redis of its own
    server = RedisServer(tmp_path / "redis").start()
    platform = Platform(settings.model_copy(update={"redis_url": server.url, "reconnect_backoff_max_s": 0.5}))
    heard: list[bytes] = []
    sub = LiveSubscriber(platform, ["probe"], callback=lambda m: heard.append(m.data)).start()
    client = redis.Redis.from_url(server.url)
    try:
        assert sub.wait_ready(10)

        # When Redis is killed and started again on the same port
        server.restart(kill=True)

        # Then the subscriber is back on its channel without a restart
        def heard_again() -> bool:
            try:
                client.publish("probe", b"back")
            except redis.ConnectionError:
                return False
            return b"back" in heard

        wait_for(heard_again, 15, interval_s=0.1, message="a message after the restart")
        assert sub.reconnects >= 1
    finally:
        sub.stop()
        client.close()
        server.stop()
