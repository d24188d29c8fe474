"""``meetingtasks events replay`` / :func:`replay_events`: a rewound window runs the bridge's subscriptions
again, once per event, under a generation of its own; the same replay twice queues nothing unless again."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
import redis

from meetingtasks.core.errors import InvalidReplay
from meetingtasks.events import publish_events
from meetingtasks.events.replay import replay_events, stream_position
from meetingtasks.events.subscriptions import SUBSCRIPTIONS
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status
from tests.events.conftest import EVENT_TASKS, queued
from tests.support.processes import ROOT
from tests.support.waiting import wait_for

PROBE_A = f"{EVENT_TASKS}:probe_a"
PROBE_B = f"{EVENT_TASKS}:probe_b"
FLAKY = f"{EVENT_TASKS}:flaky"


def logins(count: int, start: int = 0) -> list[str]:
    """Publish ``count`` user.logged_in events (two test subscriptions each); their stream ids, in order."""
    events = publish_events({"channel": "user_events", "type": "user.logged_in", "source": "test",
                             "payload": {"n": n}} for n in range(start, start + count))
    return [e.id for e in events]


def stream_ids(platform: Platform, r: redis.Redis) -> list[str]:
    return [eid.decode() for eid, _ in r.xrange(platform.keys.event_stream("user_events"))]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meetingtasks", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def handled(platform: Platform, r: redis.Redis, bridge: Any, count: int) -> None:
    wait_for(lambda: bridge.stats.events >= count, 30, message=f"the bridge to handle {count} events")


def queued_ids(r: redis.Redis) -> list[str]:
    return [m["id"] for q in ("ai.normal", "user.normal") for m in queued(r, q)]


@pytest.mark.slow
def test_a_rewound_window_reruns_each_subscription_once_per_event_on_real_workers(
    platform: Platform, r: redis.Redis, start_bridge, start_worker,
) -> None:
    # Given a bridge and ai and user workers running the test subscriptions' tasks
    start_bridge()
    include = {"MEETINGTASKS_INCLUDE": f"tests.support.tasks,{EVENT_TASKS}"}
    start_worker("ai", env_overrides=include)
    start_worker("user", env_overrides=include)
    # And seven logins, each of which ran both subscriptions' tasks once
    events = logins(7)
    wait_for(lambda: r.llen("test:event:ran") == 14, 60, message="both tasks of every login to run")
    ids = stream_ids(platform, r)

    # When the window of the 3rd to the 6th event is rewound (stream ids; both ends included)
    report = replay_events("user_events", since=ids[2], until=ids[5], includes=[EVENT_TASKS])

    # Then each subscription ran again once on each event of the window, on the workers, and only there
    assert report.events == 4 and report.tasks == 8 and report.generation >= 1
    assert {(s.name, s.events, s.tasks) for s in report.subscriptions} >= {(PROBE_A, 4, 4), (PROBE_B, 4, 4)}
    wait_for(lambda: r.llen("test:event:ran") == 22, 60, message="the replayed tasks to run")
    ran = Counter(x.decode() for x in r.lrange("test:event:ran", 0, -1))
    window = events[2:6]
    assert ran == Counter({f"{kind}|{e}": 2 if e in window else 1 for e in events for kind in "ab"})
    # And under ids of the replay's generation, each SUCCEEDED, next to the bridge's own
    for name in (PROBE_A, PROBE_B):
        sub = SUBSCRIPTIONS.get(name)
        for event_id in window:
            replayed = platform.status.get(r, sub.task_id(event_id, generation=report.generation))
            original = platform.status.get(r, sub.task_id(event_id))
            assert replayed is not None and replayed.status is Status.SUCCEEDED
            assert original is not None and original.status is Status.SUCCEEDED


def test_the_same_replay_twice_queues_nothing_unless_again(platform: Platform, r: redis.Redis,
                                                           make_bridge) -> None:
    # Given five logins handled by a bridge (no worker: the tasks stay queued, where they can be counted)
    bridge = make_bridge()
    logins(5)
    handled(platform, r, bridge, 5)
    first_run = set(queued_ids(r))
    assert len(first_run) == 10
    since = stream_ids(platform, r)[0]

    # When the window is replayed: ten tasks more, with ids of their own
    once = replay_events("user_events", since=since, includes=[EVENT_TASKS])
    assert (once.tasks, once.repeated) == (10, False)
    after_once = set(queued_ids(r))
    assert len(after_once) == 20 and first_run < after_once

    # When the same replay is asked again: nothing is queued
    twice = replay_events("user_events", since=since, includes=[EVENT_TASKS])
    assert (twice.tasks, twice.repeated, twice.generation, twice.events) == (0, True, once.generation, 5)
    assert set(queued_ids(r)) == after_once

    # When it is asked again with again: a new generation, ten more tasks
    again = replay_events("user_events", since=since, includes=[EVENT_TASKS], again=True)
    assert again.tasks == 10 and again.generation > once.generation
    assert len(set(queued_ids(r))) == 30
    # And the bridge's own rule still holds: nothing it had handled ran twice through it
    assert bridge.stats.tasks == 10


def test_one_subscription_only_and_a_cut_short_replay_finishes_under_its_generation(
    platform: Platform, r: redis.Redis, make_bridge,
) -> None:
    # Given three logins handled
    bridge = make_bridge()
    logins(3)
    handled(platform, r, bridge, 3)
    since = stream_ids(platform, r)[0]
    # When only probe_b is replayed
    report = replay_events("user_events", since=since, subscription=PROBE_B, includes=[EVENT_TASKS])
    # Then only its tasks are queued
    assert [(s.name, s.tasks) for s in report.subscriptions] == [(PROBE_B, 3)]
    assert len(queued(r, "user.normal")) == 6 and len(queued(r, "ai.normal")) == 3

    # Given a replay of probe_a cut short after it queued the task of the first event (its record says running)
    replay_key = "\n".join(("user_events", stream_position(since), "+", PROBE_A))
    generation = int(r.incr(platform.keys.event_replay_generation))
    r.hset(platform.keys.event_replays, replay_key, json.dumps({"generation": generation, "state": "running"}))
    first_event = queued(r, "ai.normal")[0]["event_id"]
    platform.status.transition(r, SUBSCRIPTIONS.get(PROBE_A).task_id(first_event, generation=generation),
                               Status.QUEUED, attempt=0)
    # When it is asked again: it finishes under its generation, queuing the two missing tasks, not three
    resumed = replay_events("user_events", since=since, subscription=PROBE_A, includes=[EVENT_TASKS])
    assert resumed.generation == generation and not resumed.repeated
    assert [(s.tasks, s.already) for s in resumed.subscriptions] == [(2, 1)]
    assert len(queued(r, "ai.normal")) == 5
    # And then it is done: once more queues nothing
    assert replay_events("user_events", since=since, subscription=PROBE_A, includes=[EVENT_TASKS]).repeated


@pytest.mark.slow
def test_dry_run_counts_events_and_tasks_per_subscription_and_queues_nothing(
    platform: Platform, r: redis.Redis, env: dict[str, str], make_bridge,
) -> None:
    # Given four logins and one registration, handled by a bridge
    bridge = make_bridge()
    logins(4)
    publish_events([{"channel": "user_events", "type": "user.registered", "source": "test", "payload": {}}])
    handled(platform, r, bridge, 5)
    before = queued_ids(r)

    # When a dry run of the window is asked from the shell
    since = stream_ids(platform, r)[0]
    out = cli(env, "events", "replay", "user_events", "--since", since, "--dry-run", "--include", EVENT_TASKS,
              "--json")

    # Then it says how many events and tasks, per subscription, and queued nothing
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    per_sub = {s["name"]: (s["events"], s["tasks"]) for s in report["subscriptions"]}
    assert per_sub[PROBE_A] == (4, 4) and per_sub[PROBE_B] == (4, 4) and per_sub[FLAKY] == (1, 1)
    assert (report["events"], report["tasks"], report["dry_run"]) == (5, 9, True)
    assert queued_ids(r) == before
    assert not r.exists(platform.keys.event_replays)
    # And as text too, with a line per subscription
    text = cli(env, "events", "replay", "user_events", "--since", since, "--dry-run", "--include", EVENT_TASKS)
    assert text.returncode == 0, text.stderr
    assert "5 events in the stream, would queue 9 tasks" in text.stdout
    assert any(line.split()[0] == FLAKY and line.split()[-3:] == ["1", "1", "0"] for line in
               text.stdout.splitlines() if line.strip())


@pytest.mark.slow
def test_the_subscriptions_are_listed_with_their_names(env: dict[str, str]) -> None:
    out = cli(env, "events", "subscriptions", "--include", EVENT_TASKS, "--json")
    assert out.returncode == 0, out.stderr
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows[PROBE_A]["channel"] == "user_events" and rows[PROBE_A]["task_type"] == "t_event_a"
    assert any(name.startswith("meetingtasks.services.") for name in rows)  # the services' own
    text = cli(env, "events", "subscriptions", "--include", EVENT_TASKS)
    assert text.returncode == 0 and any(line.startswith(PROBE_B + " ") for line in text.stdout.splitlines())


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), [
    (["no_such_channel", "--since", "0"], "unknown channel 'no_such_channel'"),
    (["user_events", "--since", "0", "--subscription", "nope"], "unknown subscription 'nope'"),
    (["user_events", "--since", "yesterday"], "--since 'yesterday' is not epoch seconds"),
    (["user_events", "--since", "2026-12-05T10:00:00Z", "--until", "2026-12-05T09:00:00Z"], "is after --until"),
])
def test_bad_input_is_one_line_and_exit_1(env: dict[str, str], args: list[str], message: str) -> None:
    out = cli(env, "events", "replay", *args, "--include", EVENT_TASKS)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and message in out.stderr


def test_times_become_stream_ids() -> None:
    assert stream_position("1764000000") == "1764000000000-0"
    assert stream_position("1764000000.5", end=True) == "1764000000500-18446744073709551615"
    assert stream_position("2025-11-24T16:00:00Z") == "1764000000000-0"
    assert stream_position("2025-11-24T17:00:00+01:00") == "1764000000000-0"
    assert stream_position("1764000000000-7") == "1764000000000-7"
    for bad in ("", "-1", "nan", "12-ab", "tomorrow"):
        with pytest.raises(InvalidReplay):
            stream_position(bad)


def test_times_are_never_guessed() -> None:
    # ISO dates that look like a stream id are dates
    assert stream_position("2000-01") == stream_position("2000-01-01") == stream_position("2000-001")
    assert stream_position("2000-366") == stream_position("2000-12-31")
    # a stream id's milliseconds from 10^10; epoch seconds up to the end of the year 9999
    assert stream_position("10000000000-3") == "10000000000-3"
    assert stream_position("253402300799") == "253402300799000-0"
    for bad, message in (("2001-366", "not a date"), ("2000-13", "not a date"), ("12-3", "ambiguous"),
                         ("9999999999-0", "ambiguous"), ("1764000000000", "as seconds that is 1764000000"),
                         ("253402300800", "out of range")):
        with pytest.raises(InvalidReplay, match=message):
            stream_position(bad)


def test_a_subscription_that_raises_is_counted_and_retried_by_the_same_replay(platform: Platform,
                                                                              r: redis.Redis) -> None:
    # Given a registration whose subscription fails on its first run, in a stream no bridge has read
    publish_events([{"channel": "user_events", "type": "user.registered", "source": "test",
                     "payload": {"fail_times": 1}}])
    since = stream_ids(platform, r)[0]
    # When it is replayed: the run that raised is counted, nothing is queued, and the replay is not done
    first = replay_events("user_events", since=since, subscription=FLAKY, includes=[EVENT_TASKS])
    assert (first.failed, first.tasks) == (1, 0) and not queued(r, "ai.normal")
    # When the same replay is asked again: the run succeeds under the same generation, once
    second = replay_events("user_events", since=since, subscription=FLAKY, includes=[EVENT_TASKS])
    assert (second.failed, second.tasks, second.generation) == (0, 1, first.generation)
    assert len(queued(r, "ai.normal")) == 1
    # And then it is done
    assert replay_events("user_events", since=since, subscription=FLAKY, includes=[EVENT_TASKS]).repeated
    # And nothing was acknowledged or created in a consumer group: the replay only reads the stream
    assert r.xinfo_groups(platform.keys.event_stream("user_events")) == []


def test_an_open_ended_replay_of_an_empty_stream_covers_the_events_published_later(platform: Platform,
                                                                                   r: redis.Redis) -> None:
    # Given an open-ended replay run while the channel's stream was empty
    empty = replay_events("user_events", since="0", subscription=PROBE_A, includes=[EVENT_TASKS])
    assert (empty.events, empty.tasks, empty.repeated) == (0, 0, False)
    # When events come and the same replay is asked again
    logins(2)
    later = replay_events("user_events", since="0", subscription=PROBE_A, includes=[EVENT_TASKS])
    # Then it runs over them, under the generation it took, and then it is done up to them
    assert (later.events, later.tasks, later.generation) == (2, 2, empty.generation)
    assert replay_events("user_events", since="0", subscription=PROBE_A, includes=[EVENT_TASKS]).repeated
