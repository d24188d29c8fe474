"""Dispatcher features beyond one plain task: de-duplication under concurrency, batches and their
completion callback, progress reports, global rate limits, the status command."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis

from meetingtasks import Priority, Status, dispatch, dispatch_batch
from meetingtasks.core.message import loads
from meetingtasks.store.dedup import claim_and_enqueue, claim_and_enqueue_script
from meetingtasks.store.platform import Platform
from meetingtasks.worker.ratelimit import interval_ms, reserve_slot
from tests.support.dispatcher_tasks import WORKER_ENV
from tests.support.processes import ROOT
from tests.support.script_hooks import ProducerCrashed, before_script_call, open_oom_window
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess


@pytest.fixture
def worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker("ai", "--pool", "threads", "--concurrency", "4", env_overrides=WORKER_ENV)


# --- de-duplication -------------------------------------------------------------------------------------------
def test_hundred_concurrent_dispatches_with_one_key_queue_one_task(platform: Platform, r: redis.Redis) -> None:
    start = threading.Barrier(100)
    ids: list[str] = []
    lock = threading.Lock()

    def send(n: int) -> None:
        start.wait()
        handle = dispatch("t_echo", {"tag": f"copy-{n}"}, dedup_key="meeting-42-summary")
        with lock:
            ids.append(handle.id)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(ids) == 100
    assert len(set(ids)) == 1, "every caller gets the first task's handle"
    assert r.llen("ai.normal") == 1
    assert len(list(r.scan_iter(platform.keys.status("*")))) == 1
    [queued] = r.lrange("ai.normal", 0, -1)
    assert loads(queued)["headers"]["id"] == ids[0]


def test_dedup_key_expires_after_its_window(platform: Platform, r: redis.Redis) -> None:
    first = dispatch("t_echo", {"tag": "a"}, dedup_key="k")
    assert dispatch("t_echo", {"tag": "b"}, dedup_key="k").id == first.id
    r.delete(platform.keys.dedup("k"))  # what the TTL (dedup_ttl_s) does
    assert dispatch("t_echo", {"tag": "c"}, dedup_key="k").id != first.id
    assert r.ttl(platform.keys.dedup("k")) == pytest.approx(platform.settings.dedup_ttl_s, abs=5)


def crash(_connection: object) -> None:
    raise ProducerCrashed


@pytest.mark.parametrize("delay", [None, 30.0], ids=["queued", "delayed"])
def test_producer_dying_before_its_enqueue_leaves_no_dedup_key(platform: Platform, r: redis.Redis,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                delay: float | None) -> None:
    # Given a producer that dies as its enqueue (a script call) is about to leave the process
    with before_script_call(monkeypatch, crash) as ran, pytest.raises(ProducerCrashed):
        dispatch("t_echo", {"tag": "lost"}, delay=delay, dedup_key="once")
    assert ran == [1]
    # Then nothing of it is in Redis: no key naming a task that was never queued
    assert r.get(platform.keys.dedup("once")) is None
    assert r.dbsize() == 0
    # And the next dispatch with the key queues a real task
    handle = dispatch("t_echo", {"tag": "real"}, delay=delay, dedup_key="once")
    assert handle.status() == ("QUEUED" if delay is None else "SCHEDULED")
    assert r.get(platform.keys.dedup("once")) == handle.id.encode()


@pytest.mark.parametrize("delay", [None, 30.0], ids=["queued", "delayed"])
def test_dispatch_refused_by_redis_leaves_no_dedup_key(platform: Platform, r: redis.Redis,
                                                        monkeypatch: pytest.MonkeyPatch, delay: float | None) -> None:
    # Given Redis starts refusing writes (OOM) just as the enqueue is sent
    admin = redis.Redis.from_url(platform.settings.broker_url())
    windows: list[Callable[[], None]] = []
    try:
        with before_script_call(monkeypatch, lambda _c: windows.append(open_oom_window(admin))), \
                pytest.raises(redis.ResponseError, match="OOM"):
            dispatch("t_echo", {"tag": "refused"}, delay=delay, dedup_key="once")
    finally:
        for close in windows:
            close()
    assert len(windows) == 1
    # Then the refused dispatch holds no key, and a dispatch after the window queues a real task
    assert r.get(platform.keys.dedup("once")) is None
    handle = dispatch("t_echo", {"tag": "real"}, delay=delay, dedup_key="once")
    assert handle.status() == ("QUEUED" if delay is None else "SCHEDULED")
    assert r.llen("ai.normal") == (1 if delay is None else 0)


def test_dedup_dispatch_whose_connection_drops_is_sent_again_and_queues_once(platform: Platform, r: redis.Redis,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # Given Redis drops the connection that carries the dispatch (a restart, a failover, a proxy)
    admin = redis.Redis.from_url(platform.settings.broker_url())

    def drop(connection: Any) -> None:
        connection.send_command("CLIENT", "ID")
        admin.client_kill_filter(_id=connection.read_response())

    with before_script_call(monkeypatch, drop) as ran:
        handle = dispatch("t_echo", {"tag": "a"}, dedup_key="k")
    assert ran == [1]
    # Then the dispatch went again on a new connection (safe: the key says whether it ran) and queued one task
    assert handle.status() == "QUEUED"
    assert r.llen("ai.normal") == 1
    assert r.get(platform.keys.dedup("k")) == handle.id.encode()


def test_dedup_key_of_a_task_whose_record_is_gone_queues_a_new_task(platform: Platform, r: redis.Redis) -> None:
    first = dispatch("t_echo", {"tag": "a"}, dedup_key="k")
    # When its status record expires before the key (status_ttl_s < dedup_ttl_s) or is deleted
    r.delete(platform.keys.status(first.id))
    # Then the key no longer hands out a handle no one can look up: a new task is queued and owns it
    second = dispatch("t_echo", {"tag": "b"}, dedup_key="k")
    assert second.id != first.id
    assert second.status() == "QUEUED"
    assert r.get(platform.keys.dedup("k")) == second.id.encode()
    assert dispatch("t_echo", {"tag": "c"}, dedup_key="k").id == second.id


def test_claim_script_refuses_a_command_list_it_cannot_run_before_writing(platform: Platform, r: redis.Redis) -> None:
    once = claim_and_enqueue_script()  # no script embedded: a command list may hold plain commands only
    key = platform.keys.dedup("direct")
    unknown = [("EVALSHA", "0" * 40, 0), ("LPUSH", "ai.normal", "m")]
    with pytest.raises(redis.ResponseError, match="not embedded"):
        claim_and_enqueue(once, r, key, "t-1", 60, platform.keys.status(""), unknown)
    assert r.dbsize() == 0
    # A plain command list runs after the claim; a second call with the key (its owner recorded) runs nothing.
    commands = [("HSET", platform.keys.status("t-1"), "status", "QUEUED"), ("LPUSH", "ai.normal", "m")]
    status = platform.keys.status("")
    assert claim_and_enqueue(once, r, key, "t-1", 60, status, commands) == ("t-1", True)
    assert claim_and_enqueue(once, r, key, "t-2", 60, status, commands) == ("t-1", False)
    assert (r.llen("ai.normal"), r.get(key), 55 < r.ttl(key) <= 60) == (1, b"t-1", True)


# --- batches ------------------------------------------------------------------------------------------------------
def test_batch_is_sent_in_one_round_trip(platform: Platform, r: redis.Redis,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    sends: list[int] = []
    real_send = redis.connection.AbstractConnection.send_packed_command

    def counting_send(self: Any, command: Any, check_health: bool = True) -> None:
        sends.append(1)
        real_send(self, command, check_health)

    r.ping()  # connect first: the handshake is not part of the batch
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting_send)
    batch = dispatch_batch([("t_echo", {"tag": str(n)}) for n in range(200)])
    monkeypatch.undo()
    assert len(sends) == 1, "200 tasks, one write to Redis"
    assert r.llen("ai.normal") == 200
    assert batch.status() == {"QUEUED": 200}
    assert len(batch) == 200 and batch[0].type == "t_echo"


def test_batch_items_take_options_and_refuse_unknown_ones(platform: Platform, r: redis.Redis) -> None:
    batch = dispatch_batch([{"type": "t_echo", "payload": {"tag": "a"}, "priority": Priority.HIGH},
                            {"type": "t_echo", "payload": {"tag": "b"}, "delay": 30}])
    assert (r.llen("ai.high"), batch.status()) == (1, {"QUEUED": 1, "SCHEDULED": 1})
    with pytest.raises(ValueError, match="dedup_key"):
        dispatch_batch([{"type": "t_echo", "payload": {"tag": "c"}, "dedup_key": "x"}])


@pytest.mark.slow
def test_batch_on_complete_fires_once_when_every_member_finished(platform: Platform, r: redis.Redis,
                                                                 worker: WorkerProcess) -> None:
    items: list[Any] = [("t_echo", {"tag": str(n)}) for n in range(5)]
    items.append(("t_permanent", {"tag": "refused"}))
    batch = dispatch_batch(items, on_complete="t_on_batch")
    assert batch.wait(30) == {"SUCCEEDED": 5, "FAILED": 1}
    wait_for(lambda: r.llen("test:batches"), 20, message="the on_complete callback")
    wait_for(lambda: r.zcard(platform.keys.callbacks) == 0, 10, message="an empty outbox")
    [raw] = r.lrange("test:batches", 0, -1)
    assert json.loads(raw) == {"batch_id": batch.id, "total": 6, "counts": {"SUCCEEDED": 5, "FAILED": 1}}


@pytest.mark.slow
def test_a_solo_batch_counts_many_members_in_one_write_and_fires_on_complete_once(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    # A solo worker records the outcomes of a whole fetch in one call, counting each batch once for all of them.
    items: list[Any] = [("t_echo", {"tag": str(n)}) for n in range(12)]
    items += [("t_permanent", {"tag": f"refused-{n}"}) for n in range(2)]
    batch = dispatch_batch(items, on_complete="t_on_batch")
    start_worker("ai", "--pool", "solo", env_overrides=WORKER_ENV)
    assert batch.wait(30) == {"SUCCEEDED": 12, "FAILED": 2}
    wait_for(lambda: r.llen("test:batches"), 20, message="the on_complete callback")
    wait_for(lambda: r.zcard(platform.keys.callbacks) == 0, 10, message="an empty outbox")
    [raw] = r.lrange("test:batches", 0, -1)
    assert json.loads(raw) == {"batch_id": batch.id, "total": 14, "counts": {"SUCCEEDED": 12, "FAILED": 2}}
    assert r.hget(platform.keys.batch(batch.id), "done") == b"14"


@pytest.mark.slow
def test_empty_batch_completes_at_once(platform: Platform, r: redis.Redis, worker: WorkerProcess) -> None:
    batch = dispatch_batch([], on_complete="t_on_batch")
    wait_for(lambda: r.llen("test:batches"), 20, message="the on_complete callback")
    assert json.loads(r.lindex("test:batches", 0))["batch_id"] == batch.id


# --- progress -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_progress_reaches_the_status_record_and_the_status_channel(platform: Platform, r: redis.Redis,
                                                                   worker: WorkerProcess) -> None:
    pubsub = r.pubsub()
    pubsub.subscribe(platform.keys.status_channel)
    handle = dispatch("t_progress", {"tag": "p1"})
    wait_for(lambda: handle.info().fields.get("progress") == "50.0", 20, message="50% in the record")
    info = handle.info().to_dict()
    assert (info["status"], info["progress"], info["progress_message"]) == ("STARTED", 50.0, "halfway through p1")
    r.set("test:release:p1", 1)
    assert handle.wait(20) == "p1"
    events = []
    while (message := pubsub.get_message(timeout=1)) is not None or not events or events[-1]["status"] != "SUCCEEDED":
        if message and message["type"] == "message":
            event = json.loads(message["data"])
            if event["id"] == handle.id:
                events.append(event)
    progress = [(e["status"], e.get("progress")) for e in events if "progress" in e]
    assert progress == [("STARTED", 50.0), ("STARTED", 100.0)]
    assert [s for s, _, _ in handle.info().history].count(Status.STARTED) == 1, "progress is not a transition"


def test_report_progress_outside_a_task_is_a_clear_error() -> None:
    from meetingtasks.worker.progress import report_progress

    with pytest.raises(RuntimeError, match="only inside a running task handler"):
        report_progress(10, "nope")


# --- global rate limits ------------------------------------------------------------------------------------------
def test_slots_are_spaced_by_the_rate(platform: Platform, r: redis.Redis) -> None:
    assert interval_ms(4) == 250
    waits = [reserve_slot(r, "test:rate", 4, now_s=1000.0) for _ in range(4)]
    assert waits == [0.0, 0.25, 0.5, 0.75]
    assert reserve_slot(r, "test:rate", 4, now_s=1002.0) == 0.0, "an idle budget starts again now"


@pytest.mark.slow
def test_rate_limited_type_is_deferred_not_failed(platform: Platform, r: redis.Redis,
                                                  start_worker: Callable[..., WorkerProcess]) -> None:
    # Given two workers sharing one budget of 5 starts per second
    start_worker("ai", "--pool", "threads", "--concurrency", "4", env_overrides=WORKER_ENV)
    start_worker("ai", "--pool", "threads", "--concurrency", "4", env_overrides=WORKER_ENV)
    # When 10 tasks arrive at once
    batch = dispatch_batch([("t_rated", {"tag": str(n)}) for n in range(10)])
    # Then all succeed, spread over about 2 s, never more than 5 starting within one second
    assert batch.wait(30) == {"SUCCEEDED": 10}
    starts = sorted(float(raw.decode().split("|")[1]) for raw in r.lrange("test:rated", 0, -1))
    assert len(starts) == 10
    assert starts[-1] - starts[0] >= 9 * 0.2 * 0.9
    for i, t0 in enumerate(starts):
        assert len([t for t in starts[i:] if t < t0 + 1.0]) <= 5 + 1  # +1: slots are instants, runs are late
    deferred = [h for h in batch if Status.SCHEDULED in [s for s, _, _ in h.info().history]]
    assert len(deferred) >= 8


# --- status command -------------------------------------------------------------------------------------------------
def test_status_command_prints_the_record_as_json(platform: Platform, env: dict[str, str]) -> None:
    handle = dispatch("t_echo", {"tag": "cli"}, timeout=60, on_failure="t_on_outcome")
    out = subprocess.run([sys.executable, "-m", "meetingtasks.cli", "status", handle.id, "--json"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert (record["id"], record["status"], record["type"], record["on_failure"]) == (
        handle.id, "QUEUED", "t_echo", "t_on_outcome")
    assert record["deadline"] > record["created_at"]
    missing = subprocess.run([sys.executable, "-m", "meetingtasks.cli", "status", "nope"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert (missing.returncode, missing.stderr.strip()) == (
        1, "error: no task with id 'nope' (unknown, or its status expired)")
