"""Redis restarts with AOF: every kind of state survives, and the running parts carry on by themselves.

Two restarts, each on a redis-server of its own: ``appendfsync everysec`` stopped gracefully (SIGTERM: Redis
writes and fsyncs its AOF on the way out) and ``appendfsync always`` killed with SIGKILL (every reply was
preceded by an fsync). Before the restart the platform holds queued tasks (no worker for their service),
scheduled tasks, a task running on a worker (its message unacked), dead letters, status records and an event
stream with its consumer group; afterwards all of it is there, key by key, and the worker, the bridge, the
gateway (with its WebSocket client still connected) and the CLI work without being restarted. A last test
drops the worker's connections while Redis stays up: the race a restart can lose, forced.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.sync.client import connect

from meetingtasks import dispatch, dispatch_batch, publish_event
from meetingtasks.core.settings import Settings
from meetingtasks.gateway.tokens import mint_token
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.store.connections import reset_shared_clients
from meetingtasks.store.platform import Platform, configure
from tests.events.conftest import FAST, BridgeProcess, queued
from tests.gateway.conftest import SECRET, Client, GatewayProcess
from tests.support.processes import ROOT
from tests.support.restart_tasks import INCLUDE
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess, worker_env

# Slow tier: fault injection (kills, restarts, outages, refused writes) waits out real timeouts.
pytestmark = pytest.mark.slow

#: Keys that running parts rewrite on their own (heartbeats, counters, lease scores, locks, wake tokens):
#: their content after a restart says nothing about durability.
VOLATILE = ("workers:", "bridges", "gateway", "queue-depths", "unacked_index:", "unacked_mutex:", "wake:")
#: kombu's exchange bindings (gossip, pidbox replies) are declared by the consumers themselves: kombu drops
#: auto-delete ones with a lost connection and the parts declare them again when they reconnect.
KOMBU_BINDINGS = "_kombu.binding"


def read_key(r: redis.Redis, key: bytes) -> Any:
    kind = r.type(key).decode()
    if kind == "string":
        return r.get(key)
    if kind == "list":
        return r.lrange(key, 0, -1)
    if kind == "hash":
        return r.hgetall(key)
    if kind == "set":
        return sorted(r.smembers(key))
    if kind == "zset":
        return r.zrange(key, 0, -1, withscores=True)
    if kind == "stream":
        return r.xrange(key)
    raise AssertionError(f"unexpected type {kind} of {key!r}")


def durable_state(platform: Platform, r: redis.Redis) -> dict[bytes, Any]:
    """Every key but the volatile ones, with its content and whether it has a TTL."""
    skipped = (KOMBU_BINDINGS, *(platform.keys.prefix + name for name in VOLATILE))
    state: dict[bytes, Any] = {}
    for key in r.scan_iter(count=1000):
        if not key.decode().startswith(skipped):
            state[key] = (read_key(r, key), r.ttl(key) > 0)
    return state


def consumer_groups(platform: Platform, r: redis.Redis) -> list[tuple[Any, Any, Any]]:
    stream = platform.keys.event_stream("user_events")
    return [(g["name"], g["last-delivered-id"], g["pending"]) for g in r.xinfo_groups(stream)]


def stats_by_row(env: dict[str, str]) -> dict[tuple[str, str], dict[str, int]]:
    """``meetingtasks stats --json`` as a fresh process would run it."""
    out = subprocess.run([sys.executable, "-m", "meetingtasks.cli", "stats", "--json"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {(row["service"], row["priority"]): row for row in json.loads(out.stdout)}


class Parts:
    """The platform's long-running parts as subprocesses: an ai worker, a bridge and a gateway."""

    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.worker = WorkerProcess("ai", env, tmp_path / "worker.log", ["--pool", "threads", "--concurrency", "3"])
        self.bridge = BridgeProcess(env, tmp_path / "bridge.log", [])
        self.gateway = GatewayProcess(env, tmp_path / "gateway.log")

    def __enter__(self) -> Parts:
        try:
            self.worker.wait_ready(), self.bridge.wait_ready(), self.gateway.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> bool:
        return all(p.proc.poll() is None for p in (self.worker, self.bridge, self.gateway))

    def stop(self) -> None:
        self.gateway.stop()
        self.bridge.stop()
        self.worker.stop()


def platform_env(server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Worker, bridge and gateway settings on ``server``, set in this process too."""
    fast = {f"MEETINGTASKS_{k.upper()}": str(v) for k, v in FAST.items()}
    # A visibility timeout far above a restart's few hundred ms: a running task must stay with its worker.
    env = worker_env(server.url, **fast, MEETINGTASKS_INCLUDE=INCLUDE, MEETINGTASKS_VISIBILITY_TIMEOUT_S="30",
                     MEETINGTASKS_GATEWAY_SECRET=SECRET)
    for key, value in env.items():
        if key.startswith("MEETINGTASKS_"):
            monkeypatch.setenv(key, value)
    reset_shared_clients()
    return env


@pytest.fixture(params=[("everysec", False), ("always", True)], ids=["everysec-sigterm", "always-sigkill"])
def restart_setup(request: pytest.FixtureRequest, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RedisServer, bool, dict[str, str]]]:
    """A redis-server of the test's own with the AOF policy of the parameter, whether to SIGKILL it, the env."""
    appendfsync, kill = request.param
    server = RedisServer(tmp_path / "redis", appendfsync=appendfsync).start()
    yield server, kill, platform_env(server, monkeypatch)
    server.stop()
    reset_shared_clients()


@pytest.fixture
def own_redis_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    server = RedisServer(tmp_path / "redis").start()
    yield platform_env(server, monkeypatch)
    server.stop()
    reset_shared_clients()


def test_every_kind_of_state_survives_a_redis_restart_and_every_part_carries_on(
    restart_setup: tuple[RedisServer, bool, dict[str, str]], tmp_path: Path
) -> None:
    server, kill, env = restart_setup
    platform = configure(Settings())
    r = platform.redis()
    release = tmp_path / "release-held"
    with Parts(env, tmp_path) as parts:
        client = Client(parts.gateway, "alice")
        try:
            # Given a task running on the worker (its message in the unacked hash)
            held = dispatch("t_hold", {"tag": "held", "release_path": str(release)})
            wait_for(lambda: r.lrange("test:held:started", 0, -1) == [b"held"], message="the held task to start")
            # and two tasks dead-lettered after their retries, one succeeded, one succeeded through the gateway
            doomed = [dispatch("t_always_fails", {"tag": f"doomed-{i}"}) for i in range(2)]
            assert dispatch("t_echo", {"tag": "before"}).wait(timeout=30) == {"tag": "before"}
            gw_before = client.submit("t_echo", {"tag": "gw-before"}, ref="before")
            client.recv_until(lambda f: f.get("id") == gw_before and f.get("status") == "SUCCEEDED")
            # and three events the bridge turned into tasks (t_event_a ran; t_event_b waits: no user worker)
            events = [publish_event("user_events", "user.logged_in", {"n": n}, source="test") for n in range(3)]
            # and queued tasks of services without a worker, at three priorities (user.high, media.low and
            # meeting.critical, the last ones sent as a batch)
            for i in range(5):
                dispatch("user_login", {"username": f"user{i}", "password": "pw"})
                dispatch("media_transcode", {"source_ref": f"blob:clip{i}"}, priority="low")
            dispatch_batch([("meeting_user_join", {"meeting_id": "m1", "user_id": f"u{i}"}) for i in range(4)])
            # and scheduled tasks, a minute away, on two services
            scheduled = [dispatch("meeting_end", {"meeting_id": f"m{i}"}, delay=60) for i in range(3)]
            scheduled += [dispatch("t_echo", {"tag": f"later-{i}"}, delay=60) for i in range(2)]

            wait_for(lambda: platform.dead_letters.count(r, "ai") == 2, timeout_s=30, message="two dead letters")
            wait_for(lambda: r.llen("user.normal") == 3 and r.llen("test:event:ran") == 3, timeout_s=30,
                     message="the bridge to trigger both tasks of each event")
            wait_for(lambda: consumer_groups(platform, r)[0][2] == 0, message="the bridge to acknowledge the events")
            wait_for(lambda: r.llen("ai.normal") == 0 and r.hlen(platform.keys.unacked("ai")) == 1,
                     message="the worker to be idle but for the held task")
            assert [h.status() for h in doomed] == ["DEAD_LETTERED"] * 2
            assert held.status() == "STARTED"
            before, groups_before = durable_state(platform, r), consumer_groups(platform, r)
            assert {b"user.high", b"media.low", b"meeting.critical", b"user.normal"} <= set(before)

            # When Redis restarts from its append-only file
            server.restart(kill=kill)

            # Then every key and its content survived, the stream's consumer group too
            assert durable_state(platform, r) == before
            assert consumer_groups(platform, r) == groups_before
            assert r.xlen(platform.keys.event_stream("user_events")) == 3
            assert [h.status() for h in scheduled] == ["SCHEDULED"] * 5
            assert held.status() == "STARTED" and r.hlen(platform.keys.unacked("ai")) == 1

            # and the worker runs a task dispatched after the restart
            assert dispatch("t_echo", {"tag": "after"}).wait(timeout=30) == {"tag": "after"}
            # and the same bridge turns a new event into its tasks
            event = publish_event("user_events", "user.logged_in", {"n": 9}, source="test")
            wait_for(lambda: f"a|{event.id}".encode() in r.lrange("test:event:ran", 0, -1), timeout_s=30,
                     message="the bridge to trigger the event published after the restart")
            assert {m["event_id"] for m in queued(r, "user.normal")} == {e.id for e in [*events, event]}
            # and the gateway pushes the status of a task submitted on the same connection, and takes new ones
            gw_after = client.submit("t_echo", {"tag": "gw-after"}, ref="after")
            client.recv_until(lambda f: f.get("id") == gw_after and f.get("status") == "SUCCEEDED", timeout_s=30)
            with connect(f"{parts.gateway.ws_url}?token={mint_token(SECRET, 'bob', 60)}") as fresh:
                fresh.send(json.dumps({"op": "submit", "ref": 1, "type": "t_echo", "payload": {"tag": "bob"}}))
                assert json.loads(fresh.recv(timeout=20))["op"] == "accepted"
            # and the CLI counts what is there
            rows = stats_by_row(env)
            assert rows[("user", "high")]["queued"] == 5 and rows[("media", "low")]["queued"] == 5
            assert rows[("meeting", "critical")]["queued"] == 4 and rows[("user", "normal")]["queued"] == 4
            assert rows[("meeting", "high")]["scheduled"] == 3 and rows[("ai", "normal")]["scheduled"] == 2
            assert rows[("ai", "normal")]["unacked"] == 1 and rows[("ai", "normal")]["dead_lettered"] == 2
            assert parts.alive(), "no part may have needed a restart"

            # and the held task, once released, finishes once: its message was never redelivered
            release.touch()
            assert held.wait(timeout=30) == "held"
            assert r.lrange("test:held:started", 0, -1) == [b"held"]
            wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, message="the unacked hash to empty")
        finally:
            release.touch()  # a failed run must not leave the worker waiting for its held task at stop
            client.close()


def test_a_task_running_while_its_worker_loses_the_connection_runs_once(
    own_redis_env: dict[str, str], tmp_path: Path
) -> None:
    """The race a restart can lose: Redis is back before the worker has closed its broken channel. Stock kombu
    then puts the running task's message back on its queue and the task runs twice at once."""
    env = own_redis_env
    platform = configure(Settings())
    r = platform.redis()
    release = tmp_path / "release-held"
    worker = WorkerProcess("ai", env, tmp_path / "worker.log", ["--pool", "threads", "--concurrency", "3"])
    try:
        # Given a worker running a task
        worker.wait_ready()
        held = dispatch("t_hold", {"tag": "held", "release_path": str(release)})
        wait_for(lambda: r.lrange("test:held:started", 0, -1) == [b"held"], message="the held task to start")
        # When every connection but ours is dropped while Redis stays up
        ours = r.client_id()
        for client in r.client_list():
            if int(client["id"]) != ours:
                r.client_kill_filter(_id=client["id"])
        # Then the worker consumes again, and the held task is neither queued again nor started twice
        assert dispatch("t_echo", {"tag": "after"}).wait(timeout=30) == {"tag": "after"}
        assert r.llen("ai.normal") == 0 and r.hlen(platform.keys.unacked("ai")) == 1
        release.touch()
        assert held.wait(timeout=30) == "held"
        wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, message="the ack of the held task")
        assert r.lrange("test:held:started", 0, -1) == [b"held"]
        assert worker.proc.poll() is None
    finally:
        release.touch()
        worker.stop()
