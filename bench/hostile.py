"""Hostile queue items for the soak and the fault tests: copies of a valid task message, each broken in a way
a buggy or malicious producer could send, every one of which the platform must dead-letter (never run, never
drop, never let it stop a worker).

The shapes are the ones a hostile review found fatal to workers, plus plain garbage: a field of the wrong type
(the task name as a list, a numeric task id), numbers the fetch script's ``cjson`` reads but Python's JSON does
not (``NaN``, ``1e999``, hex), a ``retries`` header of ``"nan"``, a body that is not the task's arguments, an
envelope without its routing, an unknown task type, and bytes that are not JSON at all.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import orjson

from meetingtasks.core.message import encode_task_message, new_id

_RAW = "__raw_json_literal__"


def _valid(task_name: str, queue: str) -> dict[str, object]:
    message: dict[str, object] = orjson.loads(encode_task_message(
        task_id=new_id(), task_name=task_name, payload={"id": f"hostile-{new_id()}"}, queue=queue))
    return message


def _with_header(name: str, value: object) -> Callable[[str, str], bytes]:
    def make(task_name: str, queue: str) -> bytes:
        message = _valid(task_name, queue)
        headers = message["headers"]
        assert isinstance(headers, dict)
        headers[name] = value
        return orjson.dumps(message)
    return make


def _with_raw_number(name: str, literal: str) -> Callable[[str, str], bytes]:
    """A header whose JSON text is ``literal`` (NaN, 1e999, 0x10: cjson reads them, orjson does not)."""
    def make(task_name: str, queue: str) -> bytes:
        message = _valid(task_name, queue)
        headers = message["headers"]
        assert isinstance(headers, dict)
        headers[name] = _RAW
        return orjson.dumps(message).replace(f'"{_RAW}"'.encode(), literal.encode())
    return make


def _body(text: str) -> Callable[[str, str], bytes]:
    def make(task_name: str, queue: str) -> bytes:
        message = _valid(task_name, queue)
        message["body"] = text
        return orjson.dumps(message)
    return make


def _task_name_as_list(task_name: str, queue: str) -> bytes:
    return _with_header("task", [task_name])(task_name, queue)


def _unknown_task_type(_task_name: str, queue: str) -> bytes:
    return _with_header("task", "no_such_task_type")("no_such_task_type", queue)


def _not_json(_task_name: str, _queue: str) -> bytes:
    return b"\x00\xffnot a message{"


def _no_routing(task_name: str, queue: str) -> bytes:
    message = _valid(task_name, queue)
    properties = message["properties"]
    assert isinstance(properties, dict)
    properties["delivery_info"] = "nowhere"
    return orjson.dumps(message)


#: name -> maker(task_name, queue) -> raw queue item.
HOSTILE: dict[str, Callable[[str, str], bytes]] = {
    "task name is a list": _task_name_as_list,
    "task id is a number": _with_header("id", 12345),
    "retries is the string nan": _with_header("retries", "nan"),
    "retries is 1e999": _with_raw_number("retries", "1e999"),
    "retries is a NaN literal": _with_raw_number("retries", "NaN"),
    "retries is a hex number": _with_raw_number("retries", "0x10"),
    "body is not the arguments": _body("not json at all"),
    "delivery_info is a string": _no_routing,
    "unknown task type": _unknown_task_type,
    "not JSON": _not_json,
}


def hostile_item(rng: random.Random, task_name: str, queue: str) -> tuple[str, bytes]:
    """One hostile item for ``queue``, built from a valid message of ``task_name``: (its kind, its bytes)."""
    kind = rng.choice(sorted(HOSTILE))
    return kind, HOSTILE[kind](task_name, queue)
