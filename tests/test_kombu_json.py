"""kombu's ``json`` serializer on orjson decodes and encodes what kombu's own one does."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from kombu.utils import json as kombu_json

from meetingtasks.core import kombu_json as fast


@pytest.mark.parametrize("value", [
    {"a": [1, 2.5, None, True, "x\u00e9\n"], "b": {"c": -3}},
    [[{"n": 7, "blob": "y" * 300}], {}, {"callbacks": None, "chain": None}],
    "text",
    2**63 - 1,
])
def test_plain_json_is_what_the_standard_library_reads(value: object) -> None:
    text = fast.dumps(value)
    assert json.loads(text) == value
    assert fast.loads(text) == value
    assert fast.loads(text.encode()) == value
    assert fast.loads(memoryview(text.encode())) == value


def test_kombu_types_round_trip() -> None:
    value = {"when": datetime(2026, 12, 4, 15, 0, tzinfo=UTC), "price": Decimal("1.10"), "raw": b"\x00\x01"}
    assert fast.loads(fast.dumps(value)) == kombu_json.loads(kombu_json.dumps(value))


def test_integers_beyond_64_bits_keep_every_digit() -> None:
    big = 123456789012345678901234567890
    assert json.loads(fast.dumps({"n": big})) == {"n": big}
    for text in ('{"n": 123456789012345678901234567890}', b'[-123456789012345678901234567890]'):
        decoded = fast.loads(text)
        assert decoded == kombu_json.loads(text)
        value = decoded["n"] if isinstance(decoded, dict) else decoded[0]
        assert isinstance(value, int) and abs(value) == big


def test_what_only_the_standard_library_reads_is_read_as_kombu_did() -> None:
    assert math.isnan(fast.loads('{"x": NaN}')["x"])
    with pytest.raises(ValueError):
        fast.loads(b"{not json")
