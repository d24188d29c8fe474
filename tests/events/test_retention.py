"""Event streams keep every event until every consumer group has acknowledged it.

Publishing never trims; ``maintenance_trim_streams`` (run by a real user worker here, or called directly)
removes only what every group of a stream has acknowledged, and a stream past its hard cap
(``stream_maxlen``) is reported in the log, the exporter and ``meetingtasks stats``, and kept whole.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.events.publisher import EventPublisher
from meetingtasks.events.retention import trim_streams
from meetingtasks.operations.embedded import free_port
from meetingtasks.store.platform import Platform
from meetingtasks.worker.maintenance import NoPayload, maintenance_trim_streams
from tests.events.conftest import triggers_per_event
from tests.ops.conftest import scrape, value
from tests.support.processes import ROOT, PartProcess
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

CAP = 50


def small_cap(platform: Platform, cap: int = CAP, **more: Any) -> Platform:
    return Platform(platform.settings.model_copy(update={"stream_maxlen": cap, **more}))


def publish_logins(platform: Platform, count: int, start: int = 0) -> set[str]:
    publisher = EventPublisher(platform)
    events = publisher.publish_many({"channel": "user_events", "type": "user.logged_in", "source": "test",
                                     "payload": {"n": n}} for n in range(start, start + count))
    return {event.id for event in events}


def stream_ids(platform: Platform, r: redis.Redis) -> list[str]:
    return [eid.decode() for eid, _ in r.xrange(platform.keys.event_stream("user_events"))]


def event_ids_in_stream(platform: Platform, r: redis.Redis) -> set[str]:
    return {orjson.loads(f[b"event"])["id"] for _, f in r.xrange(platform.keys.event_stream("user_events"))}


def pending(platform: Platform, r: redis.Redis, group: str | None = None) -> int:
    stream = platform.keys.event_stream("user_events")
    return int(r.xpending(stream, group or platform.keys.bridge_group)["pending"])


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """Most tests here are about trimming what every group acknowledged: no replay window for them (the
    window has its own tests at the end)."""
    return {**env, "MEETINGTASKS_EVENT_REPLAY_RETENTION_S": "0"}


@pytest.fixture
def exporter_with_cap(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """A ``meetingtasks exporter`` subprocess with ``stream_maxlen=CAP``; yields its metrics URL."""
    port = free_port()
    proc = PartProcess(PartProcess.cli("exporter", "--port", str(port)),
                       {**env, "MEETINGTASKS_STREAM_MAXLEN": str(CAP)}, tmp_path / "exporter.log")
    try:
        proc.wait_log("exporter ready")
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        proc.stop()


def trim_with_a_worker(start_worker: Callable[..., WorkerProcess], platform: Platform,
                       cap: int = CAP) -> tuple[WorkerProcess, dict[str, Any]]:
    """Run ``maintenance_trim_streams`` on a real ``user`` worker whose settings have ``stream_maxlen=cap``."""
    worker = start_worker("user", env_overrides={"MEETINGTASKS_STREAM_MAXLEN": str(cap)})
    result = Dispatcher(platform).dispatch("maintenance_trim_streams", {}).wait(timeout=60)
    assert isinstance(result, dict)
    return worker, result


def test_publishing_never_trims_a_stream(platform: Platform, r: redis.Redis) -> None:
    # Given a stream cap of 10 and no bridge
    publisher = EventPublisher(small_cap(platform, 10))
    # When 2,000 events are published
    publisher.publish_many({"channel": "media_events", "type": "stream.processed", "source": "media",
                            "payload": {"n": n}} for n in range(2000))
    # Then all of them are in the stream: nobody has read them yet
    assert r.xlen(platform.keys.event_stream("media_events")) == 2000


@pytest.mark.slow
def test_a_bridge_outage_longer_than_the_cap_loses_no_event(platform: Platform, r: redis.Redis, start_bridge,
                                                            start_worker) -> None:
    # Given a bridge that ran once (its group exists on every stream) and then stopped
    start_bridge().stop()
    # When six times the cap of events is published while it is down, and the maintenance trim runs
    ids = publish_logins(small_cap(platform), CAP * 6)
    worker, result = trim_with_a_worker(start_worker, platform)
    worker.stop()

    # Then nothing unread was trimmed
    assert result["trimmed"] == 0
    assert event_ids_in_stream(platform, r) == ids
    # And once the bridge is back, every event triggers its task, once
    start_bridge()
    wait_for(lambda: r.llen("ai.normal") >= len(ids), 60, message="a task for every event")
    wait_for(lambda: pending(platform, r) == 0, 30, message="every event acknowledged")
    counts = triggers_per_event(r, "ai.normal")
    assert set(counts) == ids and max(counts.values()) == 1
    # And the next trim removes them all: every group acknowledged them
    assert sum(t.trimmed for t in trim_streams(small_cap(platform))) == len(ids)
    assert r.xlen(platform.keys.event_stream("user_events")) == 0


def test_the_trim_keeps_what_the_bridge_has_not_acknowledged(platform: Platform, r: redis.Redis,
                                                             make_bridge) -> None:
    # Given a bridge that will not re-claim a failed event during the test
    bridge = make_bridge(bridge_claim_idle_s=3600)
    # When it handles three events, then one whose subscription fails once, then three more
    before = publish_logins(platform, 3)
    wait_for(lambda: bridge.stats.events == 3, 20, message="three events acknowledged")
    flaky = EventPublisher(platform).publish("user_events", "user.registered", {"fail_times": 1}, source="test")
    wait_for(lambda: bridge.stats.failures == 1, 20, message="the flaky subscription to fail")
    after = publish_logins(platform, 3, start=3)
    wait_for(lambda: bridge.stats.events == 6, 20, message="the three later events acknowledged")
    assert pending(platform, r) == 1

    # And the trim runs
    (user_events,) = [t for t in trim_streams(platform) if t.channel == "user_events"]

    # Then it removed the three acknowledged before the unacknowledged one, and kept it and what follows
    assert user_events.trimmed == 3
    assert event_ids_in_stream(platform, r) == {flaky.id, *after}
    assert not before & event_ids_in_stream(platform, r)
    bridge.stop()

    # And when a bridge re-claims it and it succeeds, the next trim empties the stream
    make_bridge()
    wait_for(lambda: pending(platform, r) == 0, 30, message="the flaky event handled")
    trim_streams(platform)
    assert r.xlen(platform.keys.event_stream("user_events")) == 0


def test_two_groups_the_trim_stops_at_the_slower_one(platform: Platform, r: redis.Redis, make_bridge) -> None:
    # Given ten events, read and acknowledged by the bridge
    stream = platform.keys.event_stream("user_events")
    bridge = make_bridge()
    publish_logins(platform, 10)
    wait_for(lambda: bridge.stats.events == 10, 20, message="the bridge to acknowledge all ten")
    ids = stream_ids(platform, r)
    # And a second group (an analytics reader) that has read six and acknowledged the first three
    r.xgroup_create(stream, "analytics", id="0")
    r.xreadgroup("analytics", "a1", {stream: ">"}, count=6)
    r.xack(stream, "analytics", *ids[:3])

    # When the trim runs: it stops at the slower group's oldest pending entry
    trim_streams(platform)
    assert stream_ids(platform, r) == ids[3:]

    # When the analytics group acknowledges the rest of what it read: it stops after its last-delivered entry
    r.xack(stream, "analytics", *ids[3:6])
    trim_streams(platform)
    assert stream_ids(platform, r) == ids[6:]

    # When it reads and acknowledges everything: the stream is empty
    r.xreadgroup("analytics", "a1", {stream: ">"}, count=100)
    r.xack(stream, "analytics", *ids[6:])
    trim_streams(platform)
    assert r.xlen(stream) == 0


def test_a_stream_without_a_group_keeps_its_retention_window(platform: Platform, r: redis.Redis, make_bridge,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    # Given a stream no bridge has read yet (no group): one entry from 1970, written by a foreign producer,
    # and a hundred fresh events
    stream = platform.keys.event_stream("user_events")
    r.xadd(stream, {"event": orjson.dumps({"id": "ancient", "type": "user.logged_in", "payload": {}})}, id="1000-0")
    ids = publish_logins(platform, 100)

    # When the trim runs
    with caplog.at_level(logging.WARNING, logger="meetingtasks.events.retention"):
        trim_streams(platform)

    # Then only the entry older than the retention window is gone, and the log says so
    assert event_ids_in_stream(platform, r) == ids
    assert "removed 1 events of mt:events:user_events older than" in caplog.text
    assert "no consumer group reads this stream" in caplog.text
    # And a bridge that starts now handles all the rest
    make_bridge()
    wait_for(lambda: r.llen("ai.normal") >= 100, 30, message="a task for each event")
    assert set(triggers_per_event(r, "ai.normal")) == ids


def stats_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meetingtasks.cli", "stats", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_past_the_hard_cap_the_stream_is_kept_and_the_warning_is_everywhere(
    platform: Platform, r: redis.Redis, env: dict[str, str], start_bridge, start_worker, exporter_with_cap: str,
) -> None:
    capped = {**env, "MEETINGTASKS_STREAM_MAXLEN": str(CAP)}
    url = exporter_with_cap
    # Given a bridge that ran once and stopped
    start_bridge().stop()

    # When twice the cap of events is published and the maintenance trim runs on a worker
    ids = publish_logins(platform, CAP * 2)
    worker, result = trim_with_a_worker(start_worker, platform)

    # Then the policy holds: nothing unacknowledged is removed, and publishing still works
    assert result["trimmed"] == 0 and result["over_cap"] == ["user_events"]
    ids |= publish_logins(platform, 1, start=CAP * 2)
    assert event_ids_in_stream(platform, r) == ids
    # And the worker's log says so
    wait_for(lambda: "event stream mt:events:user_events holds 100 events, over its cap stream_maxlen=50" in
             worker.log(), 10, message="the warning in the worker's log")
    assert "nothing unacknowledged is dropped" in worker.log()
    # And the exporter
    samples = scrape(url)
    assert value(samples, "meetingtasks_event_stream_over_cap", channel="user_events") == 1
    assert value(samples, "meetingtasks_event_stream_over_cap", channel="ai_events") == 0
    assert value(samples, "meetingtasks_event_stream_cap", channel="user_events") == CAP
    # And `meetingtasks stats`, as a table and as JSON (the rows on stdout unchanged, the warning on stderr)
    table = stats_cli(capped)
    assert table.returncode == 0, table.stderr
    assert "user_events" in table.stdout and "OVER CAP" in table.stdout
    as_json = stats_cli(capped, "--json")
    assert as_json.returncode == 0 and len(json.loads(as_json.stdout)) == 20
    assert "warning: event stream mt:events:user_events holds 101 events, over its cap stream_maxlen=50" \
        in as_json.stderr

    # When the bridge is back and the trim runs again
    start_bridge()
    wait_for(lambda: r.llen("ai.normal") >= len(ids), 60, message="a task for every event")
    wait_for(lambda: pending(platform, r) == 0, 30, message="every event acknowledged")
    result = Dispatcher(platform).dispatch("maintenance_trim_streams", {}).wait(timeout=60)

    # Then every event triggered, the stream is empty and the warning is gone
    assert set(triggers_per_event(r, "ai.normal")) == ids
    assert isinstance(result, dict) and result["trimmed"] == len(ids) and result["over_cap"] == []
    assert value(scrape(url), "meetingtasks_event_stream_over_cap", channel="user_events") == 0
    assert "warning" not in stats_cli(capped, "--json").stderr


def test_the_maintenance_task_reports_what_it_trimmed(platform: Platform, r: redis.Redis, make_bridge) -> None:
    # Given 20 events handled by a bridge
    bridge = make_bridge()
    publish_logins(platform, 20)
    wait_for(lambda: bridge.stats.events == 20, 20, message="the bridge to handle them")
    # When the task's function runs in this process (as a worker would)
    result = maintenance_trim_streams(NoPayload())
    # Then it names how many entries it removed, per channel too
    assert result["trimmed"] == 20 and result["channels"]["user_events"]["trimmed"] == 20
    assert result["channels"]["user_events"]["length"] == 0


def test_a_pending_event_deleted_from_the_stream_is_reported_and_does_not_hold_the_trim(
    platform: Platform, r: redis.Redis, make_bridge, caplog: pytest.LogCaptureFixture,
) -> None:
    # Given an event whose subscription failed (pending in the bridge's group), then deleted by hand (XDEL)
    stream = platform.keys.event_stream("user_events")
    first = make_bridge(bridge_claim_idle_s=3600)
    EventPublisher(platform).publish("user_events", "user.registered", {"fail_times": 5}, source="test")
    wait_for(lambda: first.stats.failures == 1, 20, message="the subscription to fail")
    (entry_id,) = stream_ids(platform, r)
    r.xdel(stream, entry_id)
    first.stop()
    # And ten later events, handled
    ids = publish_logins(platform, 10)
    # While it is pending it holds the trim (its id is the oldest some group needs)
    trim_streams(platform)
    assert event_ids_in_stream(platform, r) == ids

    # When a bridge re-claims what is pending
    with caplog.at_level(logging.WARNING, logger="meetingtasks.events.bridge"):
        second = make_bridge()
        wait_for(lambda: pending(platform, r) == 0 and second.stats.events >= 10, 30,
                 message="the deleted entry acknowledged and the others handled")

    # Then the log says an event was deleted before being handled, and the trim is no longer held
    assert f"1 events of {stream} were deleted from the stream before being handled" in caplog.text
    trim_streams(platform)
    assert r.xlen(stream) == 0


def test_the_trim_script_compares_ids_as_numbers(platform: Platform, r: redis.Redis) -> None:
    # Given entries whose ids differ in their number of digits (as text, "10-0" sorts before "9-5")
    stream = platform.keys.event_stream("user_events")
    for entry_id in ("9-5", "10-0", "10-9", "10-10", "100-0"):
        r.xadd(stream, {"event": b"{}"}, id=entry_id)
    # And two groups: one has read and acknowledged up to 10-9, the other up to 9-5
    r.xgroup_create(stream, "fast", id="10-9")
    r.xgroup_create(stream, "slow", id="9-5")
    # When the trim runs, then only 9-5 goes (everything up to the slower group's last-delivered entry)
    (user_events,) = [t for t in trim_streams(platform) if t.channel == "user_events"]
    assert (user_events.trimmed, user_events.min_id) == (1, "9-6")
    assert stream_ids(platform, r) == ["10-0", "10-9", "10-10", "100-0"]
    # When the slower group catches up to 10-9: the entries up to it go, 10-10 stays
    r.xgroup_setid(stream, "slow", id="10-9")
    trim_streams(platform)
    assert stream_ids(platform, r) == ["10-10", "100-0"]


def test_acknowledged_events_stay_for_replay_within_the_window_and_the_cap(
    platform: Platform, r: redis.Redis, make_bridge
) -> None:
    # Given a replay window of an hour and 30 events handled and acknowledged by a bridge
    bridge = make_bridge()
    ids = publish_logins(platform, 30)
    wait_for(lambda: bridge.stats.events == 30, 20, message="the bridge to acknowledge all thirty")
    keep = Platform(platform.settings.model_copy(update={"event_replay_retention_s": 3600}))
    # When the trim runs: they stay, for `meetingtasks events replay`
    assert sum(t.trimmed for t in trim_streams(keep)) == 0
    assert event_ids_in_stream(platform, r) == ids
    # When the stream is over the cap of 20: the oldest acknowledged ones go, down to the cap
    entries = stream_ids(platform, r)
    capped = Platform(keep.settings.model_copy(update={"stream_maxlen": 20}))
    (user_events,) = [t for t in trim_streams(capped) if t.channel == "user_events"]
    assert (user_events.trimmed, user_events.length) == (10, 20)
    assert stream_ids(platform, r) == entries[10:]
    # When the window is over (a window of 0): every acknowledged one goes
    gone = Platform(platform.settings.model_copy(update={"event_replay_retention_s": 0}))
    trim_streams(gone)
    assert r.xlen(platform.keys.event_stream("user_events")) == 0


def test_the_replay_window_never_removes_what_a_group_still_needs(platform: Platform, r: redis.Redis) -> None:
    # Given 30 entries of which a group has read only the first 5, and a cap of 10 for replay
    stream = platform.keys.event_stream("user_events")
    publish_logins(platform, 30)
    r.xgroup_create(stream, "slow", id="0")
    r.xreadgroup("slow", "s1", {stream: ">"}, count=5)
    r.xack(stream, "slow", *stream_ids(platform, r)[:5])
    capped = Platform(platform.settings.model_copy(update={"event_replay_retention_s": 3600, "stream_maxlen": 10}))
    # When the trim runs: only acknowledged entries go; the 25 the group still needs stay, over the cap
    (user_events,) = [t for t in trim_streams(capped) if t.channel == "user_events"]
    assert (user_events.trimmed, user_events.length) == (5, 25)
