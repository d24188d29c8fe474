-- claim_and_enqueue: a dispatch with dedup_key: claims the key and runs the enqueue's commands in one call (see
-- meetingtasks.store.dedup). The loader's caller (dedup.claim_and_enqueue_script) puts before this file a table `embedded`: sha ->
-- function(KEYS, ARGV) for each script the commands may call (a Lua script cannot call EVAL).
-- KEYS[1]  the dedup key
-- ARGV[1]  task id
-- ARGV[2]  dedup_ttl_s
-- ARGV[3]  status key prefix
-- ARGV[4...]  the enqueue's commands, each as its argument count followed by its arguments (a script call as
--             EVALSHA of one of the embedded scripts)
-- Returns {'owner', id of the task owning the key, 'queued', 1 if this call queued it else 0}; an error reply
-- (nothing written) when the command list is malformed or names a script that is not embedded.
local dedup_key = KEYS[1]
local id, ttl, status_prefix = ARGV[1], ARGV[2], ARGV[3]
local FIRST_COMMAND = 4

local owner = redis.call('GET', dedup_key)
if owner and redis.call('EXISTS', status_prefix .. owner) == 1 then
  return {'owner', owner, 'queued', 0}
end
-- Every command is checked before the first write: a script error after it would leave half an enqueue.
local i = FIRST_COMMAND
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  if not n or n < 1 or i + n > #ARGV then return redis.error_reply('ERR dedup enqueue: bad command list') end
  if string.upper(ARGV[i + 1]) == 'EVALSHA' and not embedded[ARGV[i + 2]] then
    return redis.error_reply('ERR dedup enqueue: script ' .. ARGV[i + 2] .. ' is not embedded')
  end
  i = i + 1 + n
end
-- The claim is the first write: when Redis refuses writes (OOM) it fails and nothing is written at all.
redis.call('SET', dedup_key, id, 'EX', ttl)
i = FIRST_COMMAND
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  if string.upper(ARGV[i + 1]) == 'EVALSHA' then
    local nkeys = tonumber(ARGV[i + 3])
    embedded[ARGV[i + 2]]({unpack(ARGV, i + 4, i + 3 + nkeys)}, {unpack(ARGV, i + 4 + nkeys, i + n)})
  else
    redis.call(unpack(ARGV, i + 1, i + n))
  end
  i = i + 1 + n
end
return {'owner', id, 'queued', 1}
