-- user_register: a new user under a name no one holds yet, once per task.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the username key (Keys.username)
-- KEYS[3]  the user hash (Keys.user)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  the user id
-- ARGV[4...]  the user's fields, as field, value, ...
-- Returns JSON {created = user id}, or {taken = id of the user holding the name}.
-- prelude: once
local username_key, user_key = KEYS[2], KEYS[3]
local user_id = ARGV[3]
local FIRST_FIELD = 4

return mt_once(function()
  local owner = redis.call('GET', username_key)
  if owner then return cjson.encode({taken = owner}) end
  redis.call('SET', username_key, user_id)
  redis.call('HSET', user_key, unpack(ARGV, FIRST_FIELD))
  return cjson.encode({created = user_id})
end)
