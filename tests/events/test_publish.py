"""publish_event: the stream and the pub/sub channel in one round trip, capped, idempotent, validated first."""

from __future__ import annotations

import orjson
import pytest
import redis
from pydantic import BaseModel

from meetingtasks import InvalidEvent, publish_event, publish_events
from meetingtasks.core.errors import UnknownChannel, UnknownEventType
from meetingtasks.events import Event
from meetingtasks.store.platform import Platform


def stream_events(r: redis.Redis, platform: Platform, channel: str) -> list[dict[str, object]]:
    return [orjson.loads(fields[b"event"]) for _, fields in r.xrange(platform.keys.event_stream(channel))]


def test_an_event_goes_to_the_stream_and_the_pubsub_channel(platform: Platform, r: redis.Redis) -> None:
    # Given a listener on the plain channel name, as an outside service would listen
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("meeting_events")
    pubsub.get_message(timeout=1)

    # When an event is published
    event = publish_event("meeting_events", "meeting.created", {"meeting_id": "m1"}, source="meeting")

    # Then the stream holds it and the listener heard the same JSON
    assert stream_events(r, platform, "meeting_events") == [event.model_dump(mode="json")]
    message = pubsub.get_message(timeout=2)
    assert message is not None and orjson.loads(message["data"]) == event.model_dump(mode="json")
    assert event.source == "meeting" and event.channel == "meeting_events"
    pubsub.close()


def test_publishing_is_one_round_trip(platform: Platform, r: redis.Redis,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the publish script in Redis's cache (the first call on a fresh server loads it: EVALSHA, EVAL)
    publish_event("meeting_events", "meeting.created", {"meeting_id": "m0"}, source="meeting")
    # and a count of the commands and pipelines our client sends (a spy: Redis itself is real)
    sent: list[str] = []
    client = platform.redis()
    real_execute, real_pipeline = client.execute_command, client.pipeline

    def execute_command(*args: object, **kwargs: object) -> object:
        sent.append(str(args[0]))
        return real_execute(*args, **kwargs)

    def pipeline(*args: object, **kwargs: object) -> object:
        sent.append("PIPELINE")
        return real_pipeline(*args, **kwargs)

    monkeypatch.setattr(client, "execute_command", execute_command)
    monkeypatch.setattr(client, "pipeline", pipeline)

    # When one event and then a batch of 50 are published
    publish_event("meeting_events", "meeting.created", {"meeting_id": "m1"}, source="meeting")
    publish_events({"channel": "ai_events", "type": "speech_recognition.completed", "source": "ai",
                    "payload": {"n": n}} for n in range(50))

    # Then one script call and one pipeline went out, and everything arrived
    assert sent == ["EVALSHA", "PIPELINE"]
    assert r.xlen(platform.keys.event_stream("meeting_events")) == 2
    assert r.xlen(platform.keys.event_stream("ai_events")) == 50


def test_a_batch_is_validated_before_anything_is_sent(platform: Platform, r: redis.Redis) -> None:
    good = {"channel": "ai_events", "type": "speech_recognition.completed", "source": "ai", "payload": {}}
    with pytest.raises(UnknownEventType):
        publish_events([good, {**good, "type": "speech.done"}])
    assert r.dbsize() == 0


def test_the_same_event_is_appended_once(platform: Platform, r: redis.Redis) -> None:
    event = Event(channel="user_events", type="user.registered", source="user", payload={"user_id": "u1"})
    publish_events([event])
    publish_events([event])  # a retry after a lost reply
    publish_event("user_events", "user.registered", {"user_id": "u1"}, source="user", event_id=event.id)
    assert r.xlen(platform.keys.event_stream("user_events")) == 1


def test_pydantic_payloads_are_accepted(platform: Platform, r: redis.Redis) -> None:
    class Joined(BaseModel):
        meeting_id: str
        user_id: str

    event = publish_event("meeting_events", "meeting.user_joined", Joined(meeting_id="m", user_id="u"),
                          source="meeting")
    assert event.payload == {"meeting_id": "m", "user_id": "u"}


def test_bad_events_are_refused_and_nothing_is_written(platform: Platform, r: redis.Redis) -> None:
    with pytest.raises(UnknownChannel, match="unknown event channel 'meetings'"):
        publish_event("meetings", "meeting.created", {}, source="meeting")
    with pytest.raises(UnknownEventType, match=r"'meeting\.deleted' is not carried by meeting_events"):
        publish_event("meeting_events", "meeting.deleted", {}, source="meeting")
    with pytest.raises(InvalidEvent, match=r"event\.payload must be a JSON object"):
        publish_event("meeting_events", "meeting.created", ["m1"], source="meeting")
    with pytest.raises(InvalidEvent, match="not JSON-serialisable"):
        publish_event("meeting_events", "meeting.created", {"when": object()}, source="meeting")
    with pytest.raises(InvalidEvent, match=r"event\.source"):
        publish_event("meeting_events", "meeting.created", {}, source="")
    with pytest.raises(InvalidEvent, match="over max_message_bytes"):
        publish_event("meeting_events", "meeting.created", {"blob": "x" * platform.settings.max_message_bytes},
                      source="meeting")
    assert r.dbsize() == 0
