"""Task status records: one hash per task, every transition kept and published.

The record itself (states, terminal set, fields, history line, event head) is defined once in
:mod:`meetingtasks.store.status_schema`, whose Lua side the scripts get in their prelude; this module stores it.

A record holds ``id type service priority queue status attempt created_at updated_at`` and, when known,
``result`` (JSON), ``error``, ``error_type``, ``progress``, ``progress_message``, ``worker``, and
``history``: one line per transition, ``"<STATUS> <epoch seconds> <attempt>"``; ``deliveries``: the
poison guard's count of deliveries of the current run (the worker's fetch counts each one; a transition
other than STARTED resets it); ``cancel_requested_at``: set with the cancel flag (see
:mod:`meetingtasks.store.cancel`), so the fetch reads it in its read of the record. Records expire
``status_ttl_s`` after their last change. Every accepted transition is published as JSON on the status
channel (``Keys.status_channel``), which the WebSocket gateway forwards.

A terminal status (:data:`~meetingtasks.store.status_schema.TERMINAL`) is final: later transitions
are refused (a late duplicate cannot turn SUCCEEDED back into STARTED) unless ``force`` is set, which only
dead-letter replay does.

The first terminal transition also finalises the task in the same Lua call: its timeout deadline is dropped,
its callbacks (fields ``on_success``/``on_failure``) are filed in the callback outbox, and it is counted in its
batch (field ``batch``); see :mod:`meetingtasks.store.callbacks`. A running task's progress (``progress`` percent,
``progress_message``) is published like a transition but leaves the status and history alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis

from meetingtasks.core.message import dumps, loads
from meetingtasks.core.secret_fields import mask, mask_result
from meetingtasks.lua import LuaScript
from meetingtasks.store.keys import Keys
from meetingtasks.store.status_schema import EVENT_FIELDS, TERMINAL, TERMINAL_NAMES, Status, parse_history, status_event

__all__ = ["SEALED_RESULT", "TERMINAL", "TERMINAL_NAMES", "Status", "StatusRecord", "StatusStore", "encode_transition",
           "parse_record"]

#: Event field with a result whose secrets the event's ``result`` shows as ``***``: the result as stored, sealed.
SEALED_RESULT = "sealed_result"


# The one-task transition (the rules live in lua/prelude/transition.lua, shared with the worker's fetch).
_TRANSITION = LuaScript.load("transition")
_PROGRESS = LuaScript.load("progress")


@dataclass(frozen=True)
class StatusRecord:
    id: str
    status: Status
    attempt: int
    fields: dict[str, str]
    history: list[tuple[Status, float, int]] = field(default_factory=list)

    @property
    def result(self) -> Any:
        raw = self.fields.get("result")
        return None if raw is None else loads(raw)

    @property
    def error(self) -> str | None:
        return self.fields.get("error")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in self.fields.items() if k not in ("history", "result")}
        out.update(id=self.id, status=self.status.value, attempt=self.attempt)
        for name in ("created_at", "updated_at", "progress", "deadline", "cancel_requested_at"):
            if name in out:
                out[name] = float(out[name])
        if "deliveries" in out:
            out["deliveries"] = int(out["deliveries"])
        if "result" in self.fields:
            out["result"] = mask(self.result)  # a display: sealed secrets show as ***
        out["history"] = [{"status": s.value, "time": t, "attempt": a} for s, t, a in self.history]
        return out


class StatusStore:
    def __init__(self, keys: Keys, ttl_s: int) -> None:
        self.keys = keys
        self.ttl_s = ttl_s

    def transition(
        self,
        client: redis.Redis | redis.client.Pipeline,
        task_id: str,
        status: Status,
        *,
        attempt: int,
        fields: dict[str, Any] | None = None,
        force: bool = False,
        now: float | None = None,
        by_sha: bool = False,
    ) -> Any:
        """Record and publish a transition. On a pipeline it is queued (with ``by_sha`` only in pipelines run
        by :func:`meetingtasks.lua.execute_idempotent`); otherwise returns 1 if accepted."""
        now = time.time() if now is None else now
        event, flat = encode_transition(task_id, status, attempt, fields, now)
        args: list[Any] = [status.value, repr(now), attempt, self.ttl_s, self.keys.status_channel,
                           event, "1" if force else "0", task_id, self.keys.batch(""), *flat]
        keys = [self.keys.status(task_id), self.keys.deadlines, self.keys.callbacks]
        if isinstance(client, redis.client.Pipeline):
            _TRANSITION.queue(client, keys, args, by_sha=by_sha)
            return None
        return _TRANSITION(client, keys, args)

    def progress(
        self,
        client: redis.Redis,
        task_id: str,
        percent: float,
        message: str,
        *,
        attempt: int,
        fields: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> bool:
        """Record and publish the progress of a running task; ``False`` when it is not STARTED (any more)."""
        now = time.time() if now is None else now
        event = status_event(task_id, Status.STARTED, now, attempt)
        event.update(progress=percent, progress_message=message)
        for name, value in (fields or {}).items():
            if value is not None and name in EVENT_FIELDS:
                event[name] = value
        args: list[Any] = [repr(float(percent)), message, repr(now), self.ttl_s, self.keys.status_channel,
                           dumps(event)]
        return bool(_PROGRESS(client, [self.keys.status(task_id)], args))

    def get(self, client: redis.Redis, task_id: str) -> StatusRecord | None:
        raw = client.hgetall(self.keys.status(task_id))
        if not raw:
            return None
        return parse_record(task_id, raw)


def encode_transition(
    task_id: str, status: Status, attempt: int, fields: dict[str, Any] | None, now: float
) -> tuple[bytes, list[str]]:
    """The published event (JSON) and the flat field/value list of one transition."""
    flat: list[str] = []
    event = status_event(task_id, status, now, attempt)
    for name, value in (fields or {}).items():
        if value is None:
            continue
        text = value if isinstance(value, str) and name != "result" else dumps(value).decode()
        flat += [name, text]
        if name == "result":
            shown = mask_result(value)
            event[name] = shown
            if shown is not value:
                # For the gateway, which opens it for the submitting client only; opaque to everyone else.
                event[SEALED_RESULT] = value
        elif name in EVENT_FIELDS:
            event[name] = value
    return dumps(event), flat


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_record(task_id: str, raw: dict[Any, Any]) -> StatusRecord:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    return StatusRecord(
        id=task_id,
        status=Status(fields["status"]),
        attempt=int(fields.get("attempt", "0")),
        fields=fields,
        history=parse_history(fields.get("history", "")),
    )
