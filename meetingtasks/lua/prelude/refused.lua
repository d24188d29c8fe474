-- The lease of a message the fetch refuses (see fetch), kept until the worker files its dead letter, so that a
-- worker dying in between leaves it to the restore sweep instead of losing it. Its own format, not kombu's
-- [message, exchange, routing key]: the sweep files such an entry as a dead letter and never restores it (what a
-- parser other than cjson makes of the bytes could pass the fetch's checks next time). Read by
-- meetingtasks.worker.quarantine (REFUSED_TAG_PREFIX, refused_entry_parts).
-- mt_refused_tag(unacked, worker, now, n): a tag no entry of the unacked hash has (n: the message's place in
-- this fetch, which keeps the tags of one call apart).
local function mt_refused_tag(unacked, worker, now, n)
  local tag = 'mt-refused:' .. worker .. ':' .. now .. ':' .. n
  while redis.call('HEXISTS', unacked, tag) == 1 do tag = tag .. '+' end
  return tag
end
-- mt_refused_entry(q, m, why): the queue and the reason as a JSON object on the first line (cjson escapes any
-- newline inside them), then the message's bytes as they were.
local function mt_refused_entry(q, m, why)
  return cjson.encode({queue = q, why = why}) .. '\n' .. m
end
