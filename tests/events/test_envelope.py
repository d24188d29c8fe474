"""The event envelope: what is accepted, what is refused with which message, and that it survives the wire."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meetingtasks.core.errors import InvalidEvent, UnknownChannel, UnknownEventType
from meetingtasks.events import CHANNELS
from meetingtasks.events.envelope import EXTERNAL_SOURCE, Event, build_event, parse_event, parse_foreign

channel_and_type = st.sampled_from([(c, t) for c, types in CHANNELS.items() for t in types])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
payloads = st.dictionaries(st.text(max_size=12), json_values, max_size=6)
ids = st.text(alphabet=st.characters(blacklist_categories=("Zs", "Cc", "Zl", "Zp", "Cs")), min_size=1,
              max_size=64).filter(lambda s: not any(c.isspace() for c in s))
traceparents = st.builds(lambda t, s, f: f"00-{t:032x}-{s:016x}-{f:02x}",
                         st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.integers(0, 255))


@pytest.mark.slow
@given(channel_and_type, payloads, ids, st.floats(0, 4e9), st.text(min_size=1, max_size=30), traceparents)
def test_an_event_survives_the_wire(ct: tuple[str, str], payload: dict[str, object], event_id: str, when: float,
                                    source: str, traceparent: str) -> None:
    channel, event_type = ct
    event = build_event({"id": event_id, "channel": channel, "type": event_type, "source": source, "time": when,
                         "payload": payload, "trace": {"traceparent": traceparent}})
    assert parse_event(event.to_json()) == event
    # What an outside publisher sends is read the same way when it is complete
    assert parse_foreign(event.to_json(), channel) == event


@given(channel_and_type, payloads)
def test_an_outside_event_without_id_gets_the_same_id_from_every_bridge(ct: tuple[str, str],
                                                                      payload: dict[str, object]) -> None:
    channel, event_type = ct
    raw = orjson.dumps({"type": event_type, "payload": payload})
    first, second = parse_foreign(raw, channel), parse_foreign(raw, channel)
    assert first.id == second.id
    assert first.channel == channel and first.source == EXTERNAL_SOURCE and first.payload == payload
    other = parse_foreign(orjson.dumps({"type": event_type, "payload": {**payload, "_x": 1}}), channel)
    assert other.id != first.id


@given(st.text(max_size=30).filter(lambda c: c not in CHANNELS), st.text(max_size=30))
def test_unknown_channels_are_refused(channel: str, event_type: str) -> None:
    with pytest.raises(UnknownChannel, match="unknown event channel"):
        build_event({"channel": channel, "type": event_type, "source": "x"})


@given(channel_and_type, st.text(max_size=30))
def test_event_types_of_another_channel_are_refused(ct: tuple[str, str], event_type: str) -> None:
    channel, _ = ct
    if event_type in CHANNELS[channel]:
        return
    with pytest.raises(UnknownEventType, match=f"is not carried by {channel}"):
        build_event({"channel": channel, "type": event_type, "source": "x"})


def test_errors_name_the_field_and_suggest_the_right_name() -> None:
    with pytest.raises(UnknownChannel, match="did you mean 'meeting_events'"):
        build_event({"channel": "meeting_event", "type": "meeting.created", "source": "x"})
    with pytest.raises(UnknownEventType, match=r"did you mean 'meeting\.user_joined'"):
        build_event({"channel": "meeting_events", "type": "meeting.user_join", "source": "x"})
    with pytest.raises(InvalidEvent, match=r"event\.payload: Input should be a valid dictionary"):
        build_event({"channel": "meeting_events", "type": "meeting.created", "source": "x", "payload": [1]})
    with pytest.raises(InvalidEvent, match=r"event\.paylaod: Extra inputs are not permitted"):
        build_event({"channel": "meeting_events", "type": "meeting.created", "source": "x", "paylaod": {}})
    with pytest.raises(InvalidEvent, match=r"event\.source: Field required"):
        build_event({"channel": "meeting_events", "type": "meeting.created"})
    with pytest.raises(InvalidEvent, match=r"event\.trace: .*traceparent 'abc' is not W3C"):
        build_event({"channel": "meeting_events", "type": "meeting.created", "source": "x",
                     "trace": {"traceparent": "abc"}})
    with pytest.raises(InvalidEvent, match=r"event\.id: String should match pattern"):
        build_event({"channel": "meeting_events", "type": "meeting.created", "source": "x", "id": "a b"})
    with pytest.raises(InvalidEvent, match="not JSON"):
        parse_event(b"{")
    with pytest.raises(InvalidEvent, match="it names channel 'ai_events'"):
        parse_foreign(b'{"channel": "ai_events", "type": "speech_recognition.completed"}', "media_events")
    for error in (InvalidEvent, UnknownChannel, UnknownEventType):
        assert issubclass(error, ValueError)


def test_time_is_epoch_seconds_and_iso_8601_is_accepted() -> None:
    event = build_event({"channel": "ai_events", "type": "speech_recognition.completed", "source": "x",
                         "time": "2026-01-02T03:04:05Z"})
    assert event.time == 1767323045.0
    naive = build_event({"channel": "ai_events", "type": "speech_recognition.completed", "source": "x",
                         "time": "2026-01-02T03:04:05"})
    assert naive.time == event.time  # a time without zone is UTC
    with pytest.raises(InvalidEvent, match=r"event\.time"):
        build_event({"channel": "ai_events", "type": "speech_recognition.completed", "source": "x",
                     "time": "yesterday"})


def test_a_new_event_gets_an_id_and_the_current_time() -> None:
    first = Event(channel="user_events", type="user.registered", source="user")
    second = Event(channel="user_events", type="user.registered", source="user")
    assert first.id != second.id and first.time > 1.7e9 and first.payload == {} and first.trace == {}
