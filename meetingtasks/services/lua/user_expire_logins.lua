-- user_expire_logins: removes up to a limit of expired login sessions, once per task.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the logins zset (Keys.logins: token digest scored by expiry)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  time_s: logins expiring up to it are removed
-- ARGV[4]  the most logins to remove
-- ARGV[5]  the login key prefix (Keys.login(''))
-- ARGV[6]  the user-logins key prefix (Keys.user_logins(''))
-- Returns JSON {expired = logins removed, users = [ids of users left without a login], n = #users}.
-- prelude: once
local logins = KEYS[2]
local now, limit, login_prefix, user_logins_prefix = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]

return mt_once(function()
  local digests = redis.call('ZRANGEBYSCORE', logins, '-inf', now, 'LIMIT', 0, limit)
  local users = {}
  for _, digest in ipairs(digests) do
    local login_key = login_prefix .. digest
    local user_id = redis.call('HGET', login_key, 'user_id')
    redis.call('DEL', login_key)
    redis.call('ZREM', logins, digest)
    if user_id then
      local user_logins = user_logins_prefix .. user_id
      redis.call('SREM', user_logins, digest)
      if redis.call('SCARD', user_logins) == 0 then users[#users + 1] = user_id end
    end
  end
  return cjson.encode({expired = #digests, users = users, n = #users})
end)
