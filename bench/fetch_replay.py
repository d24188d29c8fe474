"""Redis time of the worker's fetch script, replayed call for call: a measurement without the machine's noise.

    python -m bench.fetch_replay [--pool solo] [--tasks 5000] [--rounds 3] [--lua DIR ...]

It dispatches ``--tasks`` no-op tasks, snapshots Redis, and drains them with one worker of ``--pool`` while
``MONITOR`` records every call of the fetch script (``meetingtasks/lua/fetch.lua``). Then, for the package's scripts
and for each ``--lua`` directory (a copy of ``meetingtasks/lua`` with a change to measure), it loads the snapshot
into a fresh redis-server (AOF on, as the benchmark runs it), replays the recorded calls in order against that
directory's fetch script, and reports the script's time per task from ``INFO commandstats`` (and Redis's CPU), then
the part of it spent in each command the script calls. The same calls meet the same data each time, so two
versions of a script compare within a few percent on a busy machine, where a drain's figures vary by more than that.

A replayed call carries the arguments the worker sent in the capture (its clock, its acks and outcomes), so a
script change that alters what the worker would send next (the reply's layout) cannot be measured this way.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import redis

import meetingtasks.lua as lua
from bench.harness import QUEUES, redis_server, wait_until
from meetingtasks.operations.embedded import RedisServer, compact_aof

PACKAGE_SCRIPTS = Path(lua.__file__).parent


def monitor_args(line: bytes) -> list[bytes]:
    """The arguments of one ``MONITOR`` line (``<time> [<db> <client>] "arg" "arg" ...``, each argument quoted and
    escaped as Redis's ``sdscatrepr`` does)."""
    i = line.index(b"] ") + 2
    args: list[bytes] = []
    escapes = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("a"): 7, ord("b"): 8}
    while i < len(line):
        i += 1  # the opening quote
        arg = bytearray()
        while line[i] != 0x22:
            if line[i] == 0x5C:  # backslash
                if line[i + 1] == ord("x"):
                    arg.append(int(line[i + 2:i + 4], 16))
                    i += 4
                else:
                    arg.append(escapes.get(line[i + 1], line[i + 1]))
                    i += 2
            else:
                arg.append(line[i])
                i += 1
        args.append(bytes(arg))
        i += 2  # the closing quote and the space after it
    return args


def capture(pool: str, tasks: int, into: Path) -> int:
    """Dispatch, snapshot and drain as the module docstring says; writes ``into/dump.rdb`` and ``into/calls.pkl``.
    Returns the number of fetch calls recorded."""
    from bench.run import OUR_QUEUES, Bench, our_worker, queued
    from meetingtasks.worker.transport import FETCH

    with redis_server(into) as server:
        bench = Bench(server.url, into, 1, False)
        bench.reset()
        bench._queue_ours(tasks, "bench_noop")
        bench.client.save()
        shutil.copy(into / "redis" / "dump.rdb", into / "dump.rdb")
        calls: list[list[bytes]] = []
        prefix = b'"EVALSHA" "' + FETCH.sha.encode() + b'"'
        stop = threading.Event()
        watcher = redis.Redis.from_url(server.url)
        connection = watcher.connection_pool.get_connection()
        connection.send_command("MONITOR")
        connection.read_response()

        def record() -> None:
            while not stop.is_set():
                line = connection.read_response(disable_decoding=True)
                if isinstance(line, bytes) and prefix in line:
                    calls.append(monitor_args(line)[2:])  # without EVALSHA and the sha

        thread = threading.Thread(target=record, daemon=True)
        thread.start()
        worker = our_worker(bench.env, bench.log("capture"), pool=pool)
        try:
            wait_until(lambda: queued(bench.client, OUR_QUEUES) == 0 and not bench.client.exists(
                bench.platform.keys.unacked("ai")), 600, "the queue to drain", 0.01)
        finally:
            worker.stop()
        stop.set()
        bench.client.ping()  # a last command for the monitor to read, so that it sees stop
        thread.join(10)
        (into / "calls.pkl").write_bytes(pickle.dumps(calls))
        return len(calls)


def replay(captured: Path, scripts: Path, tasks: int) -> tuple[float, float, dict[str, float]]:
    """The fetch script of ``scripts`` replayed on the snapshot: (script time, Redis CPU, the time of each command
    the script calls) per task, microseconds. A command's time is part of the script's; the rest of the script's is
    its own Lua work and Redis's cost of each call (arguments in, reply out)."""
    calls: list[list[bytes]] = pickle.loads((captured / "calls.pkl").read_bytes())
    saved_prelude = lua.PRELUDE_DIR
    lua.PRELUDE_DIR = scripts / "prelude"
    try:
        source = lua.script_source("fetch", scripts)
    finally:
        lua.PRELUDE_DIR = saved_prelude
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(captured / "dump.rdb", Path(tmp) / "dump.rdb")
        # Started without the AOF so that it loads the snapshot, which the AOF would replace; then the AOF on.
        server = RedisServer(Path(tmp), extra_args=["--appendonly", "no"]).start()
        try:
            client = redis.Redis.from_url(server.url)
            wait_until(lambda: not int(client.info("persistence").get("loading", 0)), 60, "the snapshot to load")
            client.config_set("appendonly", "yes")
            compact_aof(client)
            sha = client.script_load(source)
            client.config_resetstat()
            cpu0 = _cpu_s(client)
            for args in calls:
                client.execute_command("EVALSHA", sha, *args)
            cpu = _cpu_s(client) - cpu0
            left = sum(int(client.llen(f"ai.{q}")) for q in QUEUES)
            if left:
                raise RuntimeError(f"the replay left {left} messages queued: {scripts} is not a fetch script that "
                                   "pops what the recorded one did")
            stats = client.info("commandstats")
            script_us = float(stats.pop("cmdstat_evalsha")["usec"])
            called = {name.removeprefix("cmdstat_").upper(): float(row["usec"]) / tasks for name, row in stats.items()
                      if name not in _OWN_COMMANDS}
            return script_us / tasks, cpu * 1e6 / tasks, called
        finally:
            server.stop()


#: Commands of the replay itself (its CPU and stats reads), not of the script.
_OWN_COMMANDS = {"cmdstat_info", "cmdstat_config", "cmdstat_script", "cmdstat_llen", "cmdstat_ping", "cmdstat_hello",
                 "cmdstat_client", "cmdstat_bgrewriteaof"}


def _cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


#: The commands the fetch script spends most of its calls' time in, each a column of the report.
_TOP_COMMANDS = ("HSET", "HMGET", "ZADD", "RPOP", "ZREM", "HDEL", "EXPIRE", "PUBLISH")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="solo", choices=["solo", "prefork", "threads"])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lua", type=Path, action="append", default=[],
                        help="a copy of meetingtasks/lua to compare (repeatable)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        captured = Path(tmp)
        started = time.perf_counter()
        n = capture(args.pool, args.tasks, captured)
        print(f"captured {n} fetch calls of a {args.pool} worker draining {args.tasks:,} no-op tasks "
              f"({time.perf_counter() - started:.0f} s)")
        versions = [PACKAGE_SCRIPTS, *args.lua]
        results: dict[Path, list[tuple[float, float, dict[str, float]]]] = {v: [] for v in versions}
        for _ in range(args.rounds):  # interleaved, as the benchmark's rounds are
            for version in versions:
                results[version].append(replay(captured, version, args.tasks))
        print("| scripts | fetch script us per task, median (min-max) | Redis CPU us per task, median (min-max) |")
        print("|---|---|---|")
        for version, rows in results.items():
            script = [r[0] for r in rows]
            cpu = [r[1] for r in rows]
            print(f"| {version} | {statistics.median(script):.1f} ({min(script):.1f}-{max(script):.1f}) "
                  f"| {statistics.median(cpu):.1f} ({min(cpu):.1f}-{max(cpu):.1f}) |")
        print()
        print("Commands the script calls, Redis time per task (us), median of the replays:")
        print()
        print("| scripts | " + " | ".join(_TOP_COMMANDS) + " | other |")
        print("|---|" + "---|" * (len(_TOP_COMMANDS) + 1))
        for version, rows in results.items():
            names = {name for _, _, called in rows for name in called}
            medians = {name: statistics.median(called.get(name, 0.0) for _, _, called in rows) for name in names}
            other = sum(v for name, v in medians.items() if name not in _TOP_COMMANDS)
            print(f"| {version} | " + " | ".join(f"{medians.get(name, 0.0):.2f}" for name in _TOP_COMMANDS)
                  + f" | {other:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
