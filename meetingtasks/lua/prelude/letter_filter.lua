-- The dead-letter listing's filter (meetingtasks.store.deadletter.LetterFilter): needles are the JSON text of a field as
-- the record spells it ('"reason":"x"'); a letter is a candidate when its record holds every one (the caller then
-- applies the exact test). mt_needles(args, first): the non-empty needles among args[first...];
-- mt_holds_all(record, needles): whether the record holds every needle.
local function mt_needles(args, first)
  local needles = {}
  for i = first, #args do if args[i] ~= '' then needles[#needles + 1] = args[i] end end
  return needles
end
local function mt_holds_all(record, needles)
  for _, needle in ipairs(needles) do
    if not string.find(record, needle, 1, true) then return false end
  end
  return true
end
