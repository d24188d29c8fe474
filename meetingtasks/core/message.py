"""The wire format: Celery message protocol v2 inside kombu's Redis envelope, JSON only.

A queue item is one JSON object::

    {"body": "<JSON text of [args, kwargs, embed]>", "content-type": "application/json",
     "content-encoding": "utf-8",
     "headers": {"lang": "py", "task": "<task type>", "id": "<task id>", "retries": 0,
                 "root_id": ..., "parent_id": ..., "timelimit": [hard, soft], "origin": ...,
                 "mt_priority": "normal", ...platform headers (all optional)},
     "properties": {"delivery_tag": "<uuid>", "delivery_mode": 2, "priority": 0,
                    "delivery_info": {"exchange": "", "routing_key": "<svc>.<priority>"},
                    "correlation_id": "<task id>", "body_encoding": "base64" (optional)}}

``args`` is ``[payload]`` (a payload object may instead come as ``kwargs``). We write the body as plain
JSON text without base64: kombu decodes a body only when ``body_encoding`` is set, and Celery clients that
do base64 (celery-node, Celery itself) are understood all the same. With message signing on, the body is
Celery's signed ``auth`` text instead, with content type ``application/data`` (see :mod:`meetingtasks.core.signing`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from meetingtasks.core.secret_fields import Keyring, mask_payload, seal_payload
from meetingtasks.core.signing import SIGNED_CONTENT_TYPE, SIGNED_FOR, signed_for, unverified_body

if TYPE_CHECKING:
    from meetingtasks.core.signing import MessageSigner

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"
_REPR_LIMIT = 200


def new_id() -> str:
    return str(uuid.uuid4())


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_ids(n: int) -> list[str]:
    """``n`` fresh random (version 4) UUID strings, as :func:`new_id` makes them; one ``os.urandom`` call for
    all of them is several times faster than ``uuid.uuid4()`` one by one."""
    h = os.urandom(16 * n).hex()
    v = _VARIANT
    if n == 1:  # the single dispatch: no list comprehension to set up
        return [f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{v[h[16]]}{h[17:20]}-{h[20:32]}"]
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-{v[h[i + 16]]}{h[i + 17:i + 20]}-{h[i + 20:i + 32]}"
            for i in range(0, 32 * n, 32)]


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def _envelope(*, body: Any, content_type: str, task_id: Any, task_name: str, queue: str, retries: int,
              argsrepr: Any, headers: Mapping[str, Any] | None, root_id: Any, parent_id: str | None,
              delivery_tag: Any) -> dict[str, Any]:
    """The envelope as a dict, in the key order of the wire format (:class:`MessageTemplate` relies on it)."""
    hdrs: dict[str, Any] = {
        "lang": "py",
        "task": task_name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": retries,
        "timelimit": [None, None],
        "root_id": root_id,
        "parent_id": parent_id,
        "argsrepr": argsrepr,
        "kwargsrepr": "{}",
        "origin": _ORIGIN,
        "ignore_result": True,
    }
    if headers:
        hdrs.update(headers)
    return {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": hdrs,
        "properties": {
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "delivery_tag": delivery_tag,
        },
    }


def encode_task_message(
    *,
    task_id: str,
    task_name: str,
    payload: Mapping[str, Any],
    queue: str,
    retries: int = 0,
    headers: Mapping[str, Any] | None = None,
    root_id: str | None = None,
    parent_id: str | None = None,
    signer: MessageSigner | None = None,
) -> bytes:
    """Encode one task message ready to ``LPUSH`` onto ``queue``; its body signed by ``signer`` if given."""
    body = orjson.dumps([[payload], {}, _EMBED]).decode()
    argsrepr = body[: _REPR_LIMIT]
    content_type = "application/json"
    if signer is not None:
        body, content_type = task_body(payload, task_name=task_name, task_id=task_id, signer=signer)
    return orjson.dumps(_envelope(body=body, content_type=content_type, task_id=task_id, task_name=task_name,
                                  queue=queue, retries=retries, argsrepr=argsrepr, headers=headers,
                                  root_id=root_id or task_id, parent_id=parent_id, delivery_tag=new_id()))


#: What :func:`encode_task_message` puts around the payload's JSON to make the body.
_BODY_HEAD = b"[["
_BODY_TAIL = b"]," + orjson.dumps({}) + b"," + orjson.dumps(_EMBED) + b"]"


def _json_string_of_json(text: bytes) -> bytes:
    """The inside of the JSON string literal holding ``text``, itself JSON as orjson writes it: such text has
    no control characters (orjson escapes them), so only quotes and backslashes need escaping."""
    return text.replace(b"\\", b"\\\\").replace(b'"', b'\\"')


class MessageTemplate:
    """The message :func:`encode_task_message` makes for ``task_name`` on ``queue`` with ``headers`` (fixed
    values) followed by the ``timestamps`` headers (per call), no signer and no retries, pre-encoded once:
    :meth:`encode_many` splices each task's parts into it, byte for byte what :func:`encode_task_message` writes
    for ``headers={**headers, **timestamps}``, at a fraction of the cost (no dict, one join per message)."""

    _SLOTS = ("body", "task_id", "root_id", "argsrepr", "delivery_tag")

    def __init__(self, task_name: str, queue: str, headers: Mapping[str, Any], timestamps: Sequence[str]) -> None:
        if set(timestamps) & set(headers):
            raise ValueError("a header cannot be both fixed and per call")
        marks = {name: f"\x00mt-slot:{name}\x00" for name in (*self._SLOTS, *timestamps)}
        text = orjson.dumps(_envelope(
            body=marks["body"], content_type="application/json", task_id=marks["task_id"], task_name=task_name,
            queue=queue, retries=0, argsrepr=marks["argsrepr"], root_id=marks["root_id"], parent_id=None,
            headers={**headers, **{name: marks[name] for name in timestamps}}, delivery_tag=marks["delivery_tag"],
        ))
        # Split the text at each mark (the JSON string literal of the mark, quotes included), in text order.
        literals = {orjson.dumps(mark): name for name, mark in marks.items()}
        pattern = re.compile(b"|".join(re.escape(literal) for literal in literals))
        parts: list[bytes] = []
        order: list[str] = []
        pos = 0
        for match in pattern.finditer(text):
            parts.append(text[pos:match.start()])
            order.append(literals[match.group()])
            pos = match.end()
        parts.append(text[pos:])
        expected = ["body", "task_id", "root_id", "argsrepr", *timestamps, "task_id", "delivery_tag"]
        if order != expected:  # the wire format changed: this class must follow
            raise AssertionError(f"message template slots {order}, expected {expected}")
        self._parts = parts
        self._timestamps = tuple(timestamps)
        # The runs of constant bytes between the slots, with the quotes around each string slot; the run between
        # argsrepr and the second task id holds the timestamps and is made per call.
        n = len(timestamps)
        self._constants = (parts[0] + b'"', b'"' + parts[1] + b'"', b'"' + parts[2] + b'"', b'"' + parts[3] + b'"',
                           b'"' + parts[5 + n] + b'"', b'"' + parts[6 + n])
        # The constant bytes: the parts, two quotes around each of the six string slots, a float per timestamp.
        self._fixed = sum(map(len, parts)) + 12 + 32 * len(timestamps)

    def max_length(self, payload_json_length: int, task_id: str) -> int:
        """An upper bound of the length of the message of task ``task_id`` whose payload is
        ``payload_json_length`` bytes of JSON, to check a size limit without encoding: escaping at most
        doubles JSON text (at most sextuples other text), argsrepr holds at most 200 characters."""
        body = payload_json_length + len(_BODY_HEAD) + len(_BODY_TAIL)
        return self._fixed + 2 * body + 2 * 4 * _REPR_LIMIT + 3 * 6 * len(task_id.encode()) + 36

    def encode_many(self, task_ids: Sequence[str], payloads: Sequence[Mapping[str, Any]],
                    times: Sequence[float]) -> list[bytes]:
        """The messages of tasks ``task_ids`` with ``payloads`` (JSON-ready, as ``model_dump(mode="json")``
        makes them); ``times`` are the values of the per-call timestamp headers, the same for every task."""
        p, c0, c1, c2, c3, c5, c6 = self._parts, *self._constants
        n = len(self._timestamps)
        stamps = b"".join(part + orjson.dumps(t) for part, t in zip(p[4:4 + n], times, strict=True))
        c4 = b'"' + stamps + p[4 + n] + b'"'
        head, tail, escape, limit, dumps = _BODY_HEAD, _BODY_TAIL, _json_string_of_json, _REPR_LIMIT, orjson.dumps
        tags = new_ids(len(task_ids))
        out: list[bytes] = []
        append = out.append
        for task_id, payload, tag in zip(task_ids, payloads, tags, strict=True):
            # orjson's own output is dropped at once: keeping it alive costs a fresh allocation per call.
            full = head + dumps(payload) + tail
            body = escape(full)
            if len(full) <= limit:
                argsrepr = body
            else:
                cut = full[:limit]
                # argsrepr is the first characters of the body text, not bytes: slice bytes only when ASCII.
                argsrepr = escape(cut if cut.isascii() else full.decode()[:limit].encode())
            tid = orjson.dumps(task_id)[1:-1]
            append(b"".join((c0, body, c1, tid, c2, tid, c3, argsrepr, c4, tid, c5, tag.encode(), c6)))
        return out
@dataclass(frozen=True, slots=True)
class DecodedMessage:
    """What the platform needs of a queue item; ``None`` fields were absent."""

    envelope: dict[str, Any]
    task_id: str | None
    task_name: str | None
    queue: str | None
    retries: int
    payload: Any


class MalformedMessage(ValueError):
    """A queue item that is not a task message we can run; the text says what is wrong."""


def check_envelope(raw: bytes | str, max_bytes: int) -> dict[str, Any]:
    """Parse a queue item into kombu's envelope or raise :class:`MalformedMessage` saying why.

    The one gate between the queues and Celery: whatever passes it has the types that kombu, Celery's strategy
    and request, and the platform's own code read without raising (see :func:`envelope_problem`)."""
    size = len(raw)
    if size > max_bytes:
        raise MalformedMessage(f"message of {size} bytes exceeds max_message_bytes={max_bytes}")
    try:
        envelope = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise MalformedMessage(f"not a message envelope: a JSON {type(envelope).__name__}, not an object")
    problem = envelope_problem(envelope)
    if problem is not None:
        raise MalformedMessage(problem)
    return envelope


#: Largest ``retries`` accepted: the fetch script (doubles in Lua) and Celery (ints) read it alike up to here.
MAX_RETRIES = 2**31 - 1

# What each known field may hold besides null; the kinds past a plain type are checked further in _special.
_TIME, _COUNT, _LIMITS = "an ISO 8601 time string", f"an integer from 0 to {MAX_RETRIES}", "[hard, soft] seconds"
_KINDS: dict[Any, tuple[type | tuple[type, ...], str]] = {
    str: (str, "a string"), int: (int, "an integer"), float: ((int, float), "a number"),
    bool: (bool, "true or false"), list: (list, "an array"), dict: (dict, "an object"),
    _TIME: (str, _TIME), _COUNT: (int, _COUNT), _LIMITS: (list, _LIMITS),
}
#: Celery protocol v2 headers (what its strategy and request read) and the platform's own.
_HEADER_KINDS = tuple((name, *_KINDS[kind], kind in (_TIME, _COUNT, _LIMITS)) for name, kind in (
    ("task", str), ("id", str), ("lang", str), ("shadow", str), ("eta", _TIME), ("expires", _TIME),
    ("group", str), ("group_index", int), ("retries", _COUNT), ("timelimit", _LIMITS), ("root_id", str),
    ("parent_id", str), ("argsrepr", str), ("kwargsrepr", str), ("origin", str), ("ignore_result", bool),
    ("replaced_task_nesting", int), ("stamped_headers", list), ("stamps", dict), ("redelivered", bool),
    ("mt_priority", str), ("mt_enqueued_at", float), ("mt_dispatched_at", float), ("mt_first_failure_at", float),
    ("mt_rate_slot", float), ("mt_signed_for", str),
))
_HEADER_KIND_OF = {name: (types, text, special) for name, types, text, special in _HEADER_KINDS}
_PROPERTY_KINDS = tuple((name, *_KINDS[kind]) for name, kind in (
    ("correlation_id", str), ("reply_to", str), ("priority", int), ("delivery_mode", int), ("body_encoding", str),
))
_DELIVERY_INFO_KINDS = tuple((name, *_KINDS[kind]) for name, kind in (
    ("exchange", str), ("routing_key", str), ("priority", int), ("redelivered", bool),
))


def _special(value: Any, text: str) -> bool:
    """Whether ``value`` (already of the plain type) is what a header of kind ``text`` needs."""
    if text is _COUNT:
        return not isinstance(value, bool) and 0 <= value <= MAX_RETRIES
    if text is _TIME:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return False
        return True
    return len(value) == 2 and all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool) and v >= 0) for v in value)


def _wrong(where: str, value: Any, text: str) -> str:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{where} must be {text}, not {shown}"


def envelope_problem(envelope: dict[str, Any]) -> str | None:
    """What is wrong with a parsed envelope, in one line, or ``None``: the types of every field that kombu,
    Celery and the platform read (unknown extra fields are left alone). About 2 us per message."""
    props = envelope.get("properties")
    if not isinstance(props, dict):
        return "envelope has no 'properties' object"
    tag = props.get("delivery_tag")
    if not isinstance(tag, str) or not tag:
        return ("envelope properties have no 'delivery_tag'" if tag is None
                else _wrong("properties.delivery_tag", tag, "a non-empty string"))
    info = props.get("delivery_info")
    if info is not None:
        if not isinstance(info, dict):
            return "envelope properties.delivery_info is not an object"
        for name, types, text in _DELIVERY_INFO_KINDS:
            value = info.get(name)
            if value is not None and not isinstance(value, types):
                return _wrong(f"properties.delivery_info.{name}", value, text)
    for name, types, text in _PROPERTY_KINDS:
        value = props.get(name)
        if value is not None and not isinstance(value, types):
            return _wrong(f"properties.{name}", value, text)
    body = envelope.get("body")
    if not isinstance(body, str):
        return "envelope has no 'body' string" if body is None else _wrong("body", body, "a string")
    for name in ("content-type", "content-encoding"):
        value = envelope.get(name)
        if value is not None and not isinstance(value, str):
            return _wrong(name, value, "a string")
    headers = envelope.get("headers")
    if body[:1] != "[":  # not a protocol-2 body (a list): one whose fields Celery reads as headers?
        problem = _body_object_problem(envelope, body, props)
        if problem is not None:
            return problem
    if headers is None:
        return None  # Celery files it as an unknown message (dead letter "UnknownMessage")
    if not isinstance(headers, dict):
        return "envelope 'headers' is not an object"
    problem = _fields_problem("headers", headers)
    if problem is None and "task" in headers and not isinstance(headers.get("id"), str):
        return "headers.id is missing: a task message needs a task id string"
    return problem


def _fields_problem(where: str, fields: dict[str, Any]) -> str | None:
    kinds = _HEADER_KIND_OF
    for name, value in fields.items():  # the fields present: fewer than the known ones
        kind = kinds.get(name)
        if kind is not None and value is not None:
            types, text, special = kind
            if not isinstance(value, types) or (special and not _special(value, text)):
                return _wrong(f"{where}.{name}", value, text)
    return None


def _reserved_problem(where: str, fields: dict[str, Any]) -> str | None:
    """A body's fields become the task's request over its headers: none may claim what the worker's fetch
    recorded for this delivery (:data:`FETCH_HEADERS`)."""
    for name in FETCH_HEADERS:
        if name in fields:
            return f"{where}.{name} is recorded by the worker's fetch, never sent by a producer"
    return None


def _body_object_problem(envelope: dict[str, Any], body: str, props: dict[str, Any]) -> str | None:
    """What is wrong with a JSON body that is an object: Celery reads a protocol-1 body (and a "hybrid" one, an
    object with ``args``) as the message's headers, so its fields get the headers' check, and ``args`` and
    ``kwargs`` theirs. Protocol-2 bodies (JSON arrays, the platform's own) never get here."""
    if envelope.get("content-type") != "application/json":
        return None  # refused or verified by the consumer (content types, signatures)
    text: str | bytes = body
    if props.get("body_encoding") == "base64":
        try:
            text = base64.b64decode(body)
        except (binascii.Error, ValueError):
            return None  # kombu's decode fails: dead-lettered as a DecodeError
    if text.lstrip()[:1] not in ("{", b"{"):
        return None
    try:
        fields = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None  # dead-lettered as a DecodeError
    if not isinstance(fields, dict):
        return None
    problem = _fields_problem("body", fields) or _reserved_problem("body", fields)
    if problem is not None:
        return problem
    for name, types, kind in (("args", list, "an array"), ("kwargs", dict, "an object")):
        value = fields.get(name)
        if value is not None and not isinstance(value, types):
            return _wrong(f"body.{name}", value, kind)
    if "task" in fields and not isinstance(fields.get("id"), str):
        return "body.id is missing: a protocol-1 task message needs a task id string"
    return None


#: What the embed part of a protocol-2 body (its third element) may hold besides null (Celery and celery-node
#: send these four), and the signed body's binding; nothing else, as Celery's pool merges the embed into the task's
#: request.
_EMBED_KINDS = (("callbacks", list, "an array of signatures"), ("errbacks", list, "an array of signatures"),
                ("chain", list, "an array of signatures"), ("chord", dict, "a signature object"))
_EMBED_NAMES = (*(name for name, _, _ in _EMBED_KINDS), SIGNED_FOR)


def call_problem(args: Any, kwargs: Any, embed: Any) -> str | None:
    """What is wrong with the three parts of a decoded task body (``[args, kwargs, embed]``), in one line, or
    ``None``. Read by the worker's request in the consumer (a few type checks): past it, Celery's pool would
    raise outside the task (a task left STARTED, or a pool slot holding its message for good)."""
    if not isinstance(args, list | tuple):
        return _wrong("body args", args, "an array")
    if not isinstance(kwargs, dict):
        return _wrong("body kwargs", kwargs, "an object")
    if embed is None:
        return None
    if not isinstance(embed, dict):
        return _wrong("body embed", embed, "an object")
    for name, kind, text in _EMBED_KINDS:
        value = embed.get(name)
        if value is not None and (not isinstance(value, kind)
                                  or (kind is list and not all(isinstance(v, dict) for v in value))):
            return _wrong(f"body embed.{name}", value, text)
    for name in embed:
        if name not in _EMBED_NAMES:
            # Celery's pool merges the embed into the task's request: an "id" or "retries" here would override
            # the message's own, an mt_fetch_* key what the worker's fetch recorded.
            return f"body embed.{name} is not an embed field ({', '.join(_EMBED_NAMES)})"
    return None


def task_body(payload: Any, *, task_name: str, task_id: str, signer: MessageSigner | None) -> tuple[str, str]:
    """``(body text, content type)`` of a call with ``payload``: JSON, or signed by ``signer``. A signed body
    names the task type and id it was signed for (headers are not signed; see :mod:`meetingtasks.core.signing`)."""
    if signer is None:
        return orjson.dumps([[payload], {}, _EMBED]).decode(), "application/json"
    embed = {**_EMBED, SIGNED_FOR: signed_for(task_name, task_id)}
    return signer.sign([[payload], {}, embed]), signer.content_type


def decode_body(envelope: Mapping[str, Any]) -> Any:
    """The decoded ``[args, kwargs, embed]`` body, or ``None`` when it cannot be read. A signed body is
    read WITHOUT checking its signature: this is for display (dead letters); workers verify before running."""
    body = envelope.get("body")
    if body is None:
        return None
    try:
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        if envelope.get("content-type") == SIGNED_CONTENT_TYPE:
            return unverified_body(body)
        return orjson.loads(body)
    except (binascii.Error, ValueError, TypeError):
        return None


def payload_from_args(args: Any, kwargs: Any) -> Any:
    """The payload of a task call: ``args[0]`` when it is the only argument, else ``kwargs``."""
    if args and len(args) == 1 and not kwargs:
        return args[0]
    if not args:
        return dict(kwargs or {})
    return {"args": list(args), "kwargs": dict(kwargs or {})}


def describe(envelope: Mapping[str, Any]) -> DecodedMessage:
    """Pick the fields the dead-letter queue records out of an envelope, tolerating any shape."""
    headers = envelope.get("headers") or {}
    props = envelope.get("properties") or {}
    info = props.get("delivery_info") or {}
    body = decode_body(envelope)
    payload: Any = None
    if isinstance(body, list) and len(body) >= 2:
        args, kwargs = body[0], body[1]
        # Any shape: a body whose args or kwargs are not what a call has is kept as it came.
        call = isinstance(args, list) and (kwargs is None or isinstance(kwargs, dict))
        payload = payload_from_args(args, kwargs) if call else body
    retries = headers.get("retries", 0)
    return DecodedMessage(
        envelope=dict(envelope),
        task_id=headers.get("id") or props.get("correlation_id"),
        task_name=headers.get("task"),
        queue=info.get("routing_key"),
        retries=retries if isinstance(retries, int) else 0,
        payload=payload,
    )


#: Headers the worker's fetch adds to a message it delivers (see meetingtasks.worker.transport); they describe
#: one delivery and are never stored or sent again.
FETCH_HEADERS = ("mt_fetch_deliveries", "mt_fetch_cancelled", "mt_fetch_started", "mt_fetch_flags_at")


def strip_fetch_headers(envelope: Any) -> Any:
    headers = envelope.get("headers") if isinstance(envelope, dict) else None
    if isinstance(headers, dict):
        for name in FETCH_HEADERS:
            headers.pop(name, None)
    return envelope


def renew_envelope(envelope: Mapping[str, Any], *, retries: int) -> bytes:
    """A copy of ``envelope`` for another delivery: fresh delivery tag, ``retries`` set, not redelivered."""
    copy = strip_fetch_headers(orjson.loads(orjson.dumps(envelope)))
    copy.setdefault("headers", {})["retries"] = retries
    copy["headers"].pop("redelivered", None)
    props = copy.setdefault("properties", {})
    props["delivery_tag"] = new_id()
    props.setdefault("delivery_info", {}).pop("redelivered", None)
    return orjson.dumps(copy)


def seal_envelope(envelope: dict[str, Any], fields: tuple[str, ...], ring: Keyring | None) -> dict[str, Any]:
    """A copy of a queue item whose JSON body carries a payload with plain secret fields (a foreign producer's),
    with them sealed (masked when there is no key) and its argsrepr masked; a signed body is left as it is."""
    if envelope.get("content-type") != "application/json":
        return envelope
    body = decode_body(envelope)
    if not (isinstance(body, list) and len(body) == 3 and isinstance(body[0], list) and len(body[0]) == 1):
        return envelope
    payload = body[0][0]
    sealed = mask_payload(fields, payload) if ring is None else seal_payload(fields, payload, ring)
    if sealed is payload:
        return envelope
    out = dict(envelope)
    out["body"] = json.dumps([[sealed], body[1], body[2]], separators=(",", ":"))
    out["properties"] = {k: v for k, v in (envelope.get("properties") or {}).items() if k != "body_encoding"}
    headers = dict(envelope.get("headers") or {})
    if "argsrepr" in headers:
        headers["argsrepr"] = repr([mask_payload(fields, payload)])
    headers.pop("kwargsrepr", None)
    out["headers"] = headers
    return out
