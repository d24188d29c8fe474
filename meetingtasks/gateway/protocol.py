"""The gateway's JSON protocol (text frames on ``/ws``), as docs/gateway.md documents it.

client -> gateway::

    {"op": "submit", "ref": R, "type": T, "payload": {...}, "priority": P?}
    {"op": "cancel", "id": ID}
    {"op": "subscribe", "id": ID}

gateway -> client::

    {"op": "accepted", "ref": R, "id": ID}
    {"op": "status", "id": ID, "status": S, "progress"?, "progress_message"?, "result"?, "error"?, "time": T}
    {"op": "error", "ref": R?, "error": "one clear line"}

``ref`` is the client's own correlation value (string or number), echoed back; ``cancel`` and
``subscribe`` may carry one too. ``progress_message`` accompanies ``progress``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from meetingtasks.core.secret_fields import Keyring, mask_result, reveal
from meetingtasks.store.status import SEALED_RESULT, Status, StatusRecord

Ref = str | int | float | None

#: Fields of a status event that reach the client.
STATUS_FIELDS = ("progress", "progress_message", "result", "error")


@dataclass(frozen=True, slots=True)
class Submit:
    ref: Ref
    type: str
    payload: Any
    priority: str | None


@dataclass(frozen=True, slots=True)
class Cancel:
    ref: Ref
    id: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    ref: Ref
    id: str


Request = Submit | Cancel | Subscribe


class ProtocolError(ValueError):
    """A frame the gateway cannot act on; ``ref`` is echoed in the error frame when it was readable."""

    def __init__(self, message: str, ref: Ref = None) -> None:
        super().__init__(message)
        self.ref = ref


def parse_frame(text: str | bytes) -> Request:
    """The request in one client frame, or :class:`ProtocolError` saying what is wrong with it."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"invalid JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise ProtocolError(f"a frame must be a JSON object, not {type(frame).__name__}")
    ref = frame.get("ref")
    if ref is not None and (isinstance(ref, bool) or not isinstance(ref, str | int | float)):
        raise ProtocolError("ref must be a string or a number")
    op = frame.get("op")
    if op == "submit":
        task_type = frame.get("type")
        if not isinstance(task_type, str) or not task_type:
            raise ProtocolError('submit needs a task type: {"op": "submit", "type": ..., "payload": {...}}', ref)
        payload = frame.get("payload", {})
        if not isinstance(payload, dict):
            raise ProtocolError("submit payload must be a JSON object", ref)
        priority = frame.get("priority")
        if priority is not None and not isinstance(priority, str):
            raise ProtocolError("priority must be one of critical, high, normal, low", ref)
        return Submit(ref, task_type, payload, priority)
    if op in ("cancel", "subscribe"):
        task_id = frame.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise ProtocolError(f"{op} needs the task id: {{\"op\": \"{op}\", \"id\": ...}}", ref)
        return Cancel(ref, task_id) if op == "cancel" else Subscribe(ref, task_id)
    if op is None:
        raise ProtocolError("frame has no op: use submit, cancel or subscribe", ref)
    raise ProtocolError(f"unknown op {op!r}: use submit, cancel or subscribe", ref)


def accepted(ref: Ref, task_id: str) -> bytes:
    return orjson.dumps({"op": "accepted", "ref": ref, "id": task_id})


def error(message: str, ref: Ref = None) -> bytes:
    frame: dict[str, Any] = {"op": "error", "error": message}
    if ref is not None:
        frame["ref"] = ref
    return orjson.dumps(frame)


def status(event: dict[str, Any], ring: Keyring | None = None) -> bytes:
    """The client's view of a status event published on the status channel. A result with secrets (the event
    shows them as ``***``) is opened with ``ring``: the client following a task is the one that submitted it."""
    frame: dict[str, Any] = {"op": "status", "id": event["id"], "status": event["status"], "time": event.get("time")}
    for name in STATUS_FIELDS:
        if name in event:
            frame[name] = event[name]
    if SEALED_RESULT in event:
        frame["result"] = reveal(event[SEALED_RESULT], ring)
    return orjson.dumps(frame)


def frame_time(frame: bytes) -> float:
    """The ``time`` of a status frame (0.0 when it has none)."""
    value = orjson.loads(frame).get("time")
    return float(value) if isinstance(value, int | float) else 0.0


def snapshot_event(record: StatusRecord) -> dict[str, Any]:
    """A status event built from a stored record (for ``subscribe`` and after a feed outage)."""
    event: dict[str, Any] = {"op": "status", "id": record.id, "status": record.status.value,
                             "time": float(record.fields.get("updated_at", "0"))}
    fields = record.fields
    if "progress" in fields:
        event["progress"] = float(fields["progress"])
        event["progress_message"] = fields.get("progress_message", "")
    if record.status is Status.SUCCEEDED and "result" in fields:
        result = record.result
        event["result"] = mask_result(result)
        if event["result"] is not result:  # as the live event carries it (see meetingtasks.store.status)
            event[SEALED_RESULT] = result
    if record.error is not None and record.status is not Status.SUCCEEDED:
        event["error"] = record.error
    return event
