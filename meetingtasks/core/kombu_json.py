"""kombu's ``json`` serializer on orjson: the same JSON for the same data, several times faster.

kombu encodes and decodes with the standard library: in a worker that is every message body it decodes and
every Flower event (and its envelope) it publishes, about a tenth of a busy worker's CPU. orjson writes plain
JSON types the same way; whatever it cannot write (datetimes, Decimals, bytes, huge integers), kombu's own
encoder writes, with kombu's ``{"__type__": ..., "__value__": ...}`` markers, and a text carrying such markers
is decoded by kombu, so types round-trip as before; so is a text with integers beyond 64 bits (orjson would read
them as floats) or one orjson refuses (``NaN``, which the standard library reads). One difference: a
``uuid.UUID`` becomes its plain string (orjson writes UUIDs itself); Celery and the platform send ids as strings.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from kombu.serialization import registry
from kombu.utils import json as kombu_json

#: A run of 20 digits: the shortest text of an integer beyond 64 bits (or a harmless digit run in a string).
_BIG_NUMBER = re.compile(rb"[0-9]{20}")
_BIG_NUMBER_TEXT = re.compile(r"[0-9]{20}")
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
_kombu_encoder = kombu_json.JSONEncoder()


def _default(obj: Any) -> Any:
    # kombu's encoder returns a marker dict for the types it knows; its base class raises TypeError otherwise.
    return _kombu_encoder.default(obj)


def dumps(obj: Any) -> str:
    try:
        return orjson.dumps(obj, default=_default, option=_OPTIONS).decode()
    except TypeError:  # e.g. an integer beyond 64 bits: kombu's encoder handles it, or raises as it did
        return str(kombu_json.dumps(obj))


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    if isinstance(data, memoryview):
        data = data.tobytes()
    # kombu's markers, and integers beyond 64 bits (orjson reads them as floats, losing digits): kombu's decoder.
    if isinstance(data, str):
        if "__type__" in data or _BIG_NUMBER_TEXT.search(data):
            return kombu_json.loads(data)
    elif b"__type__" in data or _BIG_NUMBER.search(data):
        return kombu_json.loads(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # e.g. NaN or Infinity, which the standard library reads: decide as kombu did
        return kombu_json.loads(data)


def install() -> None:
    """Make ``json`` (kombu's and so Celery's default) use these functions in this process."""
    registry.register("json", dumps, loads, content_type="application/json", content_encoding="utf-8")
