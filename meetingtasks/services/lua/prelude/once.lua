-- mt_once(change): the once-only rule of every store change of the meeting services (see
-- meetingtasks.services.operation). If the running task recorded this change's outcome already, that outcome is
-- returned and nothing changes; else change() runs (it changes the domain keys and returns its outcome as a
-- string, usually cjson) and its outcome is recorded in the same call. A once-script is called with this head:
--   KEYS[1]  the task's operation hash (Keys.operation)
--   ARGV[1]  the outcome's field in it ('m:<change name>')
--   ARGV[2]  ttl_s: the operation hash's lifetime after this change
-- and its own keys from KEYS[2], its own arguments from ARGV[3].
local function mt_once(change)
  local operation, field, ttl_s = KEYS[1], ARGV[1], ARGV[2]
  local recorded = redis.call('HGET', operation, field)
  if recorded then return recorded end
  local outcome = change()
  redis.call('HSET', operation, field, outcome)
  redis.call('EXPIRE', operation, ttl_s)
  return outcome
end
