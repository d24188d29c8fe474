"""The dispatcher's fast paths write exactly what the general path writes: the message template's bytes are
:func:`encode_task_message`'s, and a batch's records, events, deadlines, wake tokens and queue order are those
of its items dispatched one by one (the status record format the worker's scripts read)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any
from unittest import mock

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from meetingtasks import InvalidPayload, MessageTooLarge, Priority, UnknownTaskType, dispatch, dispatch_batch
from meetingtasks.core.message import MessageTemplate, encode_task_message, loads, new_ids
from meetingtasks.enqueue.dispatcher import BATCH_CHUNK, Dispatcher, TaskHandle
from meetingtasks.store.platform import Platform
from meetingtasks.store.wake import WAKE_TOKENS_MAX

JSON_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=300))
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=8)
TIMESTAMPS = ("mt_dispatched_at", "mt_enqueued_at")


# --- the message template -------------------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(task_ids=st.lists(st.text(max_size=40), min_size=1, max_size=3), task_name=st.text(max_size=40),
       queue=st.text(max_size=40), priority=st.text(max_size=10),
       payloads=st.lists(st.dictionaries(st.text(max_size=10), JSON, max_size=5), min_size=3, max_size=3),
       times=st.tuples(st.floats(allow_nan=False, allow_infinity=False), st.floats(0, 2e9)))
def test_the_template_writes_the_bytes_encode_task_message_writes(
    task_ids: list[str], task_name: str, queue: str, priority: str, payloads: list[dict[str, Any]],
    times: tuple[float, float],
) -> None:
    payloads = payloads[:len(task_ids)]
    tags = [str(uuid.uuid4()) for _ in task_ids]
    template = MessageTemplate(task_name, queue, {"mt_priority": priority}, TIMESTAMPS)
    with mock.patch("meetingtasks.core.message.new_ids", lambda n: tags[:n]):
        fast = template.encode_many(task_ids, payloads, times)
    headers = {"mt_priority": priority, **dict(zip(TIMESTAMPS, times, strict=True))}
    for task_id, payload, tag, message in zip(task_ids, payloads, tags, fast, strict=True):
        with mock.patch("meetingtasks.core.message.new_id", lambda tag=tag: tag):
            expected = encode_task_message(task_id=task_id, task_name=task_name, payload=payload, queue=queue,
                                           headers=headers)
        assert message == expected


def test_the_template_cuts_argsrepr_at_characters_not_bytes() -> None:
    # A body over the 200-character argsrepr limit whose cut falls inside multi-byte characters and escapes.
    for payload in ({"text": "é" * 300}, {"text": 'a"\\' * 100}, {"text": "x" * 150 + "€" * 60}):
        [message] = MessageTemplate("t", "ai.normal", {}, ()).encode_many(["id-1"], [payload], ())
        envelope = loads(message)
        assert envelope["headers"]["argsrepr"] == envelope["body"][:200]
        assert loads(envelope["body"])[0] == [payload]


def test_new_ids_are_distinct_random_version_4_uuids() -> None:
    ids = new_ids(2000)
    assert len(set(ids)) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)


# --- batches against one-by-one dispatch ------------------------------------------------------------------------
class Events:
    """The status events published while the block runs."""

    def __init__(self, r: redis.Redis, channel: str) -> None:
        self.pubsub = r.pubsub()
        self.pubsub.subscribe(channel)
        self.pubsub.get_message(timeout=5)  # the subscribe confirmation
        self.seen: list[dict[str, Any]] = []

    def collect(self, n: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        while len(self.seen) < n and time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=1)
            if message and message["type"] == "message":
                self.seen.append(json.loads(message["data"]))
        self.pubsub.close()
        return self.seen


def record(r: redis.Redis, platform: Platform, task_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(platform.keys.status(task_id)).items()}


def without_times(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k not in ("created_at", "updated_at", "history", "batch")}


def envelope_without_times(raw: bytes) -> dict[str, Any]:
    envelope = loads(raw)
    for name in TIMESTAMPS:
        envelope["headers"].pop(name)
    envelope["properties"].pop("delivery_tag")
    return envelope


def test_a_plain_batch_records_publishes_and_queues_as_single_dispatches_do(
    platform: Platform, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a tracer (an earlier test may have installed one): trace headers differ per task and send a
    # batch by the general path.
    monkeypatch.setattr("meetingtasks.core.tracing.active", lambda: False)
    single = dispatch("t_echo", {"tag": "single"})
    expected_record = without_times(record(r, platform, single.id))
    [expected_message] = r.lrange("ai.normal", 0, -1)
    r.delete("ai.normal")

    events = Events(r, platform.keys.status_channel)
    batch = dispatch_batch([("t_echo", {"tag": "single"})] + [("t_echo", {"tag": str(n)}) for n in range(99)])
    seen = events.collect(100)

    assert [e["id"] for e in seen] == [h.id for h in batch]
    for event in seen:
        assert set(event) == {"op", "id", "status", "time", "attempt", "type", "service", "priority"}
        assert (event["op"], event["status"], event["attempt"], event["type"], event["service"],
                event["priority"]) == ("status", "QUEUED", 1, "t_echo", "ai", "normal")
    first = record(r, platform, batch[0].id)
    assert without_times(first) == expected_record
    assert first["batch"] == batch.id
    assert first["history"] == f"QUEUED {first['updated_at']} 1\n" and first["created_at"] == first["updated_at"]
    assert 0 < r.ttl(platform.keys.status(batch[0].id)) <= platform.settings.status_ttl_s
    # Queued in item order (workers pop from the right), and the same message but for its id and times.
    queued = [loads(raw) for raw in reversed(r.lrange("ai.normal", 0, -1))]
    assert [m["headers"]["id"] for m in queued] == [h.id for h in batch]
    mine = envelope_without_times(r.lindex("ai.normal", -1))  # type: ignore[arg-type]
    theirs = envelope_without_times(expected_message)
    for envelope in (mine, theirs):
        for where in (envelope["headers"], envelope["properties"]):
            for name in ("id", "root_id", "correlation_id"):
                where.pop(name, None)
    assert mine == theirs
    assert r.llen(platform.keys.wake("ai")) == WAKE_TOKENS_MAX
    assert len(list(r.scan_iter(platform.keys.status("*")))) == 101, "the script's record template is gone"


def test_a_task_id_given_again_adds_to_its_record(platform: Platform, r: redis.Redis) -> None:
    # The script copies one record to each task's key; a key that exists already gets the fields instead.
    task_id = new_ids(1)[0]
    r.hset(platform.keys.status(task_id), mapping={"client": "c-1", "status": "SUCCEEDED"})
    Dispatcher(platform).dispatch("t_echo", {"tag": "again"}, task_id=task_id)
    fields = record(r, platform, task_id)
    assert (fields["status"], fields["client"], fields["type"]) == ("QUEUED", "c-1", "t_echo")
    assert 0 < r.ttl(platform.keys.status(task_id)) <= platform.settings.status_ttl_s


def test_a_mixed_batch_keeps_every_option_and_the_item_order(platform: Platform, r: redis.Redis) -> None:
    items: list[Any] = [
        ("t_echo", {"tag": "plain-1"}),
        {"type": "t_echo", "payload": {"tag": "high"}, "priority": Priority.HIGH},
        {"type": "t_echo", "payload": {"tag": "timed"}, "timeout": 30},
        {"type": "t_echo", "payload": {"tag": "called-back"}, "on_success": "t_record"},
        {"type": "t_echo", "payload": {"tag": "later"}, "delay": 60},
        ("t_record", {"tag": "other-type"}),
        ["t_echo", {"tag": "plain-2"}],
        {"type": "t_echo", "payload": {"tag": "plain-3"}},
    ]
    batch = dispatch_batch(items)
    status = {h.id: record(r, platform, h.id) for h in batch}
    tags = {h.id: item[1]["tag"] if not isinstance(item, dict) else item["payload"]["tag"]
            for h, item in zip(batch, items, strict=True)}

    def queue_tags(queue: str) -> list[str]:
        return [tags[loads(raw)["headers"]["id"]] for raw in reversed(r.lrange(queue, 0, -1))]

    assert queue_tags("ai.normal") == ["plain-1", "timed", "called-back", "plain-2", "plain-3"]
    assert queue_tags("ai.high") == ["high"]
    assert queue_tags("ai.low") == ["other-type"]
    assert {tags[i]: s["status"] for i, s in status.items()} == {
        "plain-1": "QUEUED", "high": "QUEUED", "timed": "QUEUED", "called-back": "QUEUED", "later": "SCHEDULED",
        "other-type": "QUEUED", "plain-2": "QUEUED", "plain-3": "QUEUED"}
    assert all(s["batch"] == batch.id for s in status.values())
    timed, called_back = batch[2].id, batch[3].id
    assert float(status[timed]["timeout_s"]) == 30.0
    assert r.zscore(platform.keys.deadlines, timed) == int(float(status[timed]["deadline"]) * 1000)
    assert (status[called_back]["on_success"], status[called_back]["on_success_queue"]) == ("t_record", "ai.low")
    assert status[batch[1].id]["priority"] == "high" and status[batch[5].id]["type"] == "t_record"
    assert batch.status() == {"QUEUED": 7, "SCHEDULED": 1}
    assert r.hget(platform.keys.batch(batch.id), "total") == b"8"


def test_a_batch_over_several_script_calls_queues_every_task_once(platform: Platform, r: redis.Redis) -> None:
    n = 2 * BATCH_CHUNK + 500
    items = [("t_echo" if i % 3 else "t_record", {"tag": str(i)}) for i in range(n)]
    batch = dispatch_batch(items)
    assert len({h.id for h in batch}) == n
    assert r.llen("ai.normal") + r.llen("ai.low") == n
    assert batch.status() == {"QUEUED": n}
    assert [loads(raw)["headers"]["id"] for raw in reversed(r.lrange("ai.low", 0, -1))] == \
        [h.id for h in batch if h.type == "t_record"]


def test_a_batch_reports_its_first_refused_item_and_queues_nothing(platform: Platform, r: redis.Redis) -> None:
    before = set(r.keys("*"))
    with pytest.raises(InvalidPayload, match=r"t_echo: payload\.tag"):
        dispatch_batch([("t_echo", {"tag": "ok"}), ("t_echo", {"tag": 5}), ("no_such_type", {"tag": "x"})])
    with pytest.raises(UnknownTaskType, match="no_such_type"):
        dispatch_batch([("t_echo", {"tag": "ok"}), ("no_such_type", {"tag": "x"}), ("t_record", {"tag": 5})])
    limit = platform.settings.max_message_bytes
    with pytest.raises(MessageTooLarge, match=f"over the limit of {limit} bytes"):
        dispatch_batch([("t_echo", {"tag": "ok"}), ("t_echo", {"tag": "x" * limit})])
    assert set(r.keys("*")) == before


def test_a_batch_refuses_items_after_valid_ones_of_another_type(platform: Platform, r: redis.Redis) -> None:
    # The plain fast path validates per type: the error is still that of the first refused item in order.
    with pytest.raises(InvalidPayload, match=r"t_record: payload\.tag"):
        dispatch_batch([("t_echo", {"tag": "ok"}), ("t_record", {}), ("t_echo", {"tag": 1})])
    assert r.llen("ai.normal") == r.llen("ai.low") == 0


def test_concurrent_batches_and_dispatches_from_threads_all_land(platform: Platform, r: redis.Redis) -> None:
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            dispatch_batch([("t_echo", {"tag": f"{k}-{n}"}) for n in range(300)])
            for n in range(20):
                dispatch("t_echo", {"tag": f"{k}-single-{n}"})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert r.llen("ai.normal") == 4 * 320


def test_every_way_in_writes_what_the_plain_commands_write(platform: Platform, r: redis.Redis) -> None:
    # Given one task with own status fields, a timeout and a callback, queued by each public way in, and once by
    # the plain commands (Dispatcher.enqueue on a pipeline, what a delayed task and the bridge's transaction use)
    d = Dispatcher(platform)
    options: dict[str, Any] = {"timeout": 30.0, "on_success": "t_echo"}
    plain = d.prepare("t_echo", {"tag": "x"}, fields={"client": "c-1"}, **options)
    with r.pipeline(transaction=False) as pipe:
        d.enqueue(pipe, plain)
        pipe.execute()
    single = d.dispatch("t_echo", {"tag": "x"}, fields={"client": "c-1"}, **options)
    each = d.dispatch_each([{"task_type": "t_echo", "payload": {"tag": "x"}, "fields": {"client": "c-1"}, **options}
                            for _ in range(3)])
    batch = d.dispatch_batch([{"type": "t_echo", "payload": {"tag": "x"}, **options} for _ in range(3)])

    def comparable(task_id: str) -> dict[str, str]:
        fields = without_times(record(r, platform, task_id))
        assert float(fields.pop("deadline")) > time.time() and fields.pop("timeout_s") == "30.0"
        return fields

    # Then every record holds the same fields (a batch's members: all but the gateway's client)
    expected = comparable(plain.task_id)
    assert expected["status"] == "QUEUED" and expected["on_success"] == "t_echo"
    ids = [single.id, *(h.id for h in each if isinstance(h, TaskHandle))]
    assert len(ids) == 4 and all(comparable(task_id) == expected for task_id in ids)
    assert all(comparable(h.id) == {k: v for k, v in expected.items() if k != "client"} for h in batch)
    # and every task has its deadline and its message, each woken for
    assert r.zcard(platform.keys.deadlines) == 8 and r.llen("ai.normal") == 8
    assert r.llen(platform.keys.wake("ai")) >= 1
