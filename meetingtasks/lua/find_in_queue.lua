-- find_in_queue: finds a task's message in a queue, newest first, one slice of entries per call (see
-- meetingtasks.store.moves: a slice bounds how long Redis is held).
-- KEYS[1]  the queue
-- ARGV[1]  task id
-- ARGV[2]  first index to read (0: the newest entry)
-- ARGV[3]  how many entries to read
-- Returns {'index', i, 'message', m} when found, else {'read', n}: how many entries it read.
local queue = KEYS[1]
local id, first, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local items = redis.call('LRANGE', queue, first, first + count - 1)
for i, m in ipairs(items) do
  -- The id appears in the message; only a message holding it is decoded to be sure it is the task's own.
  if string.find(m, id, 1, true) then
    local ok, env = pcall(cjson.decode, m)
    if ok and type(env) == 'table' and type(env.headers) == 'table' and env.headers.id == id then
      return {'index', first + i - 1, 'message', m}
    end
  end
end
return {'read', #items}
