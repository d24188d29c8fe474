"""Every way a task can end fires its callback exactly once: success, retry then success, dead-lettered,
cancelled, timed out (running, and still queued)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from meetingtasks import Status, TaskFailed, dispatch
from meetingtasks.core.settings import Settings
from meetingtasks.operations.embedded import RedisServer, free_port
from meetingtasks.store.platform import Platform
from meetingtasks.worker.watchdog import Watchdog
from tests.support.dispatcher_tasks import WORKER_ENV, callbacks_seen
from tests.support.script_hooks import before_script_call, open_oom_window
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

CALLBACKS = {"on_success": "t_on_outcome", "on_failure": "t_on_outcome"}


@pytest.fixture
def worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker("ai", "--pool", "threads", "--concurrency", "4", env_overrides=WORKER_ENV)


def settled_callbacks(platform: Platform, r: redis.Redis, task_id: str, expected: int = 1) -> list[dict[str, Any]]:
    """The callbacks fired for ``task_id``, once the outbox is empty and every callback task has run."""

    def settled() -> list[dict[str, Any]] | None:
        if r.zcard(platform.keys.callbacks):
            return None
        mine = [c for c in callbacks_seen() if c["task_id"] == task_id]
        return mine if len(mine) >= expected else None

    return wait_for(settled, 20, message=f"the callback of {task_id}")  # type: ignore[return-value]


@pytest.mark.slow
def test_success_fires_on_success_once_with_the_result(platform: Platform, r: redis.Redis,
                                                       worker: WorkerProcess) -> None:
    handle = dispatch("t_echo", {"tag": "ok"}, **CALLBACKS)
    assert handle.wait(20) == {"tag": "ok"}
    [seen] = settled_callbacks(platform, r, handle.id)
    assert seen["status"] == "SUCCEEDED"
    assert seen["result"] == {"tag": "ok"}
    assert seen["task_type"] == "t_echo"
    assert seen["error"] is None


@pytest.mark.slow
def test_retry_then_success_fires_once(platform: Platform, r: redis.Redis, worker: WorkerProcess) -> None:
    handle = dispatch("t_flaky", {"tag": "flaky", "fail_times": 1}, **CALLBACKS)
    assert handle.wait(20) == "ok"
    [seen] = settled_callbacks(platform, r, handle.id)
    assert (seen["status"], seen["attempt"]) == ("SUCCEEDED", 2)
    assert [s for s, _, _ in handle.info().history].count(Status.RETRYING) == 1


@pytest.mark.slow
def test_dead_lettered_fires_on_failure_once_with_the_error(platform: Platform, r: redis.Redis,
                                                            worker: WorkerProcess) -> None:
    handle = dispatch("t_always_fails", {"tag": "doomed"}, **CALLBACKS)
    with pytest.raises(TaskFailed, match="always fails: doomed"):
        handle.wait(20)
    [seen] = settled_callbacks(platform, r, handle.id)
    assert seen["status"] == "DEAD_LETTERED"
    assert seen["error"] == "always fails: doomed"
    assert seen["error_type"] == "RuntimeError"


@pytest.mark.slow
def test_permanent_failure_fires_on_failure_once(platform: Platform, r: redis.Redis, worker: WorkerProcess) -> None:
    handle = dispatch("t_permanent", {"tag": "no"}, on_failure="t_on_outcome")
    with pytest.raises(TaskFailed, match="refused: no"):
        handle.wait(20)
    [seen] = settled_callbacks(platform, r, handle.id)
    assert seen["status"] == "FAILED"


@pytest.mark.slow
def test_cancelled_fires_on_failure_once(platform: Platform, r: redis.Redis, worker: WorkerProcess) -> None:
    handle = dispatch("t_echo", {"tag": "never"}, delay=60, **CALLBACKS)
    assert handle.status() == "SCHEDULED"
    handle.cancel()
    assert handle.status() == "CANCELLED"
    [seen] = settled_callbacks(platform, r, handle.id)
    assert seen["status"] == "CANCELLED"
    assert r.llen("test:runs") == 0


@pytest.mark.slow
def test_running_task_past_its_timeout_is_timed_out_and_its_late_result_refused(
    platform: Platform, r: redis.Redis, worker: WorkerProcess
) -> None:
    handle = dispatch("t_sleep", {"tag": "slow", "seconds": 2}, timeout=0.5, **CALLBACKS)
    with pytest.raises(TaskFailed, match=r"TIMED_OUT: not finished within its timeout of 0\.5s"):
        handle.wait(20)
    [seen] = settled_callbacks(platform, r, handle.id)
    assert seen["status"] == "TIMED_OUT"
    # The handler (a thread that cannot be killed) finishes later: its SUCCEEDED is refused.
    wait_for(lambda: r.llen("test:finished"), 20, message="the slow handler to return")
    wait_for(lambda: r.zcard(platform.keys.callbacks) == 0, 10, message="an empty outbox")
    assert handle.status() == "TIMED_OUT"
    assert len([c for c in callbacks_seen() if c["task_id"] == handle.id]) == 1
    assert r.zcard(platform.keys.deadlines) == 0


@pytest.mark.slow
def test_queued_task_past_its_timeout_never_runs(platform: Platform, r: redis.Redis,
                                                 start_worker: Callable[..., WorkerProcess]) -> None:
    # Given a task with a short timeout and no worker to run it
    handle = dispatch("t_echo", {"tag": "late"}, timeout=0.2, **CALLBACKS)
    # When the watchdog (here: the one beat runs) passes after the deadline
    dog = Watchdog(platform, r)
    wait_for(lambda: dog.check()[0] == 1, 10, message="the watchdog to time the task out")
    assert handle.status() == "TIMED_OUT"
    # Then a worker arriving later skips it and runs only the failure callback
    start_worker("ai", "--pool", "threads", "--concurrency", "2", env_overrides=WORKER_ENV)
    [seen] = settled_callbacks(platform, r, handle.id)
    assert seen["status"] == "TIMED_OUT"
    wait_for(lambda: r.llen("ai.normal") == 0, 10, message="the stale message to be consumed")
    assert r.llen("test:runs") == 0
    assert handle.status() == "TIMED_OUT"


def test_finished_task_is_not_timed_out_later(platform: Platform, r: redis.Redis, worker: WorkerProcess) -> None:
    handle = dispatch("t_echo", {"tag": "quick"}, timeout=0.3, **CALLBACKS)
    handle.wait(20)
    assert r.zcard(platform.keys.deadlines) == 0, "the terminal transition drops the deadline"
    assert Watchdog(platform, r).expire(handle.id) is False
    assert handle.status() == "SUCCEEDED"


def test_unknown_callback_type_is_refused_before_queuing(platform: Platform, r: redis.Redis) -> None:
    with pytest.raises(ValueError, match="unknown task type 't_on_outcom'"):
        dispatch("t_echo", {"tag": "x"}, on_success="t_on_outcom")
    assert r.dbsize() == 0


def test_callback_whose_model_refuses_the_outcome_is_dead_lettered(platform: Platform, r: redis.Redis) -> None:
    # t_echo takes Tagged, not TaskOutcome: the callback cannot be dispatched, and that is visible.
    handle = dispatch("t_echo", {"tag": "x"}, on_success="t_echo")
    platform.status.transition(r, handle.id, Status.SUCCEEDED, attempt=1, fields={"result": 1})
    Watchdog(platform, r).check()
    [letter] = platform.dead_letters.list(r, "ai")
    assert letter.reason == "CallbackRefused"
    assert "payload.tag" in letter.error and handle.id in letter.error
    assert r.zcard(platform.keys.callbacks) == 0


@pytest.mark.slow
def test_a_task_its_worker_cannot_run_is_dead_lettered_and_its_callback_fires(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given a worker that does not load the module of t_progress (and of the callback type)
    start_worker("ai", "--pool", "threads", "--concurrency", "2", env_overrides={
        "MEETINGTASKS_INCLUDE": "tests.support.tasks", "MEETINGTASKS_WATCHDOG_INTERVAL_S": "0.05"})
    # When such a task arrives, its consumer dead-letters it (worker/quarantine.py)
    handle = dispatch("t_progress", {"tag": "unknown here"}, on_failure="t_on_outcome")
    with pytest.raises(TaskFailed, match="DEAD_LETTERED: unknown task type 't_progress'"):
        handle.wait(20)
    # Then the worker's watchdog dispatches the failure callback (to the queue recorded at dispatch: this
    # worker does not know the callback type either), exactly once
    callback_id = wait_for(lambda: r.get(platform.keys.dedup(f"mt-callback:{handle.id}")), 20,
                           message="the failure callback")
    callback = platform.status.get(r, callback_id.decode())  # type: ignore[union-attr]
    assert callback is not None and callback.fields["type"] == "t_on_outcome"
    assert r.zcard(platform.keys.callbacks) == 0
    # (this worker cannot run the callback either: it is dead-lettered too, with the outcome as its payload)
    letter = wait_for(lambda: next((d for d in platform.dead_letters.list(r, "ai") if d.id == callback.id), None),
                      20, message="the callback's own dead letter")
    assert letter.payload["status"] == "DEAD_LETTERED"  # type: ignore[union-attr]
    assert letter.payload["task_id"] == handle.id  # type: ignore[union-attr]


# --- transient errors are retried, refusals dead-lettered ----------------------------------------------------
def fast_retries(settings: Settings, **changes: Any) -> Platform:
    """The test's own platform, whose watchdog retries a failed callback after 0.2 s (doubling)."""
    return Platform(settings.model_copy(update={"callback_retry_s": 0.2, "callback_retry_max_s": 1.0,
                                                "dispatch_retry_s": 0.3, **changes}))


def kill_connection(admin: redis.Redis) -> Callable[[Any], None]:
    """A hook that has Redis drop the connection about to send the call (what a restart or failover does)."""

    def hook(connection: Any) -> None:
        connection.send_command("CLIENT", "ID")
        admin.client_kill_filter(_id=connection.read_response())

    return hook


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["oom", "dropped connection"])
def test_callback_whose_dispatch_meets_a_transient_error_fires_once_after_redis_recovers(
    settings: Settings, platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch, fault: str,
) -> None:
    # Given a worker that runs tasks and callbacks (its own watchdog idle: the test's fires the callbacks)
    start_worker("ai", "--pool", "threads", "--concurrency", "2",
                 env_overrides={**WORKER_ENV, "MEETINGTASKS_WATCHDOG_INTERVAL_S": "3600"})
    handle = dispatch("t_echo", {"tag": "ok"}, **CALLBACKS)
    assert handle.wait(20) == {"tag": "ok"}
    dog = Watchdog(fast_retries(settings), r)
    # When Redis refuses the callback's dispatch (a maxmemory window) or drops its connection
    admin = redis.Redis.from_url(settings.broker_url())
    closes: list[Callable[[], None]] = []
    hook = (lambda _c: closes.append(open_oom_window(admin))) if fault == "oom" else kill_connection(admin)
    try:
        with before_script_call(monkeypatch, hook, match=b"t_on_outcome") as ran:
            dog.check()
        assert ran == [1], "the fault hit the callback's dispatch"
    finally:
        for close in closes:
            close()
    # Then once Redis takes writes again the callback fires, exactly once
    wait_for(lambda: dog.check()[1] == 1 or not r.zcard(platform.keys.callbacks), 20,
             message="the callback to be settled")
    [seen] = settled_callbacks(platform, r, handle.id)
    assert seen["status"] == "SUCCEEDED"
    assert platform.dead_letters.list(r, "ai") == []
    assert r.exists(platform.keys.callback_retries) == 0, "the retry count goes with the settled entry"


@pytest.mark.slow
def test_callback_to_a_redis_that_is_down_is_retried_with_backoff_then_fires_once(
    settings: Settings, platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    # Given a callback type of another service (media), on a Redis of its own that is down, and known to this
    # process only by the name and queue recorded at dispatch (its module is loaded only into its own worker)
    port = free_port()
    other_url = f"redis://127.0.0.1:{port}/0"
    handle = dispatch("t_echo", {"tag": "x"})
    r.hset(platform.keys.status(handle.id), mapping={"on_success": "t_media_outcome",
                                                     "on_success_queue": "media.normal"})
    platform.status.transition(r, handle.id, Status.SUCCEEDED, attempt=1, fields={"result": "1"})
    dog = Watchdog(fast_retries(settings, service_redis_urls={"media": other_url}), r)
    # When its dispatch fails for longer than dispatch_retry_s (BrokerUnavailable), twice
    dog.check()
    assert platform.dead_letters.list(r, "user") == [], "a Redis that cannot be reached is not a refusal"
    assert r.hget(platform.keys.callback_retries, f"t:{handle.id}") == b"1"
    wait_for(lambda: dog.check() and r.hget(platform.keys.callback_retries, f"t:{handle.id}") == b"2", 10,
             message="a second failed attempt")
    # Then it was not dead-lettered: it waits in the outbox, due after the (doubled) backoff
    assert platform.dead_letters.list(r, "user") == platform.dead_letters.list(r, "ai") == []
    due = r.zscore(platform.keys.callbacks, f"t:{handle.id}")
    assert due is not None
    # And once that Redis is up, the callback is queued there and runs, exactly once
    server = RedisServer(tmp_path / "media-redis", port=port).start()
    try:
        start_worker("media", "--pool", "threads", "--concurrency", "2",
                     env_overrides={"MEETINGTASKS_REDIS_URL": other_url,
                                    "MEETINGTASKS_INCLUDE": "tests.support.remote_callback_tasks"})
        other = redis.Redis.from_url(other_url)
        wait_for(lambda: dog.check()[1] == 1 or not r.zcard(platform.keys.callbacks), 20,
                 message="the callback to be settled")
        wait_for(lambda: other.llen("test:remote-callbacks"), 20, message="the callback to run")
        [raw] = other.lrange("test:remote-callbacks", 0, -1)
        assert json.loads(raw)["task_id"] == handle.id
        assert r.zcard(platform.keys.callbacks) == 0
        assert r.exists(platform.keys.callback_retries) == 0
        other.close()
    finally:
        server.stop()


def test_callback_of_an_unknown_type_is_dead_lettered_with_the_reason(platform: Platform, r: redis.Redis) -> None:
    # Given a record naming a callback type no process knows, with no queue recorded for it
    handle = dispatch("t_echo", {"tag": "x"})
    r.hset(platform.keys.status(handle.id), "on_success", "t_gone")
    platform.status.transition(r, handle.id, Status.SUCCEEDED, attempt=1, fields={"result": "1"})
    # When the watchdog fires it
    Watchdog(platform, r).check()
    # Then it is dead-lettered (not retried) with a reason that names the type and the task
    [letter] = platform.dead_letters.list(r, "user")
    assert letter.reason == "CallbackRefused"
    assert "unknown task type 't_gone'" in letter.error and handle.id in letter.error
    assert r.zcard(platform.keys.callbacks) == 0
    assert r.exists(platform.keys.callback_retries) == 0
