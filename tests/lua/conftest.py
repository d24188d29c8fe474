"""Fixtures for calling the Lua scripts directly on the suite's real redis-server: the platform's, and the meeting
services' once-scripts (``meetingtasks/services/lua/``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis

from meetingtasks.core.message import new_id
from meetingtasks.lua import LuaScript
from meetingtasks.services.operation import Operation
from meetingtasks.store.platform import Platform
from tests.support.waiting import wait_for


class Event(dict[str, Any]):
    """A published event, decoded; ``raw`` holds its bytes as sent (the wire format)."""

    raw: bytes


#: Runs a callable while subscribed to the status channel; returns its result and the events published meanwhile.
Published = Callable[[Callable[[], Any]], tuple[Any, list[Event]]]


@pytest.fixture
def published(platform: Platform, r: redis.Redis) -> Iterator[Published]:
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(platform.keys.status_channel)
    wait_for(lambda: r.pubsub_numsub(platform.keys.status_channel)[0][1] >= 1, 10, message="subscribed")

    def run(call: Callable[[], Any]) -> tuple[Any, list[Event]]:
        result = call()
        r.publish(platform.keys.status_channel, b'{"op":"end-of-test-call"}')  # marks the end of this call's events
        events: list[Event] = []
        deadline = time.monotonic() + 10
        while True:
            assert time.monotonic() < deadline, "the end marker did not arrive within 10 s"
            message = pubsub.get_message(timeout=1)  # None also for a (skipped) subscribe confirmation
            if message is None:
                continue
            event = Event(orjson.loads(message["data"]))
            event.raw = message["data"]
            if event["op"] == "end-of-test-call":
                return result, events
            events.append(event)

    yield run
    pubsub.close()


#: Runs a meeting-service once-script as one store change of a task: ``change(script, keys, args)`` -> its decoded
#: outcome. ``keys`` and ``args`` are the script's own (from KEYS[2] and ARGV[3]); each call is a new task unless
#: ``task=`` names one (a redelivery), ``name=`` tells apart changes of one task.
Change = Callable[..., Any]


@pytest.fixture
def change(platform: Platform) -> Change:
    def call(script: LuaScript, keys: list[str], args: list[Any], *, task: str | None = None,
             name: str = "change") -> Any:
        # The service only picks its Redis, which is the suite's one for every service.
        return Operation("meeting", platform, task_id=task or new_id()).mutate(script, name, keys, args)

    return call
