"""Every subscription of the services' table (docs/events.md) triggers its task, end to end."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from meetingtasks import publish_events
from meetingtasks.core.registry import REGISTRY
from meetingtasks.events.subscriptions import SUBSCRIPTIONS, load_subscriptions
from meetingtasks.services import SUBSCRIBERS
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status
from tests.events.conftest import queued
from tests.support.waiting import wait_for

M, U = {"meeting_id": "m1"}, {"meeting_id": "m1", "user_id": "u1"}

#: subscription -> (channel, event type, event payload, expected payloads of the triggered tasks)
CASES: dict[str, tuple[str, str, dict[str, Any], list[dict[str, Any]]]] = {
    "user:busy_in_meeting": ("meeting_events", "meeting.user_joined", U, [{**U, "status": "busy"}]),
    "user:online_after_meeting": ("meeting_events", "meeting.user_left", U, [{**U, "status": "online"}]),
    "user:enhanced_avatar": ("ai_events", "video_enhancement.completed", {"user_id": "u1", "output_ref": "blob:av"},
                             [{"user_id": "u1", "avatar_url": "blob:av"}]),
    "meeting:leave_when_offline": ("user_events", "user.status_changed", {**U, "status": "offline"}, [U]),
    "meeting:leave_when_disconnected": ("signaling_events", "webrtc.disconnected", {**U, "reason": "timeout"}, [U]),
    "meeting:archive_recording": ("media_events", "recording.stopped", {**M, "recording_ref": "blob:rec"},
                                  [{"source_ref": "blob:rec", "target_format": "mp4", **M}]),
    "meeting:analyse_transcript": ("ai_events", "speech_recognition.completed", {**M, "text": "hello all"},
                                   [{"text": "hello all", **M}]),
    "meeting:keep_transcript": ("ai_events", "speech_recognition.completed", {**M, "text": "hi", "task_id": "t1"},
                                [{"kind": "speech_recognition", "result": {"text": "hi", "task_id": "t1"}, **M}]),
    "meeting:keep_emotion": ("ai_events", "emotion_detection.completed", {**M, "label": "happy"},
                             [{"kind": "emotion_detection", "result": {"label": "happy"}, **M}]),
    "media:process_participant_stream": ("meeting_events", "meeting.user_joined", U, [{**U, "kind": "video"}]),
    "media:start_recording": ("meeting_events", "meeting.started", M, [M]),
    "media:stop_recording": ("meeting_events", "meeting.ended", M, [M]),
    "media:process_connection_stream": ("signaling_events", "webrtc.connected", {**U, "session_id": "s9"},
                                        [{**U, "stream_id": "s9"}]),
    "media:package_denoised_audio": ("ai_events", "audio_denoising.completed", {**M, "output_ref": "blob:clean"},
                                     [{"source_ref": "blob:clean", "target_format": "ogg"}]),
    "media:package_enhanced_video": ("ai_events", "video_enhancement.completed", {**M, "output_ref": "blob:hd"},
                                     [{"source_ref": "blob:hd", "target_format": "mp4", **M}]),
    "signaling:open_session": ("meeting_events", "meeting.user_joined", U,
                               [{"session_id": "m1:u1", "action": "open", **U}]),
    "signaling:close_session": ("meeting_events", "meeting.user_left", U,
                                [{"session_id": "m1:u1", "action": "close", **U}]),
    "signaling:close_meeting_sessions": ("meeting_events", "meeting.ended", {**M, "participants": ["u1", "u2"]},
                                         [{"session_id": "m1:u1", "action": "close"},
                                          {"session_id": "m1:u2", "user_id": "u2", "action": "close"}]),
    "signaling:heartbeat_from_media": ("media_events", "stream.started", U, [{"action": "heartbeat", **U}]),
    "ai:transcribe_meeting": ("meeting_events", "meeting.ended", {**M, "audio_ref": "blob:all", "language": "de-DE"},
                              [{"audio_ref": "blob:all", "language": "de-DE", **M}]),
    "ai:denoise_stream_audio": ("media_events", "stream.processed", {**M, "audio_ref": "blob:raw"},
                                [{"audio_ref": "blob:raw", **M}]),
    "ai:enhance_recording": ("media_events", "recording.stopped", {**M, "video_ref": "blob:vid"},
                             [{"video_ref": "blob:vid", **M}]),
}

#: Events a subscription must skip (it returns None), by subscription.
SKIPS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "meeting:leave_when_offline": ("user_events", "user.status_changed", {**U, "status": "away"}),
    "meeting:leave_when_disconnected": ("signaling_events", "webrtc.disconnected", {**U, "reason": "closed"}),
    "media:start_recording": ("meeting_events", "meeting.started", {**M, "record": False}),
    "user:enhanced_avatar": ("ai_events", "video_enhancement.completed", {**M, "output_ref": "blob:x"}),
}


def full_name(case: str) -> str:
    service, func = case.split(":")
    return f"meetingtasks.services.{service}.events:{func}"


def builtin_subscriptions() -> dict[str, Any]:
    load_subscriptions()
    return {s.name: s for s in SUBSCRIPTIONS.all() if s.name.startswith("meetingtasks.services.")}


def test_the_table_covers_every_subscribing_service() -> None:
    subs = builtin_subscriptions()
    # Every (channel, subscribing service) pair of the channel table (SUBSCRIBERS) has at least one subscription ...
    declared = {(s.channel, s.declared_service) for s in subs.values()}
    for channel, services in SUBSCRIBERS.items():
        for service in services:
            assert (channel, service) in declared, f"{service} does not subscribe to {channel}"
    # ... no service subscribes where the channel table says it does not, and every subscription has a test case
    assert declared <= {(c, s) for c, services in SUBSCRIBERS.items() for s in services}
    assert set(subs) == {full_name(case) for case in CASES}


def test_every_subscription_triggers_its_task(platform: Platform, r: redis.Redis, make_bridge) -> None:
    subs = builtin_subscriptions()
    # Given a running bridge, when one event per subscription is published
    bridge = make_bridge()
    events = publish_events({"channel": ch, "type": et, "source": "test", "payload": p}
                            for ch, et, p, _ in CASES.values())
    wait_for(lambda: bridge.stats.events == len(events), 30, message="every event handled")

    # Then each subscription queued its task(s) under their deterministic ids, with the mapped payloads
    problems = []
    for (case, (_, _, _, expected)), event in zip(CASES.items(), events, strict=True):
        sub = subs[full_name(case)]
        spec = REGISTRY.get(sub.task_type)
        on_queue = {m["id"]: m for m in queued(r, f"{spec.service}.{(sub.priority or spec.priority).value}")}
        for index, want in enumerate(expected):
            task_id = sub.task_id(event.id, index)
            record = platform.status.get(r, task_id)
            message = on_queue.get(task_id)
            if record is None or record.status is not Status.QUEUED or message is None:
                problems.append(f"{case}: task {index} ({sub.task_type}) not queued")
            elif message["task"] != sub.task_type or any(message["payload"].get(k) != v for k, v in want.items()):
                problems.append(f"{case}: queued {message['task']} {message['payload']}, expected {want}")
        if platform.status.get(r, sub.task_id(event.id, len(expected))) is not None:
            problems.append(f"{case}: more than {len(expected)} tasks")
    assert not problems, "\n".join(problems)
    assert platform.dead_letters.list(r) == []


def test_subscriptions_skip_events_that_do_not_concern_them(platform: Platform, r: redis.Redis,
                                                           make_bridge) -> None:
    subs = builtin_subscriptions()
    bridge = make_bridge()
    events = publish_events({"channel": ch, "type": et, "source": "test", "payload": p}
                            for ch, et, p in SKIPS.values())
    wait_for(lambda: bridge.stats.events == len(events), 30, message="every event handled")
    for case, event in zip(SKIPS, events, strict=True):
        assert platform.status.get(r, subs[full_name(case)].task_id(event.id)) is None, case


@pytest.mark.slow
def test_triggered_tasks_run_on_a_real_worker(platform: Platform, r: redis.Redis, start_bridge,
                                             start_worker) -> None:
    # Given a bridge process and an ai worker that both load the test subscriptions and task types
    start_bridge()
    start_worker("ai", env_overrides={"MEETINGTASKS_INCLUDE": "tests.support.tasks,tests.support.event_tasks"})

    # When an event is published
    events = publish_events([{"channel": "user_events", "type": "user.logged_in", "source": "test",
                              "payload": {"n": n}} for n in range(3)])

    # Then the worker runs each triggered ai task once, to SUCCEEDED
    sub = SUBSCRIPTIONS.get("tests.support.event_tasks:probe_a")
    ids = [sub.task_id(e.id) for e in events]

    def succeeded() -> bool:
        return all((rec := platform.status.get(r, i)) is not None and rec.status is Status.SUCCEEDED for i in ids)

    wait_for(succeeded, 60, message="the triggered tasks to succeed on the worker")
    assert sorted(x.decode() for x in r.lrange("test:event:ran", 0, -1)) == sorted(f"a|{e.id}" for e in events)
