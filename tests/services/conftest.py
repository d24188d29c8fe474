"""Fixtures of the service tests: run a handler as a given task (a second run with the same id is a
redelivery), read what it published, and a finished meeting setup."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis

from meetingtasks.core.message import new_id
from meetingtasks.core.registry import REGISTRY, load_builtin_types
from meetingtasks.core.secret_fields import keyring, require_keyring, reveal, seal_result
from meetingtasks.store.platform import Platform
from meetingtasks.worker.current import running_as

Run = Callable[..., Any]


@pytest.fixture
def run(platform: Platform) -> Run:
    """``run("user_register", {...}, task_id="t1")``: the handler's result, run as task ``task_id`` (a fresh
    id when omitted), its payload validated as the worker would."""
    load_builtin_types()

    def call(task_type: str, payload: dict[str, Any], *, task_id: str | None = None) -> Any:
        spec = REGISTRY.get(task_type)
        model = spec.payload_model.model_validate(payload)
        with running_as(task_id or new_id()):
            result = spec.handler(model)
        # Read as the caller that submitted it reads it: a result's secrets (a login token) are kept sealed.
        return reveal(seal_result(result, lambda: require_keyring(platform.settings)), keyring(platform.settings))

    return call


class Published:
    """The events on the platform's channel streams."""

    def __init__(self, platform: Platform, r: redis.Redis) -> None:
        self.platform = platform
        self.r = r

    def __call__(self, channel: str, event_type: str | None = None) -> list[dict[str, Any]]:
        entries = self.r.xrange(self.platform.keys.event_stream(channel))
        events = [orjson.loads(fields[b"event"]) for _, fields in entries]
        return [e for e in events if event_type is None or e["type"] == event_type]

    def payloads(self, channel: str, event_type: str) -> list[dict[str, Any]]:
        return [e["payload"] for e in self(channel, event_type)]

    def types(self, channel: str) -> list[str]:
        return [e["type"] for e in self(channel)]


@pytest.fixture
def published(platform: Platform, r: redis.Redis) -> Published:
    return Published(platform, r)
