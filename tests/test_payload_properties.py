"""Properties, checked on generated input (hypothesis): of ``dispatch`` over the twenty built-in payload models,
and of the wire format.

For any JSON-like payload, ``dispatch`` either queues one message whose payload validates against the type's
model again, or raises :class:`InvalidPayload` naming the failing ``payload.<field>`` and then queues and
records nothing; never anything else. Payloads are drawn near the models' own limits (lengths, bounds,
patterns, literals) as well as at random, so both outcomes are exercised for every type.
"""

from __future__ import annotations

import operator
import types
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal, Union, get_args, get_origin

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from meetingtasks import InvalidPayload, dispatch
from meetingtasks.core.message import MalformedMessage, check_envelope, describe, encode_task_message
from meetingtasks.core.priority import queue_name
from meetingtasks.core.registry import REGISTRY, load_builtin_types
from meetingtasks.core.secret_fields import PREFIX, keyring, open_payload, secret_fields
from meetingtasks.store.platform import Platform
from tests.test_dispatch import DESIGN_TYPES

BUILTIN_TYPES = sorted(name for names in DESIGN_TYPES.values() for name in names)
EXAMPLES_PER_TYPE = 50

#: JSON values as a client could send them (finite floats, 64-bit integers: what JSON parsers interoperate on).
JSON_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=8)
ZONES = st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])


def limits(info: FieldInfo) -> dict[str, Any]:
    """The field's constraints (``min_length``, ``max_length``, ``ge``, ``le``, ``pattern``) from its metadata."""
    found: dict[str, Any] = {}
    for item in info.metadata:
        for name in ("min_length", "max_length", "ge", "le", "pattern"):
            value = getattr(item, name, None)
            if value is not None:
                found[name] = value
    return found


def alternatives(annotation: Any) -> tuple[Any, ...]:
    found = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return tuple(str if kind is SecretStr else kind for kind in found)  # a secret is sent as a string


def valid_values(info: FieldInfo) -> st.SearchStrategy[Any]:
    """Values meant to pass the field's checks."""
    lim = limits(info)
    options: list[st.SearchStrategy[Any]] = []
    for kind in alternatives(info.annotation):
        if kind is type(None):
            options.append(st.none())
        elif get_origin(kind) is Literal:
            options.append(st.sampled_from(get_args(kind)))
        elif kind is str and "pattern" in lim:
            lo, hi = lim.get("min_length", 0), lim.get("max_length", 10**6)
            matching = st.from_regex(lim["pattern"], fullmatch=True)
            options.append(matching.filter(lambda s, lo=lo, hi=hi: lo <= len(s) <= hi))
        elif kind is str:
            lo = lim.get("min_length", 0)
            options.append(st.text(min_size=lo, max_size=min(lim.get("max_length", 40), lo + 40)))
        elif kind is bool:
            options.append(st.booleans())
        elif kind is int:
            options.append(st.integers(min_value=lim.get("ge"), max_value=lim.get("le")))
        elif kind is datetime:
            options.append(st.builds(datetime.isoformat, st.datetimes(timezones=ZONES)))
    assert options, f"no strategy for {info.annotation}"
    return st.one_of(options)


def edge_values(info: FieldInfo) -> st.SearchStrategy[Any]:
    """Values at and just past the field's limits, of its type and of others."""
    lim = limits(info)
    options: list[st.SearchStrategy[Any]] = [JSON]
    kinds = alternatives(info.annotation)
    if str in kinds:
        lo, hi = lim.get("min_length", 0), lim.get("max_length", 64)
        lengths = sorted({max(lo - 1, 0), lo, hi, hi + 1})
        # One character repeated: strings of 64 KiB cost no entropy.
        options.append(st.builds(operator.mul, st.characters(), st.sampled_from(lengths)))
    if int in kinds and ("ge" in lim or "le" in lim):
        bounds = [b + d for b in (lim.get("ge"), lim.get("le")) if b is not None for d in (-1, 0, 1)]
        options += [st.sampled_from(bounds), st.sampled_from(bounds).map(float), st.just(1.5)]
    if datetime in kinds:
        options += [st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(max_size=30)]
    literals = [str(v) for k in kinds if get_origin(k) is Literal for v in get_args(k)]
    if literals:
        options.append(st.sampled_from([v.upper() for v in literals]))
    return st.one_of(options)


@st.composite
def payloads(draw: st.DrawFn, model: type[BaseModel]) -> Any:
    """A payload for ``model``: valid, valid but for a few fields, or any JSON at all."""
    shape = draw(st.sampled_from(["valid", "mutated", "mutated", "json"]))
    if shape == "json":
        return draw(JSON)
    payload: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if shape == "valid":
            if info.is_required() or draw(st.booleans()):
                payload[name] = draw(valid_values(info))
            continue
        choice = draw(st.sampled_from(["valid", "valid", "edge", "absent"]))
        if choice == "valid":
            payload[name] = draw(valid_values(info))
        elif choice == "edge":
            payload[name] = draw(edge_values(info))
    if shape == "mutated" and draw(st.integers(0, 4)) == 0:
        payload[draw(st.text(min_size=1, max_size=10))] = draw(JSON)  # a field the model does not know
    return payload


@pytest.mark.parametrize("type_name", BUILTIN_TYPES)
def test_dispatch_queues_a_payload_that_validates_again_or_refuses_it_naming_the_field(
    type_name: str, platform: Platform, r: redis.Redis
) -> None:
    load_builtin_types()
    spec = REGISTRY.get(type_name)
    model = spec.payload_model
    queue = queue_name(spec.service, spec.priority)
    outcomes: Counter[str] = Counter()
    secret = secret_fields(model)

    @settings(max_examples=EXAMPLES_PER_TYPE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(payload=payloads(model))
    def check(payload: Any) -> None:
        r.flushdb()
        try:
            handle = dispatch(type_name, payload)
        except InvalidPayload as exc:
            # Then the error names where the payload is wrong, and nothing was queued or recorded
            outcomes["refused"] += 1
            message = str(exc)
            assert isinstance(exc, ValueError) and message.startswith(f"{type_name}: payload.")
            known = set(model.model_fields) | (set(payload) if isinstance(payload, dict) else set()) | {"(root)"}
            assert any(f"payload.{name}: " in message or f"payload.{name}." in message for name in known), message
            assert r.dbsize() == 0, f"a refused dispatch left {r.keys()}"
            return
        # Then exactly one message is queued, and its payload validates again to itself
        outcomes["queued"] += 1
        (raw,) = r.lrange(queue, 0, -1)
        sent = describe(check_envelope(raw, platform.settings.max_message_bytes))
        assert (sent.task_id, sent.task_name, sent.queue) == (handle.id, type_name, queue)
        # (its secret fields sealed: they open to what was given)
        expected = model.model_validate(payload)
        plain = expected.model_dump(mode="json")
        for name in secret:
            value = getattr(expected, name)
            plain[name] = None if value is None else value.get_secret_value()
            assert sent.payload[name] is None or sent.payload[name].startswith(PREFIX)
        opened = open_payload(secret, sent.payload, keyring(platform.settings)) if secret else sent.payload
        assert opened == plain
        assert model.model_validate(opened).model_dump(mode="json") == expected.model_dump(mode="json")
        assert handle.status() == "QUEUED"

    check()
    # Both outcomes were exercised (a strategy that only ever produced one would prove half the property)
    assert outcomes["queued"] and outcomes["refused"], outcomes


# --- the wire format -------------------------------------------------------------------------------------------
HEADER_VALUES = st.dictionaries(st.text(max_size=10).map(lambda s: f"mt_{s}"), JSON, max_size=3)


@settings(max_examples=100, deadline=None)
@given(task_id=st.text(max_size=40), task_name=st.text(max_size=40), queue=st.text(max_size=40),
       payload=st.dictionaries(st.text(max_size=10), JSON, max_size=5), retries=st.integers(0, 1000),
       headers=HEADER_VALUES)
def test_an_encoded_task_message_passes_the_envelope_check_and_describes_back_to_what_was_encoded(
    task_id: str, task_name: str, queue: str, payload: dict[str, Any], retries: int, headers: dict[str, Any]
) -> None:
    raw = encode_task_message(task_id=task_id, task_name=task_name, payload=payload, queue=queue,
                              retries=retries, headers=headers)
    envelope = check_envelope(raw, max_bytes=len(raw))
    sent = describe(envelope)
    assert (sent.task_id, sent.task_name, sent.queue, sent.retries) == (task_id, task_name, queue, retries)
    assert sent.payload == payload
    assert all(envelope["headers"][name] == value for name, value in headers.items())
    # and the size limit is exact: one byte less and the message is refused, saying so
    with pytest.raises(MalformedMessage, match="exceeds max_message_bytes"):
        check_envelope(raw, max_bytes=len(raw) - 1)
