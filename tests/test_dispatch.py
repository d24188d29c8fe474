"""Given the routing table, dispatch validates before queuing and routes to the right queue."""

from __future__ import annotations

import pytest
import redis

from meetingtasks import InvalidPayload, MessageTooLarge, Priority, UnknownTaskType, dispatch, dispatch_batch
from meetingtasks.core.message import loads
from meetingtasks.core.registry import REGISTRY, load_builtin_types
from meetingtasks.services import SERVICES
from meetingtasks.store.platform import Platform

DESIGN_TYPES = {
    "user": {"user_register", "user_login", "user_profile_update", "user_status_change"},
    "meeting": {"meeting_create", "meeting_end", "meeting_user_join", "meeting_user_leave"},
    "media": {"media_stream_process", "media_recording_start", "media_recording_stop", "media_transcode"},
    "signaling": {"signaling_webrtc_offer", "signaling_webrtc_answer", "signaling_ice_candidate",
                  "signaling_connection_manage"},
    "ai": {"speech_recognition", "emotion_detection", "audio_denoising", "video_enhancement"},
}


def test_routing_table_has_the_twenty_design_types() -> None:
    load_builtin_types()
    for service in SERVICES:
        names = {s.name for s in REGISTRY.for_service(service)}
        assert DESIGN_TYPES[service] <= names, DESIGN_TYPES[service] - names
        # Besides the meeting system's twenty types a service may only carry the platform's periodic jobs.
        extra = {n for n in names - DESIGN_TYPES[service] if not n.startswith(("t_", "bench_", "soak_"))}
        assert all(REGISTRY.get(n).handler.__module__.startswith(("meetingtasks.", "beat")) for n in extra), extra


def test_dispatch_routes_to_the_type_default_priority_queue(platform: Platform, r: redis.Redis) -> None:
    handle = dispatch("user_login", {"username": "ann", "password": "pw"})
    assert r.llen("user.high") == 1
    envelope = loads(r.lindex("user.high", 0))
    assert envelope["headers"]["id"] == handle.id
    assert envelope["headers"]["task"] == "user_login"
    assert envelope["properties"]["delivery_info"]["routing_key"] == "user.high"
    assert handle.status() == "QUEUED"


def test_dispatch_with_explicit_priority(platform: Platform, r: redis.Redis) -> None:
    dispatch("user_login", {"username": "ann", "password": "pw"}, priority=Priority.CRITICAL)
    dispatch("user_login", {"username": "ann", "password": "pw"}, priority="low")
    assert (r.llen("user.critical"), r.llen("user.low"), r.llen("user.high")) == (1, 1, 0)


def test_invalid_payload_is_refused_naming_the_field(platform: Platform, r: redis.Redis) -> None:
    with pytest.raises(InvalidPayload, match=r"payload\.email"):
        dispatch("user_register", {"username": "ann", "email": "not-an-email", "password": "longenough"})
    with pytest.raises(ValueError, match=r"payload\.password"):
        dispatch("user_register", {"username": "ann", "email": "a@b.co"})
    assert r.dbsize() == 0, "nothing may be queued or recorded for a refused dispatch"


def test_integers_json_cannot_carry_are_refused_before_anything_is_queued(platform: Platform, r: redis.Redis) -> None:
    with pytest.raises(InvalidPayload, match="64 bits"):
        dispatch("t_echo", {"tag": "big", "fail_times": 2**70})
    with pytest.raises(InvalidPayload, match="64 bits"):
        dispatch_batch([("t_echo", {"tag": "ok"}), ("t_echo", {"tag": "big", "fail_times": -(2**70)})])
    assert r.dbsize() == 0


def test_unknown_type_lists_known_ones(platform: Platform) -> None:
    with pytest.raises(UnknownTaskType, match="did you mean 'user_login'") as info:
        dispatch("user_logn", {})
    assert "meeting_create" in str(info.value)


def test_oversized_payload_is_refused_with_sizes(platform: Platform, r: redis.Redis) -> None:
    big = "x" * (platform.settings.max_message_bytes + 10)
    with pytest.raises(MessageTooLarge, match=r"over the limit of \d+ bytes"):
        dispatch("t_echo", {"tag": big})
    assert r.dbsize() == 0


def test_unknown_priority_is_a_clear_error(platform: Platform) -> None:
    with pytest.raises(ValueError, match="unknown priority 'urgent'"):
        dispatch("user_login", {"username": "a", "password": "b"}, priority="urgent")


def test_dispatch_after_redis_lost_its_scripts_queues_exactly_once(platform: Platform, r: redis.Redis) -> None:
    dispatch("user_login", {"username": "ann", "password": "pw"})
    r.script_flush()
    handle = dispatch("user_login", {"username": "bob", "password": "pw"})
    assert r.llen("user.high") == 2
    assert handle.status() == "QUEUED"


def test_dispatch_leaves_a_wake_token_for_idle_workers_of_the_service(platform: Platform, r: redis.Redis) -> None:
    dispatch("user_login", {"username": "ann", "password": "pw"})
    dispatch("t_echo", {"tag": "x"}, delay=60)  # a delayed task wakes nobody until it is due
    assert (r.llen(platform.keys.wake("user")), r.llen(platform.keys.wake("ai"))) == (1, 0)


def test_a_batch_whose_connection_falls_due_for_its_health_check_mid_batch_is_queued_whole(
        platform: Platform, r: redis.Redis) -> None:
    # Given the dispatcher's connection, whose health check (a PING redis-py sends before a command once 10 s have
    # passed since it last read a reply) falls due between the sends of one batch: one enqueue script call per
    # 500 tasks, replies read after the last
    pool = platform.redis().connection_pool
    conn = pool.get_connection()
    conn.connect()
    conn.health_check_interval = 1e-9  # due before every send, as 10 s are at one moment of a batch
    conn.next_health_check = 0.0
    pool.release(conn)
    # When a batch of 1,200 tasks is dispatched
    handles = dispatch_batch([("t_echo", {"tag": str(i)}) for i in range(1200)])
    # Then every task is queued, once
    assert len({h.id for h in handles}) == 1200
    assert sum(r.llen(q) for q in ("ai.critical", "ai.high", "ai.normal", "ai.low")) == 1200
