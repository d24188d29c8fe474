-- count_by: counts a hash's values by the first capture of a Lua pattern, server-side (no values cross the wire).
-- KEYS[1]  the hash
-- ARGV[1]  the Lua pattern; values it does not match are not counted
-- Returns a flat [capture, count, ...] list (a map; the caller reads it as pairs).
local hash = KEYS[1]
local pattern = ARGV[1]

local counts = {}
for _, value in ipairs(redis.call('HVALS', hash)) do
  local captured = string.match(value, pattern)
  if captured then counts[captured] = (counts[captured] or 0) + 1 end
end
local out = {}
for name, n in pairs(counts) do table.insert(out, name); table.insert(out, n) end
return out
