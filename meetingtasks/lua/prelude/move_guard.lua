-- mt_move_guard(key, status, attempt): the record guard of both moves (meetingtasks.store.moves): nil while the task is
-- still in the status and attempt the caller saw, else the move's refusal {'outcome', 'changed', 'status', s}.
local function mt_move_guard(key, status, attempt)
  local cur = redis.call('HMGET', key, 'status', 'attempt')
  if cur[1] ~= status or (cur[2] or '1') ~= attempt then return {'outcome', 'changed', 'status', cur[1] or ''} end
  return nil
end
