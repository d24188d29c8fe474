"""Hostile review: queue items that still got past every guard."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis

from meetingtasks import dispatch
from meetingtasks.core.message import new_id
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess
from tests.test_poison_messages import QUEUE, SERVICE, assert_nothing_left, push, valid_envelope

# Slow tier: every test runs worker subprocesses through kills, redeliveries or timeouts.
pytestmark = pytest.mark.slow


def object_body(fields: dict[str, Any], headers: dict[str, Any]) -> bytes:
    """A queue item whose body is a JSON object (base64, as Celery and celery-node write it)."""
    envelope = {"body": base64.b64encode(orjson.dumps(fields)).decode(), "content-type": "application/json",
                "content-encoding": "utf-8", "headers": headers,
                "properties": {"delivery_tag": new_id(), "body_encoding": "base64", "delivery_mode": 2,
                               "delivery_info": {"exchange": "", "routing_key": QUEUE}}}
    return orjson.dumps(envelope)


def protocol1(**fields: Any) -> bytes:
    """A Celery protocol-1 message (everything in the body, no task header) with ``fields`` in its body."""
    return object_body({"task": "t_echo", "id": new_id(), "args": [{"tag": "p1"}], "kwargs": {}, "retries": 0,
                        **fields}, {})


def hybrid(**fields: Any) -> bytes:
    """A protocol-2 message (task and id headers, nothing else) whose body is an object with ``args``: Celery
    takes the headers it lacks (retries, eta, ...) from the body ("hybrid" messages)."""
    task_id = new_id()
    return object_body({"args": [{"tag": "hy"}], "kwargs": {}, **fields}, {"task": "t_echo", "id": task_id})


# (case, item, what the dead letter's error names). Before the fix the first two ran into the task's
# int(retries) and were acked as a plain task failure: gone, with no dead letter and no status record.
BODY_OBJECT_CASES: dict[str, tuple[bytes, str]] = {
    "protocol1-retries-a-string": (protocol1(retries="abc"), "body.retries"),
    "protocol1-retries-a-list": (protocol1(retries=[1]), "body.retries"),
    "hybrid-retries-a-string": (hybrid(retries="abc"), "body.retries"),
    "protocol1-task-a-list": (protocol1(task=["t_echo"]), "body.task"),
    "protocol1-retries-negative": (protocol1(retries=-5), "body.retries"),
    "protocol1-id-a-number": (protocol1(id=12345), "body.id"),
    "protocol1-id-a-list": (protocol1(id=["x"]), "body.id"),
    "protocol1-no-id": (object_body({"task": "t_echo", "args": [{"tag": "p1"}], "kwargs": {}}, {}), "body.id"),
    "protocol1-eta-garbage": (protocol1(eta="not a time"), "body.eta"),
    "protocol1-timelimit-a-string": (protocol1(timelimit="soon"), "body.timelimit"),
    "protocol1-kwargs-a-list": (protocol1(args=[], kwargs=[1, 2]), "body.kwargs"),
    "protocol1-args-a-string": (protocol1(args="abc"), "body.args"),
    "protocol1-claims-finished": (protocol1(mt_fetch_started=0, mt_fetch_deliveries=1, mt_fetch_cancelled=0),
                                  "body.mt_fetch_"),
}


@pytest.mark.parametrize("case", list(BODY_OBJECT_CASES))
def test_a_body_object_with_a_bad_field_is_dead_lettered_and_blocks_nothing(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], case: str) -> None:
    raw, error_part = BODY_OBJECT_CASES[case]
    worker = start_worker(SERVICE)
    pid = worker.proc.pid
    push(platform, r, raw)
    good = dispatch("t_echo", {"tag": "behind"})
    assert good.wait(timeout=20) == {"tag": "behind"}
    (letter,) = wait_for(lambda: platform.dead_letters.list(r, SERVICE), message="a dead letter")  # type: ignore[misc]
    assert letter.reason == "MalformedMessage" and error_part in letter.error, letter.error
    assert_nothing_left(platform, r)
    assert [row.split(b"|")[0] for row in r.lrange("test:runs", 0, -1)] == [b"behind"]
    assert worker.proc.poll() is None and worker.proc.pid == pid


@pytest.mark.parametrize("pool", ["solo", "threads", "prefork"])
def test_a_protocol1_body_with_string_retries_is_dead_lettered_on_every_pool(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], pool: str) -> None:
    worker = start_worker(SERVICE, "--pool", pool, "--concurrency", "2")
    push(platform, r, protocol1(retries="abc"), token=False)
    good = dispatch("t_echo", {"tag": "behind"})
    assert good.wait(timeout=20) == {"tag": "behind"}
    (letter,) = wait_for(lambda: platform.dead_letters.list(r, SERVICE), message="a dead letter")  # type: ignore[misc]
    assert letter.reason == "MalformedMessage" and "body.retries" in letter.error, letter.error
    assert_nothing_left(platform, r)
    assert worker.proc.poll() is None


def list_body(body: Any) -> bytes:
    """A valid t_echo message whose protocol-2 body (JSON array text) is ``body``."""
    envelope = valid_envelope("listy")
    envelope["body"] = orjson.dumps(body).decode()
    return orjson.dumps(envelope)


EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
LIST_BODY_CASES: dict[str, bytes] = {
    "args-an-object": list_body([{"tag": "x"}, {}, EMBED]),
    "args-a-string": list_body(["abc", {}, EMBED]),
    "kwargs-a-list": list_body([[{"tag": "x"}], [1], EMBED]),
    "embed-a-string": list_body([[{"tag": "x"}], {}, "x"]),
    "embed-a-list": list_body([[{"tag": "x"}], {}, [1]]),
    "chain-a-number": list_body([[{"tag": "x"}], {}, {**EMBED, "chain": 5}]),
    "callbacks-a-string": list_body([[{"tag": "x"}], {}, {**EMBED, "callbacks": "abc"}]),
    "errbacks-a-number": list_body([[{"tag": "x"}], {}, {**EMBED, "errbacks": 7}]),
    "chord-a-string": list_body([[{"tag": "x"}], {}, {**EMBED, "chord": "x"}]),
    "four-parts": list_body([[{"tag": "x"}], {}, EMBED, 1]),
    "empty": list_body([]),
    # Celery's pool merges the embed into the task's request, over the headers the worker's fetch set: these
    # claimed a finished, a cancelled or an unreadable delivery (skipped unrun with no letter, or an int() error).
    "embed-claims-finished": list_body([[{"tag": "x"}], {}, {**EMBED, "mt_fetch_started": 0,
                                                              "mt_fetch_deliveries": 1, "mt_fetch_cancelled": 0}]),
    "embed-claims-cancelled": list_body([[{"tag": "x"}], {}, {**EMBED, "mt_fetch_started": 1,
                                                               "mt_fetch_deliveries": 1, "mt_fetch_cancelled": 1}]),
    "embed-overrides-the-id": list_body([[{"tag": "x"}], {}, {**EMBED, "id": "someone-elses-task"}]),
    "embed-deliveries-garbage": list_body([[{"tag": "x"}], {}, {**EMBED, "mt_fetch_started": 1,
                                                                 "mt_fetch_deliveries": "x", "mt_fetch_cancelled": 0}]),
}


@pytest.mark.parametrize("pool", ["threads", "prefork", "solo"])
def test_a_protocol2_body_of_any_shape_ends_run_or_dead_lettered_and_blocks_nothing(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], pool: str) -> None:
    worker = start_worker(SERVICE, "--pool", pool, "--concurrency", "2")
    pid = worker.proc.pid
    ids = []
    for raw in LIST_BODY_CASES.values():
        ids.append(orjson.loads(raw)["headers"]["id"])
        push(platform, r, raw)
    good = dispatch("t_echo", {"tag": "behind"})
    assert good.wait(timeout=30) == {"tag": "behind"}

    def settled() -> bool:
        # each item ran (its task has a final status) or is dead-lettered
        letters = {letter.task_id for letter in platform.dead_letters.list(r, SERVICE)}
        ends = [((rec := platform.status.get(r, i)) is not None and rec.status is Status.SUCCEEDED) or i in letters
                for i in ids]
        return all(ends)

    wait_for(settled, timeout_s=30, message="every item run or dead-lettered")
    assert_nothing_left(platform, r)
    assert worker.proc.poll() is None and worker.proc.pid == pid
    assert dispatch("t_echo", {"tag": "after"}).wait(timeout=20) == {"tag": "after"}
