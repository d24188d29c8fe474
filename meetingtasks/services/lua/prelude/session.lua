-- The signaling session rules shared by its scripts.
-- mt_party(session_key, user): whether user is a party of the session (its user or its peer). Only a party may keep
-- a session alive, close it, offer on it again or add candidates to it: over the gateway the user is the token's
-- subject, so a client cannot act on another user's session.
-- mt_party_of_open(session_key, user): the session's state when user is a party of it and it is open, else nil and
-- why not ('unknown', 'closed', 'not_party').
-- mt_seen(session_key, alive, session_id, now): a sign of life of the session (its last_seen, its score in the open
-- sessions zset, which the beat sweep reads).
local function mt_party(session_key, user)
  return user == redis.call('HGET', session_key, 'user_id') or user == redis.call('HGET', session_key, 'peer')
end
local function mt_party_of_open(session_key, user)
  local state = redis.call('HGET', session_key, 'state')
  if not state then return nil, 'unknown' end
  if state == 'closed' then return nil, 'closed' end
  if not mt_party(session_key, user) then return nil, 'not_party' end
  return state
end
local function mt_seen(session_key, alive, session_id, now)
  redis.call('HSET', session_key, 'last_seen', now)
  redis.call('ZADD', alive, now, session_id)
end
