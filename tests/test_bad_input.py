"""Bad input on the queues never kills a worker and never disappears: it ends in the dead-letter queue."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
import redis

from meetingtasks import dispatch
from meetingtasks.core.message import encode_task_message, loads, new_id
from meetingtasks.store.platform import Platform
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

# Slow tier: every test runs worker subprocesses through kills, redeliveries or timeouts.
pytestmark = pytest.mark.slow


def dead_letters(platform: Platform, r: redis.Redis) -> list:  # type: ignore[type-arg]
    return platform.dead_letters.list(r, "ai")


def assert_worker_still_consumes(worker: WorkerProcess) -> None:
    assert dispatch("t_echo", {"tag": "after"}).wait(timeout=20) == {"tag": "after"}
    assert worker.proc.poll() is None


@pytest.fixture
def worker(platform: Platform, start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker("ai")


@pytest.mark.parametrize(
    ("raw", "error_part"),
    [
        (b"\x00\xffnot a message{", "not JSON"),
        (b'{"foo": 1}', "no 'properties'"),
        (b"[1, 2, 3]", "not an object"),
        (b'{"body": "e30=", "properties": {"delivery_info": {}}}', "no 'delivery_tag'"),
    ],
)
def test_garbage_pushed_onto_a_queue_is_dead_lettered_raw(
    platform: Platform, r: redis.Redis, worker: WorkerProcess, raw: bytes, error_part: str
) -> None:
    # Given garbage pushed the way redis-cli LPUSH would
    r.lpush("ai.normal", raw)
    # Then it lands in the dead-letter queue with the raw bytes and a reason
    letters = wait_for(lambda: dead_letters(platform, r), message="a dead letter")
    (letter,) = letters  # type: ignore[misc]
    assert letter.reason == "MalformedMessage"
    assert error_part in letter.error
    assert letter.queue == "ai.normal" and not letter.replayable
    assert letter.message.encode("latin-1" if b"\xff" in raw else "utf-8") == raw
    assert_worker_still_consumes(worker)


def test_oversized_raw_message_is_dead_lettered(platform: Platform, r: redis.Redis, worker: WorkerProcess) -> None:
    big = encode_task_message(task_id=new_id(), task_name="t_echo", payload={"tag": "x" * 2_000_000},
                              queue="ai.normal")
    r.lpush("ai.normal", big)
    (letter,) = wait_for(lambda: dead_letters(platform, r), message="a dead letter")  # type: ignore[misc]
    assert "exceeds max_message_bytes" in letter.error
    assert_worker_still_consumes(worker)


def test_unknown_task_name_is_dead_lettered(platform: Platform, r: redis.Redis, worker: WorkerProcess) -> None:
    task_id = new_id()
    r.lpush("ai.high", encode_task_message(task_id=task_id, task_name="no_such_task", payload={"a": 1},
                                           queue="ai.high"))
    (letter,) = wait_for(lambda: dead_letters(platform, r), message="a dead letter")  # type: ignore[misc]
    assert letter.reason == "UnknownTaskType"
    assert "'no_such_task'" in letter.error
    assert (letter.task_id, letter.priority, letter.payload) == (task_id, "high", {"a": 1})
    assert_worker_still_consumes(worker)


def test_invalid_payload_pushed_past_the_dispatcher_is_dead_lettered_with_the_validation_message(
    platform: Platform, r: redis.Redis, worker: WorkerProcess
) -> None:
    task_id = new_id()
    r.lpush("ai.normal", encode_task_message(task_id=task_id, task_name="t_echo", payload={"tag": 5, "zzz": 1},
                                             queue="ai.normal"))
    (letter,) = wait_for(lambda: dead_letters(platform, r), message="a dead letter")  # type: ignore[misc]
    assert letter.reason == "InvalidPayload"
    assert "payload.tag" in letter.error
    assert platform.status.get(r, task_id).status.value == "DEAD_LETTERED"  # type: ignore[union-attr]
    assert json.loads(r.lindex("test:runs", 0) or b"null") is None  # the handler never ran
    assert_worker_still_consumes(worker)


def test_pickle_content_is_refused_and_dead_lettered(platform: Platform, r: redis.Redis, worker: WorkerProcess) -> None:
    envelope = loads(encode_task_message(task_id=new_id(), task_name="t_echo", payload={"tag": "p"},
                                         queue="ai.normal"))
    envelope["content-type"] = "application/x-python-serialize"
    envelope["content-encoding"] = "binary"
    envelope["body"] = base64.b64encode(b"\x80\x04K\x01.").decode()
    envelope["properties"]["body_encoding"] = "base64"
    r.lpush("ai.normal", json.dumps(envelope))
    (letter,) = wait_for(lambda: dead_letters(platform, r), message="a dead letter")  # type: ignore[misc]
    assert letter.reason in ("DecodeError", "InvalidTaskMessage")
    assert "python-serialize" in letter.error or "pickle" in letter.error.lower()
    assert r.llen("test:runs") == 0
    assert_worker_still_consumes(worker)


def test_a_message_without_headers_is_dead_lettered_saying_what_is_missing(
    platform: Platform, r: redis.Redis, worker: WorkerProcess
) -> None:
    envelope = loads(encode_task_message(task_id=new_id(), task_name="t_echo", payload={"tag": "h"},
                                         queue="ai.normal"))
    envelope["headers"] = None
    r.lpush("ai.normal", json.dumps(envelope))
    (letter,) = wait_for(lambda: dead_letters(platform, r), message="a dead letter")  # type: ignore[misc]
    assert letter.reason == "UnknownMessage"
    assert "no 'task' header" in letter.error
    assert r.llen("test:runs") == 0
    assert_worker_still_consumes(worker)


def test_a_protocol_1_message_from_an_old_client_still_runs(
    platform: Platform, r: redis.Redis, worker: WorkerProcess
) -> None:
    # Celery message protocol 1: everything in the body, no task headers.
    body = json.dumps({"task": "t_echo", "id": new_id(), "args": [{"tag": "proto1"}], "kwargs": {}, "retries": 0})
    envelope = {"body": base64.b64encode(body.encode()).decode(), "content-type": "application/json",
                "content-encoding": "utf-8", "headers": {},
                "properties": {"delivery_tag": new_id(), "body_encoding": "base64", "delivery_mode": 2,
                               "delivery_info": {"exchange": "", "routing_key": "ai.normal"}}}
    r.lpush("ai.normal", json.dumps(envelope))
    wait_for(lambda: r.llen("test:runs") == 1, message="the protocol-1 task to run")
    assert r.lindex("test:runs", 0).startswith(b"proto1|")  # type: ignore[union-attr]
    assert not dead_letters(platform, r)
    assert_worker_still_consumes(worker)
