"""``top``: per-type figures over the last minute and hour, checked against a known load run by real workers."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import redis

from meetingtasks import dispatch_batch
from meetingtasks.core.errors import TaskFailed
from meetingtasks.lua import LuaScript, prelude_part
from meetingtasks.operations.embedded import data_memory
from meetingtasks.store.keys import Keys
from meetingtasks.store.platform import Platform
from meetingtasks.store.rollup import SLOT_S, bucket_of, bucket_seconds, percentile
from meetingtasks.store.status import Status
from tests.support.processes import ROOT
from tests.support.workers import WorkerProcess

RUN_S = 0.25


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meetingtasks", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_buckets_read_back_within_ten_percent_of_the_value() -> None:
    for seconds in (0.000_002, 0.003, 0.25, 1.0, 42.0, 3_000.0):
        assert abs(bucket_seconds(bucket_of(seconds)) / seconds - 1) < 0.1, seconds
    assert bucket_of(0) == 0 and bucket_seconds(0) == 0.0
    histogram = {bucket_of(0.01): 98, bucket_of(2.0): 2}
    assert percentile(histogram, 0.5) == pytest.approx(0.01, rel=0.1)
    assert percentile(histogram, 0.99) == pytest.approx(2.0, rel=0.1)
    assert percentile({}, 0.5) is None


# Runs the rollup prelude on its own: one call counted, written where Keys.top_slot says.
_PROBE = LuaScript(prelude_part("rollup") + """
mt_rollup(ARGV[1], ARGV[2], 'probe', 'STARTED', ARGV[3])
mt_rollup(ARGV[1], ARGV[2], 'probe', 'SUCCEEDED', ARGV[3])
mt_rollup(ARGV[1], ARGV[2], 'probe', 'SUCCEEDED', nil)
mt_rollup(ARGV[1], ARGV[2], 'probe', 'QUEUED', ARGV[3])
mt_rollup_flush()
return 1
""")


@pytest.mark.parametrize("prefix", ["mt:", "other-app:"])
@pytest.mark.parametrize("seconds", [0.0000004, 0.0123, 7.5, 3_599.0])
def test_the_lua_recorder_uses_the_python_bucket_rule_and_key(r: redis.Redis, prefix: str, seconds: float) -> None:
    keys = Keys(prefix)
    _PROBE(r, [], [keys.status_channel, "1700000005.5", repr(seconds)])
    _PROBE(r, [], [keys.status_channel, "1700000006.5", repr(seconds)])  # the type is known: no new lifetime
    assert r.hgetall(keys.top_slot(1700000000)) == {b"probe": b"1"}
    fields = r.hgetall(keys.top_type(1700000000, "probe"))
    bucket = bucket_of(seconds)
    assert fields == {f"STARTED|{bucket}".encode(): b"2", f"SUCCEEDED|{bucket}".encode(): b"2",
                      b"SUCCEEDED|-": b"2"}
    for key in (keys.top_slot(1700000000), keys.top_type(1700000000, "probe")):
        assert 0 < r.ttl(key) <= 3_620


# Fills slots with the recorder's own Lua: ARGV channel, time, tasks, types, then 200 durations (s).
_FILL = LuaScript(prelude_part("rollup") + """
for i = 1, tonumber(ARGV[3]) do
  local ty = 'type_' .. (i % tonumber(ARGV[4]))
  local seconds = tonumber(ARGV[5 + (i % 200)])
  mt_rollup(ARGV[1], ARGV[2], ty, 'STARTED', seconds)
  mt_rollup(ARGV[1], ARGV[2], ty, 'SUCCEEDED', seconds / 3)
end
mt_rollup_flush()
return 1
""")


@pytest.mark.slow
def test_an_hour_of_rollups_stays_small(r: redis.Redis, platform: Platform) -> None:
    # Given an hour of slots of 30 task types busy all the time, waits and runs spread from 1 ms to 2 s
    rng = random.Random(1)
    before = data_memory(r)
    for slot in range(3_600 // SLOT_S):
        durations = [repr(10 ** rng.uniform(-3, 0.3)) for _ in range(200)]
        _FILL(r, [], [platform.keys.status_channel, repr(1_700_000_000 + slot * SLOT_S), 2_000, 30, *durations])
    # Without the AOF rewrite's buffer: Redis copies every write there during a rewrite it starts by itself.
    used_mb = (data_memory(r) - before) / 1e6
    print(f"\nan hour of rollups of 30 busy types: {used_mb:.1f} MB")
    # Then every type's slot is a compact hash, and the whole hour takes a few MB
    assert r.object("encoding", platform.keys.top_type(1_700_000_000, "type_7")) in (b"ziplist", b"listpack")
    assert used_mb < 12


def _known_load() -> list[Any]:
    items = [{"type": "t_sleep", "payload": {"tag": f"s{i}", "seconds": RUN_S}} for i in range(12)]
    items += [{"type": "t_permanent", "payload": {"tag": f"p{i}"}} for i in range(3)]
    items += [{"type": "t_always_fails", "payload": {"tag": f"f{i}"}} for i in range(2)]
    return list(dispatch_batch(items))


@pytest.mark.slow
@pytest.mark.parametrize("pool", [("--pool", "threads", "--concurrency", "4"), ("--pool", "solo"),
                                  ("--pool", "prefork", "--concurrency", "2")], ids=["threads", "solo", "prefork"])
def test_top_once_json_reports_a_known_load(env: dict[str, str], platform: Platform, r: redis.Redis,
                                            start_worker: Callable[..., WorkerProcess], pool: tuple[str, ...]) -> None:
    # Given a known load run by a real worker: 12 tasks of 0.25 s that succeed, 3 that fail permanently and 2
    # that fail every attempt (two retries, then dead-lettered)
    start_worker("ai", *pool)
    handles = _known_load()
    for handle in handles:
        with contextlib.suppress(TaskFailed):  # the failures are expected; their counts are checked below
            handle.wait(timeout=90)
    assert sum(1 for h in handles if h.status() is Status.SUCCEEDED) == 12
    # When top reports once, as JSON
    out = run_cli(env, "top", "--once", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    # Then both windows count exactly that load, and the run time p50 is near the known duration
    for window in ("minute", "hour"):
        types = data[window]["types"]
        sleep, permanent, fails = types["t_sleep"], types["t_permanent"], types["t_always_fails"]
        assert (sleep["started"], sleep["succeeded"], sleep["failed"], sleep["retries"]) == (12, 12, 0, 0), sleep
        assert sleep["run_p50_s"] == pytest.approx(RUN_S, rel=0.15), sleep
        assert RUN_S * 0.9 <= sleep["run_p99_s"] <= RUN_S * 3, sleep
        assert sleep["wait_p50_s"] is not None and sleep["wait_p50_s"] <= sleep["wait_p99_s"], sleep
        assert (permanent["started"], permanent["failed"], permanent["succeeded"]) == (3, 3, 0), permanent
        assert (fails["started"], fails["retries"], fails["dead_lettered"]) == (6, 4, 2), fails
        assert sleep["started_per_s"] == pytest.approx(12 / data[window]["span_s"], abs=1e-5)
    assert 60 <= data["minute"]["span_s"] < 71 and 3_600 <= data["hour"]["span_s"] < 3_611
    # And the table shows the same rows
    table = run_cli(env, "top", "--once")
    assert table.returncode == 0, table.stderr
    print(f"\n{table.stdout}")  # the example in docs/tools.md
    row = next(line for line in table.stdout.splitlines() if line.startswith("t_sleep"))
    rate, *counts = row.split()[1:6]
    assert 12 / 71 - 0.005 <= float(rate) <= 12 / 60 + 0.005 and counts == ["12", "0", "0", "0"], row


def test_top_refreshes_until_interrupted(env: dict[str, str], platform: Platform) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "meetingtasks", "top", "--json", "--interval", "0.2"], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert lines[1]["time"] > lines[0]["time"] and lines[0]["minute"]["types"] == {}
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


def test_top_without_redis_is_one_line_and_exit_1(env: dict[str, str]) -> None:
    unreachable = {**env, "MEETINGTASKS_REDIS_URL": "redis://127.0.0.1:1/0"}
    out = run_cli(unreachable, "top", "--once", "--json")
    assert out.returncode == 1 and "cannot reach Redis" in out.stderr, out.stderr
    assert out.stderr.strip().count("\n") == 0, out.stderr
