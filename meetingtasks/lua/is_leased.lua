-- is_leased: whether a worker fetched the task and holds it unstarted: its message is in the unacked hash.
-- KEYS[1]  the service's unacked hash
-- ARGV[1]  task id
-- Returns 1 when found, else 0.
local unacked = KEYS[1]
local id = ARGV[1]

for _, v in ipairs(redis.call('HVALS', unacked)) do
  if string.find(v, id, 1, true) then
    local ok, entry = pcall(cjson.decode, v)
    if ok and type(entry) == 'table' and type(entry[1]) == 'table' and type(entry[1].headers) == 'table'
        and entry[1].headers.id == id then
      return 1
    end
  end
end
return 0
