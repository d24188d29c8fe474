"""Property: no queue item of any shape stops a worker or the items behind it.

Hypothesis mutates valid task messages (the type of every header and property, numbers including NaN,
infinity, huge and negative ones, missing and extra keys, text encodings, sizes, cut-off bytes) and pushes each
at ONE live worker per pool, a good task right behind it. Every item must end run or dead-lettered (one or the
other, exactly once), nothing may stay in the queue or the unacked set, the good task must run, and the worker
must keep its PID.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from meetingtasks import dispatch
from meetingtasks.core.message import encode_task_message, loads, new_id
from meetingtasks.store.platform import Platform
from meetingtasks.store.wake import push_wake
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

# Slow tier: every test runs worker subprocesses through kills, redeliveries or timeouts.
pytestmark = pytest.mark.slow

SERVICE = "ai"
QUEUE = "ai.normal"

HEADERS = ["lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries", "timelimit",
           "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result", "stamped_headers",
           "stamps", "mt_priority", "mt_enqueued_at", "mt_dispatched_at", "mt_first_failure_at", "mt_rate_slot",
           "redelivered", "mt_fetch_started", "zz_extra"]
PROPERTIES = ["correlation_id", "reply_to", "delivery_mode", "priority", "delivery_tag", "body_encoding",
              "delivery_info", "zz_extra"]
DELIVERY_INFO = ["exchange", "routing_key", "priority", "redelivered"]
TOP = ["body", "content-type", "content-encoding", "headers", "properties", "zz_extra"]


def _not_iso(text: str) -> bool:
    # A real ISO time in eta/expires is a valid Celery ETA or expiry (held or revoked by Celery): not garbage.
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return True
    return False


numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 2**31, 2**53 + 1, 2**63, 1e308, -0.0, 0.5]),
)
values = st.one_of(
    st.none(), st.booleans(), numbers, st.text(max_size=12).filter(_not_iso),
    st.lists(st.one_of(st.none(), numbers, st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
# Number literals cjson reads and orjson refuses (or reads differently).
number_literals = st.sampled_from(["NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "0x10", "0X1f",
                                   "1e400", "99999999999999999999999", "-0", "1E2"])

mutation = st.one_of(
    st.tuples(st.just("header"), st.sampled_from(HEADERS), values),
    st.tuples(st.just("property"), st.sampled_from(PROPERTIES), values),
    st.tuples(st.just("delivery_info"), st.sampled_from(DELIVERY_INFO), values),
    st.tuples(st.just("top"), st.sampled_from(TOP), values),
    st.tuples(st.just("drop"), st.sampled_from([f"headers.{h}" for h in HEADERS[:12]]
                                               + [f"properties.{p}" for p in PROPERTIES] + TOP), st.none()),
)


@st.composite
def poison(draw: st.DrawFn) -> tuple[list[Any], str, bytes, bool]:
    """(mutations, how it was encoded, the queue item, whether a wake token goes with it)."""
    envelope: dict[str, Any] = loads(encode_task_message(task_id=new_id(), task_name="t_echo",
                                                         payload={"tag": "poison"}, queue=QUEUE))
    changes = draw(st.lists(mutation, min_size=1, max_size=3))
    for kind, name, value in changes:
        target: Any = envelope
        if kind == "header":
            target = envelope.get("headers")
        elif kind == "property":
            target = envelope.get("properties")
        elif kind == "delivery_info":
            props = envelope.get("properties")
            target = props.get("delivery_info") if isinstance(props, dict) else None
        elif kind == "drop":
            path = name.split(".")
            for part in path[:-1]:
                target = target.get(part) if isinstance(target, dict) else None
            if isinstance(target, dict):
                target.pop(path[-1], None)
            continue
        if isinstance(target, dict):
            target[name] = value
    headers = envelope.get("headers")
    if isinstance(headers, dict) and isinstance(headers.get("id"), str):
        # A task id seen before is a duplicate delivery of a finished task, skipped by design: keep them unique.
        headers["id"] = f"{headers['id']}-{new_id()}"
    encoding = draw(st.sampled_from(["utf-8", "ascii-escaped", "latin-1", "utf-16", "literal", "cut", "huge"]))
    text = json.dumps(envelope, ensure_ascii=encoding == "ascii-escaped")  # writes NaN/Infinity for such floats
    if encoding == "latin-1":
        raw = text.encode("latin-1", errors="replace")
    elif encoding == "utf-16":
        raw = text.encode("utf-16")
    elif encoding == "literal" and '"retries": 0' in text:
        raw = text.replace('"retries": 0', '"retries": ' + draw(number_literals)).encode()
    elif encoding == "cut":
        raw = text.encode()[: draw(st.integers(min_value=0, max_value=len(text.encode()) - 1))]
    elif encoding == "huge" and text.endswith("}"):
        size = draw(st.sampled_from([10_000, 1_100_000]))
        raw = (text[:-1] + ', "zz_padding": "' + "x" * size + '"}').encode()
    else:
        raw = text.encode("utf-8", errors="surrogatepass")
    # With a token an idle worker takes the item with its fetch script; without, its wait pops it (kombu's path).
    return changes, encoding, raw, draw(st.booleans())


def _others(r: redis.Redis) -> int:
    return sum(1 for row in r.lrange("test:runs", 0, -1) if not row.startswith(b"good-"))


@pytest.mark.parametrize("pool", ["solo", "threads", "prefork"])
def test_no_queue_item_stops_a_worker_or_the_items_behind_it(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], pool: str) -> None:
    worker = start_worker(SERVICE, "--pool", pool, "--concurrency", "2")
    pid = worker.proc.pid
    keys = platform.keys
    counter = itertools.count()
    pushed = {"n": 0}

    # No shrinking: each example costs a live round trip (and a failing one its wait's whole deadline), and the
    # first failing example, reported as it is, says what broke.
    @settings(max_examples=100, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(item=poison())
    def check(item: tuple[list[Any], str, bytes, bool]) -> None:
        changes, encoding, raw, token = item
        n = next(counter)
        ran_before, dead_before = _others(r), platform.dead_letters.count(r, SERVICE)
        with r.pipeline(transaction=True) as pipe:
            if token:
                push_wake(pipe, keys, SERVICE)
            pipe.lpush(QUEUE, raw)
            pipe.execute()
        pushed["n"] += 1
        good = dispatch("t_echo", {"tag": f"good-{n}"})
        assert good.wait(timeout=20) == {"tag": f"good-{n}"}, (changes, encoding)

        def settled() -> bool:
            ended = _others(r) - ran_before + platform.dead_letters.count(r, SERVICE) - dead_before
            return (ended >= 1 and r.llen(QUEUE) == 0 and r.hlen(keys.unacked(SERVICE)) == 0
                    and r.zcard(keys.unacked_index(SERVICE)) == 0)

        wait_for(settled, timeout_s=20, message=f"the item to end run or dead-lettered: {changes} {encoding}")
        ended = _others(r) - ran_before + platform.dead_letters.count(r, SERVICE) - dead_before
        assert ended == 1, (changes, encoding, raw[:300])
        assert worker.proc.poll() is None and worker.proc.pid == pid, (changes, encoding, raw[:300])

    check()
    # Items pushed == ran + dead-lettered, over the whole run
    assert _others(r) + platform.dead_letters.count(r, SERVICE) == pushed["n"]
    assert worker.proc.poll() is None and worker.proc.pid == pid
