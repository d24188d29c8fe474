"""Task status records: one hash per task, every transition kept and published.

A record holds ``id type service priority queue status attempt created_at updated_at`` and, when known,
``result`` (JSON), ``error``, ``error_type``, ``progress``, ``progress_message``, ``worker``, and
``history``: one line per transition, ``"<STATUS> <epoch seconds> <attempt>"``; ``deliveries``: the
poison guard's count of deliveries of the current run (the worker's fetch counts each one; a transition
other than STARTED resets it); ``cancel_requested_at``: set with the cancel flag (see
:mod:`meetingtasks.cancel`), so the fetch reads it in its read of the record. Records expire
``status_ttl_s`` after their last change. Every accepted transition is published as JSON on the status
channel (``Keys.status_channel``), which the WebSocket gateway forwards.

A terminal status (SUCCEEDED, FAILED, DEAD_LETTERED, CANCELLED, TIMED_OUT) is final: later transitions
are refused (a late duplicate cannot turn SUCCEEDED back into STARTED) unless ``force`` is set, which only
dead-letter replay does.

The first terminal transition also finalises the task in the same Lua call: its timeout deadline is dropped,
its callbacks (fields ``on_success``/``on_failure``) are filed in the callback outbox, and it is counted in its
batch (field ``batch``); see :mod:`meetingtasks.callbacks`. A running task's progress (``progress`` percent,
``progress_message``) is published like a transition but leaves the status and history alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis

from meetingtasks.keys import Keys
from meetingtasks.lua import LuaScript
from meetingtasks.message import dumps, loads
from meetingtasks.metrics.rollups import ROLLUP_LUA
from meetingtasks.secret_fields import mask, mask_result

#: Event field with a result whose secrets the event's ``result`` shows as ``***``: the result as stored, sealed.
SEALED_RESULT = "sealed_result"


class Status(StrEnum):
    SCHEDULED = "SCHEDULED"
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DEAD_LETTERED = "DEAD_LETTERED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.DEAD_LETTERED, Status.CANCELLED, Status.TIMED_OUT})

# The transition as a Lua function, shared by the one-task script below and other scripts that record a
# transition together with their own work. Arguments: status key, deadlines zset, callback outbox zset, status,
# time_s, attempt, ttl_s, channel, event JSON, force ('1'/'0'), task id, batch key prefix, {field, value, ...}.
# Returns 1 if accepted. The first terminal transition of a task (guarded by the field 'finalized', which replay
# leaves in place) drops its deadline, files its callbacks in the outbox and counts it in its batch, all in one
# atomic call: so callbacks fire exactly once whoever ends the task (worker, dead-lettering, watchdog, cancel).
# Every accepted transition of a run is counted for ``top`` (see meetingtasks.metrics.rollups); the script calls
# mt_rollup_flush() before it returns.
# A script recording many transitions passes ``bacc`` (a table) and calls mt_count_batches(bacc, batch key prefix,
# outbox) before it returns: each batch is then counted with one read and one write for all of its tasks.
TRANSITION_FUNCTION = ROLLUP_LUA + """
local terminal = {SUCCEEDED=true, FAILED=true, DEAD_LETTERED=true, CANCELLED=true, TIMED_OUT=true}
-- Counts finalised tasks in their batches: acc maps a batch id to {count=, by={status=count}, now=}. A batch
-- whose hash expired (no total) is left alone; its on_complete is filed once, when done reaches total.
local function mt_count_batches(acc, bprefix, outbox)
  for batch, a in pairs(acc) do
    local bk = bprefix .. batch
    local read, statuses = {'total', 'done', 'on_complete'}, {}
    for status in pairs(a.by) do statuses[#statuses + 1] = status; read[#read + 1] = 'n:' .. status end
    local b = redis.call('HMGET', bk, unpack(read))
    if b[1] then
      local before = tonumber(b[2]) or 0
      local done = before + a.count
      local write = {'done', done}
      for i, status in ipairs(statuses) do
        write[#write + 1] = 'n:' .. status
        write[#write + 1] = (tonumber(b[3 + i]) or 0) + a.by[status]
      end
      redis.call('HSET', bk, unpack(write))
      local total = tonumber(b[1]) or 0
      if b[3] and before < total and done >= total then redis.call('ZADD', outbox, a.now, 'b:' .. batch) end
    end
  end
end
local function transition(skey, deadlines, outbox, status, now, attempt, ttl, channel, event, force, id, bprefix,
                          fields, pre, bacc)
  -- One read for the guard, the history and what finalising needs; one write for all of it. ``pre`` (optional):
  -- {history line, event} of a transition that happened just before this one, written and published with it.
  local cur = redis.call('HMGET', skey, 'status', 'history', 'finalized', 'on_success', 'on_failure', 'batch',
                        'deadline', 'deliveries', 'type')
  if cur[1] and terminal[cur[1]] and force ~= '1' then return 0 end
  local finalize = terminal[status] and not cur[3]
  local callbacks, batch = cur[4] or cur[5], cur[6]
  local ty, wait_s, run_s = cur[9], nil, nil
  for i = 1, #fields, 2 do
    local name = fields[i]
    if name == 'on_success' or name == 'on_failure' then callbacks = true
    elseif name == 'batch' then batch = fields[i + 1]
    elseif name == 'type' then ty = fields[i + 1]
    elseif name == 'wait_s' then wait_s = fields[i + 1]
    elseif name == 'run_s' then run_s = fields[i + 1] end
  end
  local write = {'status', status, 'updated_at', now, 'attempt', attempt,
                 'history', (cur[2] or '') .. (pre and pre[1] or '') .. status .. ' ' .. now .. ' ' .. attempt .. '\\n'}
  if finalize then write[#write + 1] = 'finalized'; write[#write + 1] = now end
  -- The poison guard's delivery count starts again once a run has ended (retry, terminal, replay, cancel).
  if status ~= 'STARTED' and cur[8] and cur[8] ~= '0' then write[#write + 1] = 'deliveries'; write[#write + 1] = '0' end
  for i = 1, #fields do write[#write + 1] = fields[i] end
  redis.call('HSET', skey, unpack(write))
  redis.call('EXPIRE', skey, ttl)
  if pre then redis.call('PUBLISH', channel, pre[2]) end
  redis.call('PUBLISH', channel, event)
  if pre then mt_rollup(channel, now, ty, 'STARTED', wait_s) end
  -- Each start is a run; another status counts when the task enters it (a priority move re-enters its status).
  if status == 'STARTED' then mt_rollup(channel, now, ty, status, wait_s)
  elseif cur[1] ~= status then mt_rollup(channel, now, ty, status, run_s) end
  if terminal[status] then
    -- Only a task dispatched with a timeout has a deadline entry, and its record says so (or is gone).
    if cur[7] or not cur[1] then redis.call('ZREM', deadlines, id) end
    if finalize then
      if callbacks then redis.call('ZADD', outbox, now, 't:' .. id) end
      if batch then
        local acc = bacc or {}
        local a = acc[batch]
        if not a then a = {count=0, by={}}; acc[batch] = a end
        a.count = a.count + 1
        a.by[status] = (a.by[status] or 0) + 1
        a.now = now
        if not bacc then mt_count_batches(acc, bprefix, outbox) end
      end
    end
  end
  return 1
end
"""

# KEYS: status hash, deadlines zset, callback outbox zset.
# ARGV: status, time_s, attempt, ttl_s, channel, event JSON, force, task id, batch key prefix, field/value pairs...
_TRANSITION = LuaScript(
    TRANSITION_FUNCTION
    + "local accepted = transition(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],"
    " ARGV[7], ARGV[8], ARGV[9], {unpack(ARGV, 10)})\nmt_rollup_flush()\nreturn accepted"
)

# STARTED as a Lua function that the worker's fetch script embeds, to record the start atomically with the pop.
# The same rule as _TRANSITION for a non-terminal status: refused (returns 0) once the task is terminal. Goes after
# TRANSITION_FUNCTION (it counts the start with its rollup functions); the script calls mt_rollup_flush() at its end.
STARTED_LUA = """
local mt_terminal = {SUCCEEDED=true, FAILED=true, DEAD_LETTERED=true, CANCELLED=true, TIMED_OUT=true}
-- Returns started (1, or 0 when the task is terminal already), deliveries, cancelled (1/0). Counts the delivery
-- (field 'deliveries', the poison guard's count) in the same write, also for a terminal task (whose run is skipped).
local function mt_started(key, id, now, attempt, ttl, channel, task, service, priority, worker, wait)
  local cur = redis.call('HMGET', key, 'status', 'history', 'deliveries', 'cancel_requested_at')
  local deliveries = (tonumber(cur[3]) or 0) + 1
  local cancelled = cur[4] and 1 or 0
  if cur[1] and mt_terminal[cur[1]] then
    redis.call('HSET', key, 'deliveries', deliveries)
    return 0, deliveries, cancelled
  end
  local event = {op='status', id=id, status='STARTED', time=tonumber(now), attempt=attempt, type=task,
                 service=service, priority=priority}
  local write = {'status', 'STARTED', 'updated_at', now, 'attempt', attempt, 'type', task, 'service', service,
                 'priority', priority, 'worker', worker, 'deliveries', deliveries,
                 'history', (cur[2] or '') .. 'STARTED ' .. now .. ' ' .. attempt .. '\\n'}
  if wait then
    event.wait_s = wait
    write[#write + 1] = 'wait_s'
    write[#write + 1] = tostring(wait)
  end
  redis.call('HSET', key, unpack(write))
  -- A record the dispatcher wrote has its lifetime already; one a foreign producer's task starts gets one.
  if not cur[1] then redis.call('EXPIRE', key, ttl) end
  redis.call('PUBLISH', channel, cjson.encode(event))
  mt_rollup(channel, now, task, 'STARTED', wait)
  return 1, deliveries, cancelled
end
"""

# KEYS: status hash. ARGV: percent, message, time_s, ttl_s, channel, event JSON. Only a running task reports.
_PROGRESS = LuaScript(
    """
if redis.call('HGET', KEYS[1], 'status') ~= 'STARTED' then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[1], 'progress_message', ARGV[2], 'updated_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"""
)

_EVENT_FIELDS = frozenset(
    {"type", "service", "priority", "result", "error", "error_type", "progress", "progress_message", "wait_s",
     "run_s", "retry_in_s"}
)


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
        event: dict[str, Any] = {"op": "status", "id": task_id, "status": Status.STARTED.value, "time": now,
                                 "attempt": attempt, "progress": percent, "progress_message": message}
        for name, value in (fields or {}).items():
            if value is not None and name in _EVENT_FIELDS:
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
    event: dict[str, Any] = {"op": "status", "id": task_id, "status": status.value, "time": now, "attempt": attempt}
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
        elif name in _EVENT_FIELDS:
            event[name] = value
    return dumps(event), flat


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_record(task_id: str, raw: dict[Any, Any]) -> StatusRecord:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    history: list[tuple[Status, float, int]] = []
    for line in fields.get("history", "").splitlines():
        name, when, attempt = line.split(" ")
        history.append((Status(name), float(when), int(attempt)))
    return StatusRecord(
        id=task_id,
        status=Status(fields["status"]),
        attempt=int(fields.get("attempt", "0")),
        fields=fields,
        history=history,
    )
