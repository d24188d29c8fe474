"""kombu's ``json`` serializer on orjson: the same JSON for the same data, several times faster.

kombu encodes and decodes with the standard library: in a worker that is every message body it decodes and
every Flower event (and its envelope) it publishes, about a tenth of a busy worker's CPU. orjson writes plain
JSON types the same way; whatever it cannot write (datetimes, Decimals, bytes, huge integers), kombu's own
encoder writes, with kombu's ``{"__type__": ..., "__value__": ...}`` markers, and a text carrying such markers
is decoded by kombu, so types round-trip as before. One difference: a ``uuid.UUID`` becomes its plain string
(orjson writes UUIDs itself); Celery and the platform only ever send ids as strings.
"""

from __future__ import annotations

from typing import Any

import orjson
from kombu.serialization import registry
from kombu.utils import json as kombu_json

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
    marker = "__type__" if isinstance(data, str) else b"__type__"
    if marker in data:  # type: ignore[operator]
        return kombu_json.loads(data)
    return orjson.loads(data)


def install() -> None:
    """Make ``json`` (kombu's and so Celery's default) use these functions in this process."""
    registry.register("json", dumps, loads, content_type="application/json", content_encoding="utf-8")
