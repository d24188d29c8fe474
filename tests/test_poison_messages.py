"""Queue items that Redis's Lua cjson reads but the Python side refuses: each is dead-lettered
with a reason naming what was wrong, the worker keeps running (same PID) and the items behind it run."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis

from meetingtasks import dispatch
from meetingtasks.core.message import encode_task_message, loads, new_id
from meetingtasks.store.platform import Platform
from meetingtasks.store.stats import collect
from meetingtasks.store.status import Status
from meetingtasks.store.wake import push_wake
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

# Slow tier: every test runs worker subprocesses through kills, redeliveries or timeouts.
pytestmark = pytest.mark.slow

SERVICE = "ai"
QUEUE = "ai.normal"


def valid_envelope(tag: str = "ok") -> dict[str, Any]:
    envelope: dict[str, Any] = loads(encode_task_message(task_id=new_id(), task_name="t_echo",
                                                         payload={"tag": tag}, queue=QUEUE))
    return envelope


def with_header(name: str, value: Any) -> bytes:
    envelope = valid_envelope()
    envelope["headers"][name] = value
    return orjson.dumps(envelope)


def with_raw_retries(text: str) -> bytes:
    """A valid message whose ``headers.retries`` is the literal JSON text ``text`` (NaN, hex: not JSON for
    orjson, numbers for cjson)."""
    raw = orjson.dumps(valid_envelope())
    assert raw.count(b'"retries":0') == 1
    return raw.replace(b'"retries":0', b'"retries":' + text.encode())


# (case id, queue item, a part of the dead letter's error that names what was wrong)
REVIEWER_EXAMPLES: list[tuple[str, bytes, str]] = [
    ("task-header-is-a-list", with_header("task", ["t_echo"]), "headers.task"),
    ("retries-is-the-string-nan", with_header("retries", "nan"), "headers.retries"),
    ("retries-is-1e999", with_raw_retries("1e999"), "infinity"),
    ("retries-is-a-NaN-literal", with_raw_retries("NaN"), "not JSON"),
    ("retries-is-a-hex-number", with_raw_retries("0x10"), "not JSON"),
    ("task-id-is-a-number", with_header("id", 12345), "headers.id"),
    ("task-id-is-a-list", with_header("id", ["a"]), "headers.id"),
    ("task-id-is-an-object", with_header("id", {"a": 1}), "headers.id"),
    ("retries-is-negative", with_header("retries", -3), "headers.retries"),
    ("timelimit-is-a-string", with_header("timelimit", "soon"), "headers.timelimit"),
    # Beyond the review: a delivery tag cjson reads as a double (its text would differ from Python's), nesting
    # deeper than either parser goes.
    ("delivery-tag-is-a-big-number", orjson.dumps(valid_envelope()).replace(
        b'"delivery_tag":"', b'"delivery_tag":12345678901234567890,"x":"'), "properties.delivery_tag"),
    ("nested-2000-deep", orjson.dumps(valid_envelope())[:-1] + b',"zz":' + b"[" * 2000 + b"]" * 2000 + b"}",
     "not JSON"),
]


def push(platform: Platform, r: redis.Redis, raw: bytes, *, token: bool = True) -> None:
    """Queue ``raw`` as a platform producer does (a wake token first: an idle worker takes it with its atomic
    fetch script) or, with ``token=False``, as a foreign producer (redis-cli LPUSH: an idle worker's wait pops it
    itself)."""
    with r.pipeline(transaction=True) as pipe:
        if token:
            push_wake(pipe, platform.keys, SERVICE)
        pipe.lpush(QUEUE, raw)
        pipe.execute()


def assert_nothing_left(platform: Platform, r: redis.Redis) -> None:
    keys = platform.keys
    wait_for(lambda: r.llen(QUEUE) == 0 and r.hlen(keys.unacked(SERVICE)) == 0
             and r.zcard(keys.unacked_index(SERVICE)) == 0, message="queue and unacked set empty")


def run_poison(platform: Platform, r: redis.Redis, worker: WorkerProcess, raw: bytes, error_part: str,
               *, token: bool = True) -> None:
    pid = worker.proc.pid
    # Given the poison item with a good task right behind it
    push(platform, r, raw, token=token)
    good = dispatch("t_echo", {"tag": "behind"})
    # Then the good task runs, the poison item is dead-lettered saying what was wrong, and the worker lives on
    assert good.wait(timeout=20) == {"tag": "behind"}
    letters = wait_for(lambda: platform.dead_letters.list(r, SERVICE), message="a dead letter")
    (letter,) = letters  # type: ignore[misc]
    assert letter.reason == "MalformedMessage", letter
    assert error_part in letter.error, letter.error
    assert letter.message is not None and letter.message.encode() == raw
    assert_nothing_left(platform, r)
    assert [row.split(b"|")[0] for row in r.lrange("test:runs", 0, -1)] == [b"behind"]
    # Counted with the dead letters the platform reports (`meetingtasks stats`, the meetingtasks_dead_letters gauge)
    assert platform.dead_letters.count(r, SERVICE) == 1
    assert sum(row.dead_lettered for row in collect(platform, (SERVICE,))) == 1
    # Still the same process, and it keeps consuming (also after the visibility timeout has passed)
    assert worker.proc.poll() is None and worker.proc.pid == pid
    assert dispatch("t_echo", {"tag": "after"}).wait(timeout=20) == {"tag": "after"}
    assert worker.proc.poll() is None


@pytest.mark.parametrize("path", ["fetch-script", "foreign-push"])
@pytest.mark.parametrize(("raw", "error_part"), [(raw, part) for _, raw, part in REVIEWER_EXAMPLES],
                         ids=[case for case, _, _ in REVIEWER_EXAMPLES])
def test_an_item_cjson_reads_but_python_refuses_is_dead_lettered_and_the_worker_lives(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], raw: bytes,
        error_part: str, path: str) -> None:
    worker = start_worker(SERVICE)
    run_poison(platform, r, worker, raw, error_part, token=path == "fetch-script")


@pytest.mark.parametrize("pool", ["solo", "threads", "prefork"])
def test_a_list_typed_task_header_kills_no_pool(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], pool: str) -> None:
    worker = start_worker(SERVICE, "--pool", pool, "--concurrency", "2")
    run_poison(platform, r, worker, with_header("task", ["t_echo"]), "headers.task")


@pytest.mark.parametrize("pool", ["solo", "threads", "prefork"])
def test_a_batch_of_poison_items_blocks_nothing_behind_it(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], pool: str) -> None:
    # Every reviewer example in one queue, good tasks between them: one fetch takes several at once.
    worker = start_worker(SERVICE, "--pool", pool, "--concurrency", "2")
    pid = worker.proc.pid
    goods = []
    for i, (_, raw, _) in enumerate(REVIEWER_EXAMPLES):
        push(platform, r, raw)
        goods.append(dispatch("t_echo", {"tag": f"good-{i}"}))
    for i, handle in enumerate(goods):
        assert handle.wait(timeout=30) == {"tag": f"good-{i}"}
    wait_for(lambda: platform.dead_letters.count(r, SERVICE) == len(REVIEWER_EXAMPLES),
             message="every poison item dead-lettered")
    assert_nothing_left(platform, r)
    assert r.llen("test:runs") == len(goods)
    assert worker.proc.poll() is None and worker.proc.pid == pid


def unacked_entry(envelope_raw: bytes, queue: str = QUEUE) -> bytes:
    """An unacked-hash entry in kombu's format (what the fetch script writes): ``[message, exchange, queue]``."""
    return b"[" + envelope_raw + b',"",' + orjson.dumps(queue) + b"]"


# Entries kombu's restore sweep cannot restore: its stdlib json cannot read them, or the message in them is not
# an envelope (kombu's _do_restore_message would log and drop it).
UNRESTORABLE_ENTRIES: list[tuple[str, bytes]] = [
    ("not-json", b"[{not json at all"),
    ("hex-number-inside", unacked_entry(with_raw_retries("0x10"))),
    ("not-utf8", b'["\xff\xfe", "", "ai.normal"]'),
    ("not-a-triple", b"[1, 2]"),
    ("message-is-a-list", b'[[1, 2], "", "ai.normal"]'),
    ("message-has-no-properties", b'[{"body": "x"}, "", "ai.normal"]'),
    # kombu's json hooks raise errors of their own (not ValueErrors), and deep nesting a RecursionError
    ("decimal-hook-error", b'[{"__type__": "decimal", "__value__": "x"}, "", "ai.normal"]'),
    ("bytes-hook-error", b'[{"__type__": "bytes", "__value__": 1}, "", "ai.normal"]'),
    ("nested-5000-deep", b"[" * 5000),
]


def test_the_restore_sweep_dead_letters_what_it_cannot_read_and_restores_the_rest(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    keys = platform.keys
    now = time.time()
    # Given expired unacked entries: the unreadable ones are newer, so the sweep (newest first) meets them first
    for i, (_, entry) in enumerate(UNRESTORABLE_ENTRIES):
        r.hset(keys.unacked(SERVICE), f"bad-{i}", entry)
        r.zadd(keys.unacked_index(SERVICE), {f"bad-{i}": now - 100 + i})
    goods = []
    for i in range(3):
        envelope = valid_envelope(f"restored-{i}")
        goods.append(envelope["headers"]["id"])
        tag = envelope["properties"]["delivery_tag"]
        r.hset(keys.unacked(SERVICE), tag, unacked_entry(orjson.dumps(envelope)))
        r.zadd(keys.unacked_index(SERVICE), {tag: now - 200 - i})
    # When a worker's restore sweep runs
    worker = start_worker(SERVICE)
    # Then every good entry is restored and runs, and each unreadable one is dead-lettered with its raw bytes
    wait_for(lambda: r.llen("test:runs") == len(goods), message="the restored tasks to run")
    assert sorted(row.split(b"|")[0] for row in r.lrange("test:runs", 0, -1)) == [
        f"restored-{i}".encode() for i in range(3)]
    letters = wait_for(lambda: len(ls := platform.dead_letters.list(r, SERVICE)) == len(UNRESTORABLE_ENTRIES) and ls,
                       message="a dead letter per unreadable entry")
    by_message = {letter.message: letter for letter in letters}  # type: ignore[attr-defined]
    for case, entry in UNRESTORABLE_ENTRIES:
        text = entry.decode("utf-8", errors="strict") if b"\xff" not in entry else entry.decode("latin-1")
        assert text in by_message, case
        letter = by_message[text]
        assert letter.reason == "UnrestorableEntry" and "cannot restore" in letter.error, (case, letter.error)
        assert not letter.replayable
    assert_nothing_left(platform, r)
    assert worker.proc.poll() is None


@pytest.mark.parametrize("pool", ["solo", "threads", "prefork"])
def test_what_breaks_celery_past_the_envelope_check_is_dead_lettered_by_the_last_resort(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], pool: str) -> None:
    # A protocol-2 body of two parts instead of three (args, kwargs, embed): the envelope check reads no further
    # into a body that is an array, and Celery's request raises ValueError unpacking it. (Before the envelope
    # check read bodies that are objects, a protocol-1 body naming a list as its task served here.)
    envelope = valid_envelope("two-part")
    envelope["body"] = orjson.dumps([[{"tag": "two-part"}], {}]).decode()
    worker = start_worker(SERVICE, "--pool", pool, "--concurrency", "2")
    pid = worker.proc.pid
    push(platform, r, orjson.dumps(envelope))
    good = dispatch("t_echo", {"tag": "behind"})
    assert good.wait(timeout=20) == {"tag": "behind"}
    (letter,) = wait_for(lambda: platform.dead_letters.list(r, SERVICE), message="a dead letter")  # type: ignore[misc]
    assert letter.reason == "InvalidTaskMessage"
    assert "ValueError" in letter.error and "unpack" in letter.error, letter.error
    assert_nothing_left(platform, r)
    assert worker.proc.poll() is None and worker.proc.pid == pid
    assert dispatch("t_echo", {"tag": "after"}).wait(timeout=20) == {"tag": "after"}


def test_an_item_the_fetch_recorded_and_the_worker_refused_leaves_no_lease_and_no_status_at_started(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    # cjson reads 0x10 as 16, so the fetch script records the message (lease, STARTED); orjson does not.
    envelope = valid_envelope("hex")
    task_id = envelope["headers"]["id"]
    platform.status.transition(r, task_id, Status.QUEUED, attempt=1)
    raw = orjson.dumps(envelope).replace(b'"retries":0', b'"retries":0x10')
    worker = start_worker(SERVICE)
    push(platform, r, raw)
    (letter,) = wait_for(lambda: platform.dead_letters.list(r, SERVICE), message="a dead letter")  # type: ignore[misc]
    assert letter.reason == "MalformedMessage" and "not JSON" in letter.error
    record = wait_for(lambda: (rec := platform.status.get(r, task_id)) and rec.status == Status.DEAD_LETTERED
                      and rec, message="the task marked DEAD_LETTERED")
    assert [s for s, _, _ in record.history] == [Status.QUEUED, Status.STARTED, Status.DEAD_LETTERED]  # type: ignore[attr-defined]
    assert "not JSON" in record.error  # type: ignore[attr-defined]
    assert_nothing_left(platform, r)
    assert worker.proc.poll() is None


def _padded_past_the_limit(platform: Platform) -> bytes:
    """A valid message made too big by whitespace alone: a json that re-serializes it would bring it under."""
    raw = orjson.dumps(valid_envelope("too-big"))
    return raw[:-1] + b" " * (platform.settings.max_message_bytes + 1 - len(raw)) + b"}"


def test_a_worker_that_dies_between_the_fetch_and_the_dead_letter_loses_no_refused_item(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    from meetingtasks.core.priority import PRIORITY_ORDER, queue_name
    from meetingtasks.lua import LuaScript
    from meetingtasks.worker.transport import fetch_args

    keys = platform.keys
    items = [b"not json", b"\xff\xfe garbage", orjson.dumps({"properties": {}}), _padded_past_the_limit(platform),
             b"x" * (platform.settings.max_message_bytes + 1)]
    for raw in items:
        push(platform, r, raw)
    # Given a worker whose fetch popped the items and refused them all, and which died before filing a dead letter
    # (its fetch call, made as the worker makes it; then nothing more from that worker)
    reply = LuaScript.load("fetch")(
        r, [keys.unacked(SERVICE), keys.unacked_index(SERVICE), keys.wake(SERVICE),
            *[queue_name(SERVICE, p) for p in PRIORITY_ORDER]],
        fetch_args(platform, 10, 10, [], []))
    reasons = {reply[i + 1]: reply[i + 3].decode() for i in range(0, len(reply), 5)}
    assert [reply[i + 2] for i in range(0, len(reply), 5)] == [-1] * len(items) and r.llen(QUEUE) == 0
    # When another worker's restore sweep finds their leases expired
    worker = start_worker(SERVICE)
    # Then each is dead-lettered as it was, with the fetch's reason; none goes back on a queue, none runs
    letters = wait_for(lambda: len(ls := platform.dead_letters.list(r, SERVICE)) == len(items) and ls,
                       timeout_s=30, message="a dead letter per refused item")
    filed = {letter.message: letter for letter in letters}  # type: ignore[attr-defined]
    for raw in items:
        letter = filed[raw.decode("latin-1") if b"\xff" in raw else raw.decode()]
        assert (letter.reason, letter.error, letter.queue, letter.replayable) == (
            "MalformedMessage", reasons[raw], QUEUE, False)
    assert_nothing_left(platform, r)
    assert r.llen("test:runs") == 0 and worker.proc.poll() is None


def test_a_solo_batch_files_its_refused_items_before_it_runs_its_tasks(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    # Given one batch holding a slow task and, behind it, an item the fetch refuses
    raw = b"not json"
    slow = loads(encode_task_message(task_id=new_id(), task_name="t_sleep", payload={"tag": "slow", "seconds": 3},
                                     queue=QUEUE))
    with r.pipeline(transaction=True) as pipe:
        push_wake(pipe, platform.keys, SERVICE)
        pipe.lpush(QUEUE, orjson.dumps(slow), raw)
        pipe.execute()
    # When a solo worker takes them in one fetch
    start_worker(SERVICE, "--pool", "solo")
    # Then the item is dead-lettered while the slow task still runs (its lease is not renewed meanwhile)
    wait_for(lambda: r.lrange("test:started", 0, -1), 30, message="the slow task to start")
    wait_for(lambda: platform.dead_letters.count(r, SERVICE) == 1, 10, message="the dead letter")
    assert not r.lrange("test:finished", 0, -1)
    assert_nothing_left(platform, r)
