"""The delayed set: tasks waiting for a due time (``delay``/``eta``, retry backoff).

Per service and priority, a sorted set of task ids scored by due time in epoch milliseconds, and per
service a hash of ``"<queue>\\n<message>"`` per id. The pump moves due entries onto their queues inside one
Lua call, so an entry is never lost and never moved twice, however many pumps race. A moved task whose status is still
SCHEDULED becomes QUEUED (published like any transition); a RETRYING task stays RETRYING until it starts.
No message ever waits inside a worker's memory, so a delay longer than the visibility timeout is safe.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import redis

from meetingtasks.keys import Keys
from meetingtasks.lua import LuaScript
from meetingtasks.priority import PRIORITY_ORDER, Priority, parse_queue
from meetingtasks.wake import WAKE_LUA

# KEYS: hash, then the zsets in priority order. ARGV: now_ms, limit, status key prefix, status channel, now_s,
# wake list, service, then the priority names in zset order. Critical entries move first; idle workers get a
# wake token per moved task. Per zset one batch: ZRANGEBYSCORE returns the lowest scores, ranks 0..n-1, so one
# ZREMRANGEBYRANK drops it; messages are read, pushed (in due order) and deleted with one call per 1,000
# (Lua's unpack limit). A SCHEDULED status becomes QUEUED, published with type/service/priority like every
# transition (the event is concatenated, cjson only for strings that need escaping: it runs 100,000 times a
# second); no EXPIRE is needed, the record's TTL already runs to status_ttl_s after the due time (schedule).
_PUMP = LuaScript(
    WAKE_LUA
    + """
local function each_chunk(items, fn)
  for i = 1, #items, 1000 do fn(unpack(items, i, math.min(i + 999, #items))) end
end
local function js(s)  -- a JSON string; cjson only when escaping is needed (ids and names rarely do)
  if not s then return 'null' end
  if string.find(s, '[%c"\\\\]') then return cjson.encode(s) end
  return '"' .. s .. '"'
end
local left = tonumber(ARGV[2])
local moved = 0
local woken = false
for k = 2, #KEYS do
  if left <= 0 then break end
  local ids = redis.call('ZRANGEBYSCORE', KEYS[k], '-inf', ARGV[1], 'LIMIT', 0, left)
  local n = #ids
  if n > 0 then
    -- service and priority are this call's and this zset's: no need to read them per task
    local event_tail = ',"service":' .. js(ARGV[7]) .. ',"priority":' .. js(ARGV[6 + k]) .. '}'
    left = left - n
    moved = moved + n
    local entries = {}
    each_chunk(ids, function(...)
      for _, e in ipairs(redis.call('HMGET', KEYS[1], ...)) do entries[#entries + 1] = e end
    end)
    local queues = {}
    for i = 1, n do
      local e = entries[i]
      if e then
        local nl = string.find(e, '\\n', 1, true)
        local q = string.sub(e, 1, nl - 1)
        queues[q] = queues[q] or {}
        table.insert(queues[q], string.sub(e, nl + 1))
        local id = ids[i]
        local sk = ARGV[3] .. id
        local st = redis.call('HMGET', sk, 'status', 'attempt', 'history', 'type')
        if st[1] == 'SCHEDULED' then
          local attempt = st[2] or '1'
          redis.call('HSET', sk, 'status', 'QUEUED', 'updated_at', ARGV[5],
            'history', (st[3] or '') .. 'QUEUED ' .. ARGV[5] .. ' ' .. attempt .. '\\n')
          redis.call('PUBLISH', ARGV[4], '{"op":"status","id":' .. js(id) .. ',"status":"QUEUED","time":' ..
            ARGV[5] .. ',"attempt":' .. attempt .. ',"type":' .. js(st[4]) .. event_tail)
        end
      end
    end
    for q, messages in pairs(queues) do
      -- The first token goes before the first message: Redis serves waiting workers in the order keys became
      -- ready, and an idle worker must be woken by the token, not handed a message by its BRPOP.
      if not woken then mt_wake(ARGV[6], 1); woken = true end
      each_chunk(messages, function(...) redis.call('LPUSH', q, ...) end)
    end
    each_chunk(ids, function(...) redis.call('HDEL', KEYS[1], ...) end)
    redis.call('ZREMRANGEBYRANK', KEYS[k], 0, n - 1)
  end
end
if moved > 1 then mt_wake(ARGV[6], moved - 1) end
return moved
"""
)

# KEYS: hash, then the zsets. ARGV: id. Returns 1 when the entry was there (and is now gone).
_REMOVE = LuaScript(
    """
local had = redis.call('HDEL', KEYS[1], ARGV[1])
for k = 2, #KEYS do redis.call('ZREM', KEYS[k], ARGV[1]) end
return had
"""
)


@dataclass(frozen=True)
class Waiting:
    """One entry of the delayed set: due at ``due_s`` (epoch s) onto ``queue``; ``None`` when its message is
    gone (moved or cancelled between the two reads)."""

    task_id: str
    due_s: float
    queue: str | None
    message: str | None


class DelayedSet:
    def __init__(self, keys: Keys, status_ttl_s: int) -> None:
        self.keys = keys
        self.status_ttl_s = status_ttl_s

    def schedule(
        self,
        client: redis.Redis | redis.client.Pipeline,
        service: str,
        task_id: str,
        queue: str,
        message: bytes,
        due_s: float,
    ) -> None:
        """Hold ``message`` until ``due_s`` (epoch seconds), then the pump pushes it onto ``queue``."""
        parsed = parse_queue(queue)
        if parsed is None or parsed[0] != service:
            raise ValueError(f"{queue!r} is not a queue of service {service!r}")
        entry = queue.encode() + b"\n" + message
        client.hset(self.keys.delayed_messages(service), task_id, entry)
        # Rounded up to the millisecond: the pump compares whole milliseconds and must never move it early.
        client.zadd(self.keys.delayed(service, parsed[1].value), {task_id: math.ceil(due_s * 1000)})
        # A delay may outlast status_ttl_s: keep the status record (and so cancel and status) alive until
        # status_ttl_s after the due time. Queued after the SCHEDULED transition by the dispatcher.
        client.expire(self.keys.status(task_id), max(0, int(due_s - time.time())) + self.status_ttl_s)

    def _keys(self, service: str) -> list[str]:
        return [self.keys.delayed_messages(service), *(self.keys.delayed(service, p.value) for p in PRIORITY_ORDER)]

    def pump(self, client: redis.Redis, service: str, *, limit: int = 1000, now_s: float | None = None) -> int:
        """Move up to ``limit`` due entries onto their queues; returns how many moved."""
        now_s = time.time() if now_s is None else now_s
        moved = _PUMP(
            client,
            self._keys(service),
            [int(now_s * 1000), limit, self.keys.status(""), self.keys.status_channel, repr(now_s),
             self.keys.wake(service), service, *(p.value for p in PRIORITY_ORDER)],
        )
        return int(moved)

    def pump_all(self, client: redis.Redis, service: str, *, batch: int = 1000) -> int:
        """Pump until nothing due is left."""
        total = 0
        while True:
            moved = self.pump(client, service, limit=batch)
            total += moved
            if moved < batch:
                return total

    def remove(self, client: redis.Redis, service: str, task_id: str) -> bool:
        """Take a waiting task out of the set; ``True`` if it was there."""
        return bool(_REMOVE(client, self._keys(service), [task_id]))

    def queue_remove(self, pipe: redis.client.Pipeline, service: str, task_id: str) -> None:
        """:meth:`remove` inside a pipeline or transaction; its reply (1 if it was there) lands in the results."""
        _REMOVE.queue(pipe, self._keys(service), [task_id])

    def entry(self, client: redis.Redis, service: str, task_id: str) -> tuple[str, bytes] | None:
        """``(queue, message)`` of a waiting task, or ``None`` when it is not waiting."""
        raw = client.hget(self.keys.delayed_messages(service), task_id)
        if raw is None:
            return None
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        queue, _, message = data.partition(b"\n")
        return queue.decode(), message

    def counts(self, client: redis.Redis, service: str) -> dict[Priority, int]:
        """Waiting entries per priority."""
        with client.pipeline(transaction=False) as pipe:
            for prio in PRIORITY_ORDER:
                pipe.zcard(self.keys.delayed(service, prio.value))
            return {prio: int(n) for prio, n in zip(PRIORITY_ORDER, pipe.execute(), strict=True)}

    def count(self, client: redis.Redis, service: str) -> int:
        return sum(self.counts(client, service).values())

    def page(self, client: redis.Redis, service: str, priority: Priority, offset: int = 0,
             limit: int = 50) -> list[Waiting]:
        """The waiting tasks ranked ``offset`` .. ``offset + limit`` by due time: a rank lookup in the sorted
        set, O(log N + limit) at any depth."""
        entries: list[Any] = list(client.zrange(self.keys.delayed(service, priority.value), offset,
                                                offset + limit - 1, withscores=True))
        if not entries:
            return []
        ids = [_text(e[0]) for e in entries]
        raws = client.hmget(self.keys.delayed_messages(service), ids)
        out = []
        for task_id, (_, score), raw in zip(ids, entries, raws, strict=True):
            queue, _, message = ("" if raw is None else _text(raw)).partition("\n")
            out.append(Waiting(task_id, float(score) / 1000, queue or None, message or None))
        return out

    def make_due(self, client: redis.Redis, service: str, task_id: str, now_s: float | None = None) -> bool:
        """Bring a waiting task's due time forward to now (the next pump moves it); ``False`` if not waiting."""
        now_ms = int((time.time() if now_s is None else now_s) * 1000)
        with client.pipeline(transaction=True) as pipe:
            for prio in PRIORITY_ORDER:
                pipe.zadd(self.keys.delayed(service, prio.value), {task_id: now_ms}, xx=True, ch=True)
            return any(int(n) for n in pipe.execute())

    def due_time_s(self, client: redis.Redis, service: str, task_id: str) -> float | None:
        with client.pipeline(transaction=False) as pipe:
            for prio in PRIORITY_ORDER:
                pipe.zscore(self.keys.delayed(service, prio.value), task_id)
            scores = [s for s in pipe.execute() if s is not None]
        return scores[0] / 1000 if scores else None


def _text(raw: bytes | str) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else raw
