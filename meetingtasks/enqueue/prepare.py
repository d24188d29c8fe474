"""Preparation: a task checked and encoded before anything is sent (no Redis here).

:func:`prepare` validates the payload against the type's model (sealing its secret fields), routes the type to
its service's queue for the priority, works out the due time and the deadline, and encodes the message (refused
over ``max_message_bytes``); a refusal is a :class:`~meetingtasks.core.errors.DispatchError` naming the problem.
:func:`prepare_plain` does the same for a batch's plain items with one pydantic call per task type, leaving
each message to be made from its type's template as it is sent (:mod:`meetingtasks.enqueue.commands`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from meetingtasks.core import tracing
from meetingtasks.core.errors import (
    ConfigurationError,
    DispatchError,
    InvalidPayload,
    MessageTooLarge,
    validation_message,
)
from meetingtasks.core.message import MessageTemplate, encode_task_message, new_ids
from meetingtasks.core.priority import Priority, queue_name
from meetingtasks.core.registry import REGISTRY, TaskTypeSpec
from meetingtasks.core.secret_fields import Keyring, require_keyring, seal_dumped
from meetingtasks.core.settings import Settings
from meetingtasks.core.signing import signer_for
from meetingtasks.store.callbacks import callback_fields
from meetingtasks.store.platform import get_platform

#: The per-call headers of a message, after ``mt_priority`` (see :func:`prepare`).
_TIMESTAMPS = ("mt_dispatched_at", "mt_enqueued_at")


@functools.lru_cache(maxsize=1024)
def _template(task_name: str, queue: str, priority: str) -> MessageTemplate:
    return MessageTemplate(task_name, queue, {"mt_priority": priority}, _TIMESTAMPS)


@functools.lru_cache(maxsize=256)
def _list_adapter(model: type[BaseModel]) -> TypeAdapter[list[BaseModel]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def _unencodable(task_type: str, exc: Exception) -> InvalidPayload:
    return InvalidPayload(f"{task_type}: the payload cannot be sent as JSON ({exc}); send integers beyond 64 bits "
                          "as strings")


def validate_payload(spec: TaskTypeSpec, payload: Any, settings: Settings | None = None) -> dict[str, Any]:
    """The payload as the JSON the handler will get (its secret fields sealed, see
    :mod:`meetingtasks.core.secret_fields`), or :class:`InvalidPayload` naming the field."""
    model = spec.payload_model
    if spec.secret_fields:
        return _validate_sealed(spec, payload, settings)
    if isinstance(payload, model):
        return payload.model_dump(mode="json")
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    try:
        # model_validate(...).model_dump(mode="json") without the two wrappers' keyword handling.
        validated = model.__pydantic_validator__.validate_python(payload)
        return model.__pydantic_serializer__.to_python(validated, mode="json")  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise InvalidPayload(validation_message(spec.name, exc)) from None


def _validate_sealed(spec: TaskTypeSpec, payload: Any, settings: Settings | None) -> dict[str, Any]:
    """:func:`validate_payload` of a type with secret fields: the JSON dump shows a ``SecretStr`` as stars, so each
    secret is taken from the validated model and sealed (about 16 us per field, Fernet)."""
    model = spec.payload_model
    if isinstance(payload, BaseModel) and not isinstance(payload, model):
        payload = payload.model_dump(mode="json")  # (a SecretStr of another model would dump as stars)
    try:
        validated = payload if isinstance(payload, model) else model.__pydantic_validator__.validate_python(payload)
        body: dict[str, Any] = model.__pydantic_serializer__.to_python(validated, mode="json")
    except ValidationError as exc:
        raise InvalidPayload(validation_message(spec.name, exc)) from None
    return seal_dumped(spec.secret_fields, validated, body, _sealing_keyring(spec, settings))


def _sealing_keyring(spec: TaskTypeSpec, settings: Settings | None) -> Keyring:
    try:
        return require_keyring(settings or get_platform().settings, f"{spec.name} has secret fields")
    except ConfigurationError as exc:  # refused like any dispatch that cannot be accepted: nothing is queued
        raise DispatchError(str(exc)) from None


@dataclass(frozen=True)
class PreparedTask:
    """A validated, encoded task ready to be pushed in a pipeline."""

    task_id: str
    spec: TaskTypeSpec
    priority: Priority
    queue: str
    message: bytes
    due_s: float | None
    deadline_s: float | None = None
    fields: dict[str, str] = field(default_factory=dict)


def prepare(
    settings: Settings,
    task_type: str | TaskTypeSpec,
    payload: Any,
    *,
    priority: Priority | str | None = None,
    delay: float | None = None,
    eta: datetime | None = None,
    headers: Mapping[str, Any] | None = None,
    task_id: str | None = None,
    timeout: float | None = None,
    on_success: str | None = None,
    on_failure: str | None = None,
    fields: Mapping[str, str] | None = None,
) -> PreparedTask:
    """Validate and encode one task; raises a :class:`DispatchError` naming the problem."""
    spec = task_type if isinstance(task_type, TaskTypeSpec) else REGISTRY.get(task_type)
    body = validate_payload(spec, payload, settings)
    prio = Priority.parse(priority, settings.default_priority or spec.priority)
    queue = queue_name(spec.service, prio)
    due_s = due_time(settings, delay, eta)
    task_id = task_id or new_ids(1)[0]
    now = time.time()
    extra = callback_fields(on_success, on_failure)
    if fields:
        extra.update(fields)
    deadline_s = None
    if timeout is not None:
        if timeout <= 0:
            raise InvalidPayload(f"{spec.name}: timeout must be > 0 seconds, got {timeout}")
        deadline_s = (due_s or now) + timeout
        extra["deadline"] = repr(deadline_s)
        extra["timeout_s"] = repr(float(timeout))
    # mt_enqueued_at: when the task becomes runnable, for the queue-wait metric.
    trace = tracing.dispatch_headers(spec.name, task_id, queue)  # W3C trace context, when tracing
    signer = signer_for(settings)
    try:
        if trace or headers or signer is not None:
            hdrs = {"mt_priority": prio.value, "mt_dispatched_at": now, "mt_enqueued_at": due_s or now, **trace}
            if headers:
                hdrs.update(headers)
            message = encode_task_message(task_id=task_id, task_name=spec.name, payload=body, queue=queue,
                                          headers=hdrs, signer=signer)
        else:  # the same bytes, from the pre-encoded template
            template = _template(spec.name, queue, prio.value)
            message = template.encode_many([task_id], [body], (now, due_s or now))[0]
    except orjson.JSONEncodeError as exc:
        raise _unencodable(spec.name, exc) from None
    if len(message) > settings.max_message_bytes:
        raise MessageTooLarge(
            f"{spec.name}: the message is {len(message)} bytes, over the limit of "
            f"{settings.max_message_bytes} bytes (max_message_bytes); pass large data by reference"
        )
    return PreparedTask(task_id, spec, prio, queue, message, due_s, deadline_s, extra)


def due_time(settings: Settings, delay: float | None, eta: datetime | None) -> float | None:
    """When a task given ``delay`` (seconds) or ``eta`` is due (epoch seconds), ``None`` for at once."""
    if delay is not None and eta is not None:
        raise InvalidPayload("give either delay or eta, not both")
    if eta is not None:
        if eta.tzinfo is None:
            raise InvalidPayload("eta must be timezone-aware (e.g. datetime.now(timezone.utc))")
        due = eta.astimezone(UTC).timestamp()
    elif delay is not None:
        if delay < 0:
            raise InvalidPayload(f"delay must be >= 0 seconds, got {delay}")
        due = time.time() + delay
    else:
        return None
    if due - time.time() > settings.max_delay_s:
        raise InvalidPayload(f"due time is more than max_delay_s={settings.max_delay_s}s away")
    return due if due > time.time() else None


#: A plain batch item, validated: its type, queue, payload (as JSON-ready data) and message template.
Plain = tuple[TaskTypeSpec, str, dict[str, Any], MessageTemplate]


def prepare_plain(settings: Settings, items: Sequence[Any], ids: Sequence[str],
                  times: tuple[float, float]) -> list[PreparedTask | Plain] | None:
    """Each item validated as :func:`prepare` would: a plain ``(type, payload dict)`` item as ``(spec,
    queue, payload, template)``, with one pydantic call per task type for the whole batch, its message
    to be made from the template as it is sent; any other item by :func:`prepare`. ``None`` when signing or
    tracing is on (each message is then made by :func:`encode_task_message`). Raises on the first refusal
    it meets, which need not be the first refused item: the caller finds that one item by item."""
    if signer_for(settings) is not None or tracing.active():
        return None
    planned: list[PreparedTask | Plain | None] = []
    specs: dict[str, TaskTypeSpec] = {}
    plain: dict[str, list[int]] = {}  # type -> indexes of its plain items
    payloads: dict[str, list[dict[str, Any]]] = {}
    for n, (item, task_id) in enumerate(zip(items, ids, strict=True)):
        kind = type(item)
        if (kind is tuple or kind is list) and len(item) == 2:
            name, payload = item
        elif kind is dict and len(item) == 2 and "type" in item and "payload" in item:
            name, payload = item["type"], item["payload"]
        else:
            name = payload = None
        if type(name) is str and type(payload) is dict:
            if name not in specs:
                specs[name] = REGISTRY.get(name)
                plain[name] = []
                payloads[name] = []
            plain[name].append(n)
            payloads[name].append(payload)
            planned.append(None)
        else:
            planned.append(prepare(settings, **batch_item(item), task_id=task_id))
    limit = settings.max_message_bytes
    for name, indexes in plain.items():
        spec = specs[name]
        adapter = _list_adapter(spec.payload_model)
        try:
            models = adapter.validate_python(payloads[name])
            bodies = adapter.dump_python(models, mode="json")
        except ValidationError as exc:
            raise InvalidPayload(validation_message(spec.name, exc)) from None
        if spec.secret_fields:  # sealed before the template splices them in: nothing below sees a plain secret
            ring = _sealing_keyring(spec, settings)
            bodies = [seal_dumped(spec.secret_fields, model, body, ring)
                      for model, body in zip(models, bodies, strict=True)]
        prio = Priority.parse(None, settings.default_priority or spec.priority)
        queue = queue_name(spec.service, prio)
        template = _template(spec.name, queue, prio.value)
        for n, body in zip(indexes, bodies, strict=True):
            try:
                if template.max_length(len(orjson.dumps(body)), ids[n]) > limit:
                    [message] = template.encode_many([ids[n]], [body], times)
                    if len(message) > limit:
                        raise MessageTooLarge(f"{spec.name}: a message is over max_message_bytes")
            except orjson.JSONEncodeError as exc:
                raise _unencodable(spec.name, exc) from None
            planned[n] = (spec, queue, body, template)
    return planned  # type: ignore[return-value]  # every None was filled in


BATCH_OPTIONS = frozenset({"task_type", "payload", "priority", "delay", "eta", "timeout", "on_success",
                            "on_failure"})


def batch_item(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        out = dict(item)
        out["task_type"] = out.pop("type", out.get("task_type"))
        unknown = sorted(set(out) - BATCH_OPTIONS)
        if unknown:
            raise InvalidPayload(
                f"batch item option(s) {', '.join(unknown)} not supported (use {', '.join(sorted(BATCH_OPTIONS))}; "
                "dedup_key needs a round trip per task: use dispatch)"
            )
        return out
    if isinstance(item, Sequence) and len(item) == 2:
        return {"task_type": item[0], "payload": item[1]}
    raise InvalidPayload(f"batch item {item!r}: use (type, payload) or {{'type': ..., 'payload': ...}}")

