-- exists_each: whether each key exists, in one call that WATCH-based callers can run before MULTI.
-- KEYS[1...]  the keys
-- ARGV: none
-- Returns a list of 1/0, one per key, in order.
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('EXISTS', key) end
return out
