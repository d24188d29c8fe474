"""Cancellation in every state: scheduled, queued (also while workers are down), retrying, running, finished."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import redis

import tests.support.scheduling_tasks  # noqa: F401 - registers t_cooperative here too
from meetingtasks import TaskFailed, TaskNotFound, dispatch, is_cancelled
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.store.cancel import cancel
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status
from tests.support.processes import ROOT
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

INCLUDE = {"MEETINGTASKS_INCLUDE": "tests.support.tasks,tests.support.scheduling_tasks"}


def ran(r: redis.Redis, kind: str, tag: str) -> int:
    return sum(1 for x in r.lrange(f"test:{kind}", 0, -1) if x.decode().split("|")[0] == tag)


def history(platform: Platform, task_id: str) -> list[str]:
    return [s.value for s, _, _ in Dispatcher(platform).record(task_id).history]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meetingtasks.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def expect_cancelled(handle_wait: Callable[[], object]) -> None:
    with pytest.raises(TaskFailed) as failed:
        handle_wait()
    assert failed.value.status == "CANCELLED"


@pytest.mark.slow
def test_a_scheduled_task_is_removed_and_never_runs(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # given a running worker and a task due in 1.5 s
    start_worker("ai")
    handle = dispatch("t_echo", {"tag": "planned"}, delay=1.5)
    # when it is cancelled before it is due
    assert handle.cancel() is Status.CANCELLED
    # then it left the delayed set, and a task due after it runs while it never does
    assert platform.delayed.count(r, "ai") == 0
    dispatch("t_echo", {"tag": "marker"}, delay=2).wait(timeout=30)
    assert ran(r, "runs", "planned") == 0
    assert history(platform, handle.id) == ["SCHEDULED", "CANCELLED"]
    assert platform.dead_letters.count(r, "ai") == 0


@pytest.mark.slow
def test_a_queued_task_cancelled_while_no_worker_runs_is_skipped_when_one_starts(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # given a queued task and no worker
    handle = dispatch("t_echo", {"tag": "queued"})
    # when it is cancelled, and only then a worker starts (it never heard of the cancel)
    assert handle.cancel() is Status.CANCELLED
    assert r.llen("ai.normal") == 1  # the message is still there
    worker = start_worker("ai")
    dispatch("t_echo", {"tag": "marker"}).wait(timeout=30)
    # then the worker took the message and dropped it unrun, without a dead letter
    wait_for(lambda: r.llen("ai.normal") == 0, 10, message="the cancelled message to be consumed")
    assert ran(r, "runs", "queued") == 0
    assert history(platform, handle.id) == ["QUEUED", "CANCELLED"]
    assert platform.dead_letters.count(r, "ai") == 0
    wait_for(lambda: "was cancelled; skipped" in worker.log(), 10, message="the skip in the worker log")


@pytest.mark.slow
def test_a_retrying_task_waiting_for_its_backoff_is_not_retried(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # given a task that failed and waits 5 s for its retry
    start_worker("ai")
    handle = dispatch("t_slow_backoff", {"tag": "backoff", "fail_times": 5})
    wait_for(lambda: handle.status() is Status.RETRYING, 20, message="the first failure")
    # when it is cancelled during the backoff
    assert handle.cancel() is Status.CANCELLED
    # then the retry never comes
    assert platform.delayed.count(r, "ai") == 0
    dispatch("t_echo", {"tag": "marker"}, delay=6).wait(timeout=30)
    assert ran(r, "attempts", "backoff") == 1
    assert history(platform, handle.id)[-1] == "CANCELLED"


@pytest.mark.slow
def test_a_running_handler_that_checks_its_flag_stops_and_ends_cancelled(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # given a long cooperative handler that is running
    start_worker("ai", env_overrides=INCLUDE)
    handle = dispatch("t_cooperative", {"tag": "long", "seconds": 60})
    wait_for(lambda: ran(r, "started", "long") == 1, 20, message="the handler to start")
    # when it is cancelled (without terminate)
    outcome = cancel(platform, handle.id)
    # then the cancel is requested while it runs, and the handler stops at its next check (every 50 ms, so it may
    # have stopped before the cancel call returns: the call took 98 ms once after a heavier test in this process)
    assert (outcome.before, outcome.ok) == (Status.STARTED, True)
    assert outcome.status in (Status.STARTED, Status.CANCELLED)
    started = time.monotonic()
    expect_cancelled(lambda: handle.wait(timeout=20))
    assert time.monotonic() - started < 10
    assert ran(r, "finished", "long") == 0
    assert history(platform, handle.id) == ["QUEUED", "STARTED", "CANCELLED"]
    assert platform.dead_letters.count(r, "ai") == 0


@pytest.mark.slow
def test_a_running_task_cancelled_and_redelivered_after_its_worker_died_is_dropped_at_fetch(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # given a running task that never checks its flag, cancelled without terminate
    doomed = start_worker("ai", "--pool", "threads", "--concurrency", "1")
    handle = dispatch("t_sleep", {"tag": "orphan", "seconds": 60})
    wait_for(lambda: ran(r, "started", "orphan") == 1, 30, message="the task to start")
    outcome = cancel(platform, handle.id)
    assert (outcome.before, outcome.status) == (Status.STARTED, Status.STARTED)
    # (the flag's copy in the status record, which the worker's fetch reads)
    assert r.hget(platform.keys.status(handle.id), "cancel_requested_at") == r.get(platform.keys.cancel(handle.id))
    # when its worker dies and another one gets the message back from the restore sweep
    doomed.kill(signal.SIGKILL)
    survivor = start_worker("ai", "--pool", "threads", "--concurrency", "1")
    # then the fetch sees the cancel and the task ends CANCELLED without running again
    wait_for(lambda: handle.status() is Status.CANCELLED, 30, message="the redelivered task to be cancelled")
    survivor.wait_log("was cancelled; skipped", 10)
    assert ran(r, "started", "orphan") == 1 and ran(r, "finished", "orphan") == 0
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, 20, message="the message to be acked")
    assert platform.dead_letters.count(r, "ai") == 0


@pytest.mark.slow
def test_terminate_kills_a_running_task_and_the_worker_goes_on(
    platform: Platform, r: redis.Redis, env: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    # given a prefork worker running a 60 s task that never checks its flag
    start_worker("ai", "--pool", "prefork", "--concurrency", "1")
    handle = dispatch("t_sleep", {"tag": "stuck", "seconds": 60})
    wait_for(lambda: ran(r, "started", "stuck") == 1, 30, message="the task to start")
    # when `meetingtasks cancel ID --terminate` runs
    out = cli(env, "cancel", handle.id, "--terminate")
    # then it reports the cancel, the task ends CANCELLED and the worker runs the next task
    assert out.returncode == 0, out.stderr
    assert "CANCELLED" in out.stdout
    assert handle.status() is Status.CANCELLED
    dispatch("t_echo", {"tag": "marker"}).wait(timeout=30)
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0 and r.llen("ai.normal") == 0, 20,
             message="nothing left held or queued")
    assert ran(r, "started", "stuck") == 1 and ran(r, "finished", "stuck") == 0
    assert handle.status() is Status.CANCELLED


@pytest.mark.slow
def test_terminate_on_a_threads_pool_says_it_cannot(
    platform: Platform, r: redis.Redis, env: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    # given a threads worker running a task that never checks its flag
    start_worker("ai")
    handle = dispatch("t_sleep", {"tag": "unkillable", "seconds": 8})
    wait_for(lambda: ran(r, "started", "unkillable") == 1, 20, message="the task to start")
    # when --terminate is asked of a pool that cannot kill a thread
    out = cli(env, "cancel", handle.id, "--terminate")
    # then the CLI says so in one line and fails; the flag is set, but this handler ignores it and ends
    assert out.returncode == 1
    assert out.stderr.strip() == (f"error: task {handle.id} is running and could not be terminated (its worker's "
                                  "pool cannot kill a running task; only prefork can); its cancel flag is set")
    assert is_cancelled(handle.id)
    assert handle.wait(timeout=20) == "unkillable"


@pytest.mark.slow
def test_cancelling_a_finished_task_says_so_and_changes_nothing(
    platform: Platform, env: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    # given a task that succeeded
    start_worker("ai")
    handle = dispatch("t_echo", {"tag": "done"})
    handle.wait(timeout=30)
    before = Dispatcher(platform).record(handle.id)
    # when it is cancelled, through the API and the CLI
    assert handle.cancel() is Status.SUCCEEDED
    out = cli(env, "cancel", handle.id)
    # then nothing changed and the CLI exits 1 with one line saying why
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: task {handle.id} already finished (SUCCEEDED); nothing to cancel"
    after = Dispatcher(platform).record(handle.id)
    assert after.history == before.history and after.result == {"tag": "done"}
    assert not is_cancelled(handle.id)


def test_cancelling_twice_is_fine(platform: Platform, env: dict[str, str]) -> None:
    handle = dispatch("t_echo", {"tag": "twice"}, delay=60)
    first = cli(env, "cancel", handle.id)
    second = cli(env, "cancel", handle.id)
    assert (first.returncode, second.returncode) == (0, 0), (first.stderr, second.stderr)
    assert first.stdout.strip() == f"{handle.id}: CANCELLED (was SCHEDULED)"
    assert second.stdout.strip() == f"{handle.id}: already CANCELLED"


def test_cancel_of_an_unknown_id_is_a_clear_error_with_exit_code_1(platform: Platform, env: dict[str, str]) -> None:
    out = cli(env, "cancel", "no-such-task")
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.strip() == "error: no task with id 'no-such-task' (unknown, or its status expired)"
    with pytest.raises(TaskNotFound):
        cancel(platform, "no-such-task")


def test_a_scheduled_task_whose_status_expired_is_still_found_and_removed(platform: Platform,
                                                                         r: redis.Redis) -> None:
    # given a waiting task whose status record is gone
    handle = dispatch("t_echo", {"tag": "orphan"}, priority="high", delay=60)
    r.delete(platform.keys.status(handle.id))
    # when it is cancelled
    outcome = cancel(platform, handle.id)
    # then the delayed set is searched, the entry removed and a CANCELLED record written with its identity
    assert (outcome.before, outcome.status) == (Status.SCHEDULED, Status.CANCELLED)
    assert platform.delayed.count(r, "ai") == 0
    record = Dispatcher(platform).record(handle.id)
    assert (record.fields["type"], record.fields["service"], record.fields["priority"]) == ("t_echo", "ai", "high")


def test_is_cancelled_reads_the_flag_by_id_and_needs_an_id_outside_a_task(platform: Platform) -> None:
    handle = dispatch("t_echo", {"tag": "flagged"})
    assert not is_cancelled(handle.id)
    handle.cancel()
    assert is_cancelled(handle.id)
    with pytest.raises(RuntimeError, match="only inside a running task"):
        is_cancelled()
