"""The CLI as a shell user runs it: one-line errors, exit codes 0/1/2, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from meetingtasks import dispatch, dispatch_batch
from meetingtasks.store.platform import Platform
from tests.support.processes import ROOT
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meetingtasks", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.slow
def test_dispatch_and_wait_from_the_shell(env: dict[str, str], platform: Platform,
                                          start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker("ai")
    out = run(env, "dispatch", "t_echo", "--payload", '{"tag": "shell"}', "--priority", "high", "--wait")
    assert out.returncode == 0, out.stderr
    task_id, *result = out.stdout.strip().splitlines()
    assert json.loads("\n".join(result)) == {"tag": "shell"}
    status = run(env, "status", task_id, "--json")
    assert status.returncode == 0
    record = json.loads(status.stdout)
    assert (record["status"], record["priority"], record["type"]) == ("SUCCEEDED", "high", "t_echo")


@pytest.mark.slow
def test_dispatch_errors_are_one_line_with_the_right_exit_code(env: dict[str, str], platform: Platform) -> None:
    bad_json = run(env, "dispatch", "user_login", "--payload", "{nope")
    assert bad_json.returncode == 2 and "--payload is not valid JSON" in bad_json.stderr
    unknown = run(env, "dispatch", "user_logn", "--payload", "{}")
    assert unknown.returncode == 1 and "unknown task type 'user_logn'" in unknown.stderr
    invalid = run(env, "dispatch", "user_login", "--payload", '{"username": "a"}')
    assert invalid.returncode == 1 and "payload.password" in invalid.stderr
    for out in (bad_json, unknown, invalid):
        assert out.stderr.strip().count("\n") == 0, out.stderr
    usage = run(env, "dispatch", "user_login")
    assert usage.returncode == 2
    missing = run(env, "status", "no-such-id")
    assert missing.returncode == 1 and "no task with id 'no-such-id'" in missing.stderr


@pytest.mark.slow
def test_dlq_list_show_replay_purge(env: dict[str, str], platform: Platform, r: redis.Redis,
                                    start_worker: Callable[..., WorkerProcess]) -> None:
    # Given two dead letters
    start_worker("ai")
    handles = [dispatch("t_always_fails", {"tag": f"d{i}"}) for i in range(2)]
    wait_for(lambda: platform.dead_letters.count(r, "ai") == 2, timeout_s=30, message="two dead letters")
    listed = json.loads(run(env, "dlq", "list", "--json").stdout)
    assert {x["task_id"] for x in listed} == {h.id for h in handles}
    assert all(x["reason"] == "RuntimeError" and x["attempts"] == 3 for x in listed)
    assert "always fails" in run(env, "dlq", "list").stdout
    shown = json.loads(run(env, "dlq", "show", handles[0].id).stdout)
    assert "Traceback" in shown["traceback"] and shown["payload"]["tag"] == "d0"

    # When two operators replay the same letter at once, it is queued exactly once
    r.set("test:heal:d0", 1)
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda _: run(env, "dlq", "replay", handles[0].id), range(2)))
    assert sorted(o.returncode for o in outs) == [0, 1]
    assert handles[0].wait(timeout=30) == "healed"
    attempts = [x for x in r.lrange("test:attempts", 0, -1) if x.startswith(b"d0|")]
    assert len(attempts) == 4  # three original runs + exactly one replay

    # And purge empties it
    purged = run(env, "dlq", "purge")
    assert purged.returncode == 0 and "1 dead letters purged" in purged.stdout
    assert platform.dead_letters.count(r, "ai") == 0
    gone = run(env, "dlq", "show", handles[1].id)
    assert gone.returncode == 1 and "no dead letter" in gone.stderr


def test_stats_counts_queued_and_dead_lettered_per_priority(env: dict[str, str], platform: Platform,
                                                             r: redis.Redis) -> None:
    dispatch_batch([{"type": "t_echo", "payload": {"tag": str(i)}, "priority": "high"} for i in range(3)])
    dispatch("t_echo", {"tag": "later"}, priority="low", delay=3600)
    r.lpush("ai.normal", b"garbage")  # no worker: stays queued
    rows = json.loads(run(env, "stats", "--json").stdout)
    by_key = {(row["service"], row["priority"]): row for row in rows}
    assert by_key[("ai", "high")]["queued"] == 3
    assert by_key[("ai", "normal")]["queued"] == 1
    assert by_key[("ai", "low")]["scheduled"] == 1
    assert by_key[("user", "critical")] == {"service": "user", "priority": "critical", "queued": 0, "unacked": 0,
                                            "scheduled": 0, "dead_lettered": 0}
    table = run(env, "stats").stdout
    assert "ai" in table and "scheduled" in table
