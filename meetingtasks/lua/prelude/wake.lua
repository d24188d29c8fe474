-- mt_wake(key, n): pushes up to n wake tokens (at most MT_WAKE_TOKENS_MAX) onto a service's wake list, for
-- scripts that queue work (see meetingtasks.store.wake).
local function mt_wake(key, n)
  n = math.min(n, MT_WAKE_TOKENS_MAX)
  for i = 1, n do redis.call('LPUSH', key, 1) end
  if n > 0 then redis.call('LTRIM', key, 0, MT_WAKE_TOKENS_MAX - 1) end
end
