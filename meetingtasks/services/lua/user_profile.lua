-- user_profile: a profile update of an existing user, once per task; only fields whose value differs are written.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the user hash (Keys.user)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  time_s (written as updated_at when a field changed)
-- ARGV[4...]  the fields to set, as field, value, ...
-- Returns JSON {changed = [field, ...], n = how many}, or {unknown = true} for no such user.
-- prelude: once
local user_key = KEYS[2]
local now = ARGV[3]
local FIRST_FIELD = 4

return mt_once(function()
  if redis.call('EXISTS', user_key) == 0 then return cjson.encode({unknown = true}) end
  local changed = {}
  for i = FIRST_FIELD, #ARGV, 2 do
    if redis.call('HGET', user_key, ARGV[i]) ~= ARGV[i + 1] then
      changed[#changed + 1] = ARGV[i]
      redis.call('HSET', user_key, ARGV[i], ARGV[i + 1])
    end
  end
  if #changed > 0 then redis.call('HSET', user_key, 'updated_at', now) end
  return cjson.encode({changed = changed, n = #changed})
end)
