"""Hostile review of `meetingtasks events replay` (the documented form: "T: epoch seconds, ISO 8601 or a stream
id"): times that are read as something else and replay another window without a word."""

from __future__ import annotations

import json

import pytest
import redis

from meetingtasks.events.envelope import Event
from meetingtasks.store.platform import Platform
from tests.events.conftest import EVENT_TASKS
from tests.events.test_replay import PROBE_A, cli, logins


@pytest.mark.slow
@pytest.mark.parametrize("since", ["2000-01", "2000-001"])  # ISO 8601 reduced precision (year-month), ordinal date
def test_an_iso_date_of_year_and_month_or_day_is_not_taken_for_a_stream_id(
    platform: Platform, r: redis.Redis, env: dict[str, str], since: str,
) -> None:
    # Given a stream holding an entry from 1970 (its id: 5 s after the epoch) and two events of now
    stream = platform.keys.event_stream("user_events")
    old = Event(type="user.logged_in", channel="user_events", source="test", time=5.0, payload={"n": -1})
    r.xadd(stream, {"event": old.to_json()}, id="5000-0")
    logins(2)
    # When an operator replays "since January 2000" (YYYY-MM, or YYYY-DDD), as a dry run
    out = cli(env, "events", "replay", "user_events", "--since", since, "--dry-run", "--json", "--include",
              EVENT_TASKS)
    # Then the time is refused in one line or read as the date it is; it is not read as the stream id
    # "2000-1" (2 s after the epoch), which puts the 1970 entry, and with it the whole stream, in the window
    if out.returncode == 1:
        assert out.stderr.strip().count("\n") == 0 and since in out.stderr, out.stderr
        return
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["events"] == 2, (report["since"], report["events"])


@pytest.mark.slow
def test_epoch_milliseconds_given_as_seconds_are_refused_not_read_as_the_year_56000(
    platform: Platform, r: redis.Redis, env: dict[str, str],
) -> None:
    # Given events in the stream
    logins(2)
    # When the window's start is given in epoch milliseconds (a stream id's own unit, JavaScript's Date.now())
    out = cli(env, "events", "replay", "user_events", "--since", "1764000000000", "--dry-run", "--json",
              "--include", EVENT_TASKS)
    # Then it is refused as out of range (a time after the year 9999) rather than an empty window found with
    # exit 0: "0 events in the stream", which reads as "nothing to replay"
    assert out.returncode == 1, out.stdout
    assert "out of range" in out.stderr and out.stderr.strip().count("\n") == 0, out.stderr


@pytest.mark.slow
def test_a_replay_run_without_an_include_does_not_use_up_the_replay_of_the_includes_subscriptions(
    platform: Platform, r: redis.Redis, env: dict[str, str],
) -> None:
    # Given two logins in the stream, which the services' own subscriptions and an application's (EVENT_TASKS) see
    logins(2)
    # When the operator first replays the window forgetting --include (only the services' subscriptions run)
    first = cli(env, "events", "replay", "user_events", "--since", "0", "--json")
    assert first.returncode == 0, first.stderr
    assert PROBE_A not in {s["name"] for s in json.loads(first.stdout)["subscriptions"]}
    # ... and then again with it, as the bridge runs
    second = cli(env, "events", "replay", "user_events", "--since", "0", "--include", EVENT_TASKS, "--json")
    assert second.returncode == 0, second.stderr
    # Then the application's subscriptions run over the window now: they never ran in it under a replay. (The
    # replay is recorded by (channel, since, until, "*"), whatever subscriptions "*" stood for, so the second is
    # "done before: nothing queued", and --again would queue the services' tasks a second time to get them.)
    report = json.loads(second.stdout)
    per_sub = {s["name"]: s["tasks"] for s in report["subscriptions"]}
    assert per_sub[PROBE_A] == 2 and not report["repeated"], report


@pytest.mark.slow
def test_an_open_ended_replay_asked_again_later_covers_the_events_published_since(
    platform: Platform, r: redis.Redis, env: dict[str, str],
) -> None:
    # Given a replay of everything since 0 with no --until ("default: the newest event"), run over two logins
    logins(2)
    args = ["events", "replay", "user_events", "--since", "0", "--include", EVENT_TASKS, "--json"]
    first = json.loads(cli(env, *args).stdout)
    assert {s["name"]: s["tasks"] for s in first["subscriptions"]}[PROBE_A] == 2
    # When two more logins come and the same command is run again (its window now ends at the newer newest event)
    logins(2, start=2)
    out = cli(env, *args)
    assert out.returncode == 0, out.stderr
    # Then the two new events are replayed (once), not refused as "done before: nothing queued" because the
    # record's key spells the end "+" whatever it stood for; --again is no way out: it queues all four again
    report = json.loads(out.stdout)
    assert report["events"] == 4
    assert {s["name"]: s["tasks"] for s in report["subscriptions"]}[PROBE_A] == 2, report
