#!lua
local stream, marks = KEYS[1], KEYS[2]
local field, trim, op, threshold = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local expected, skip, width, mode = ARGV[5], ARGV[6] == "1", tonumber(ARGV[7]), ARGV[8]
local traceparent, refTtl = ARGV[9], ARGV[10]
local arity, refAt = 7, 7
if traceparent ~= "" then arity, refAt = 8, 8 end
if refTtl ~= "" then arity = arity + 1 end

-- First of all: a writer whose lease was taken over writes nothing. Its fence key is the last of KEYS.
local token, refsEnd = ARGV[11], #KEYS
if token ~= "" then
  refsEnd = #KEYS - 1
do
  local fence = tonumber(redis.call('GET', KEYS[#KEYS]) or '0')
  if fence > tonumber(token) then
    return redis.error_reply('FENCED ' .. fence)
  end
end
end

-- Before any write: may this user run every command of the script on these keys? (Redis >= 7.0)
if redis.acl_check_cmd then
  local needs = { { "HGET", marks, field }, { "HSET", marks, field, "0" }, { "XADD", stream, "*", "event", "" } }
  for _, command in ipairs(needs) do
    if not redis.acl_check_cmd(unpack(command)) then
      return redis.error_reply("NOPERM this user has no permissions to run the '" .. string.lower(command[1]) ..
        "' command on key '" .. command[2] .. "' (the sink needs HGET and HSET on " .. marks ..
        " and XADD on " .. stream .. ")")
    end
  end
  for k = 3, refsEnd do
    if not redis.acl_check_cmd("SET", KEYS[k], "", "PX", "1") then
      return redis.error_reply("NOPERM this user has no permissions to run the 'set' command on key '" .. KEYS[k] ..
        "' (largeEvents: reference stores an event's body there, in the hash slot of " .. stream .. ")")
    end
  end
end

local raw = redis.pcall("HGET", marks, field)
if type(raw) == "table" and raw.err then
  return redis.error_reply(raw.err .. " (HGET of the high-water mark " .. marks .. ", which must be a hash)")
end
local mark, markId = nil, nil
if raw then
  mark, markId = string.match(raw, "^([0-9a-f]+) (%d+%-%d+)$")
  if not mark or (width > 0 and #mark ~= width) then
    return { -2, 0, "", raw }
  end
end
if mode == "check" then
  return { 0, 0, markId or "", mark or "" }
end
if (mark or "") ~= expected then
  return { -1, 0, "", mark or "" }
end

local added, stored = {}, {}
-- Undoes this call's entries (and the bodies it stored that were not there before), so that a failed call leaves
-- the stream as it found it.
local function fail(err, command, key)
  for _, id in ipairs(added) do redis.pcall("XDEL", stream, id) end
  for _, ref in ipairs(stored) do redis.pcall("DEL", ref) end
  return redis.error_reply(err .. " (" .. command .. " on " .. key .. "; " .. #added ..
    " entries of this call removed again, nothing written)")
end
local xadd
if trim == "" then
  xadd = function(...) return redis.pcall("XADD", stream, "*", ...) end
else
  xadd = function(...) return redis.pcall("XADD", stream, trim, op, threshold, "*", ...) end
end
local before = mark
local written, skipped, lastId = 0, 0, ""
for i = 12, #ARGV, arity do
  local position = ARGV[i]
  -- Positions are equal-width lowercase hex: longer, or as long and bytewise greater, is later.
  local later = not mark or #position > #mark or (#position == #mark and position > mark)
  if skip and not later then
    skipped = skipped + 1
  else
    local key, err = ARGV[i + 4], ARGV[i + 6]
    local ref = ""
    if refTtl ~= "" then ref = ARGV[i + refAt] end
    local id
    if ref ~= "" then
      -- By reference: the body under its own key, the entry pointing to it. A key already there holds the same
      -- event's body (a replay sets it again), so a failed call leaves it.
      local existed = redis.pcall("EXISTS", ref)
      local set = redis.pcall("SET", ref, ARGV[i + 5], "PX", refTtl)
      if type(set) == "table" and set.err then return fail(set.err, "SET", ref) end
      if existed == 0 then stored[#stored + 1] = ref end
      local fields = { "ref", ref, "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3] }
      if key ~= "" then fields[#fields + 1] = "key"; fields[#fields + 1] = key end
      if traceparent ~= "" then
        local tp = ARGV[i + 7]
        if tp == "" then tp = traceparent end
        fields[#fields + 1] = "traceparent"; fields[#fields + 1] = tp
      end
      id = xadd(unpack(fields))
    elseif traceparent == "" then
      if err ~= "" then
        id = xadd("event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3], "error", err)
      elseif key ~= "" then
        id = xadd("event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3], "key", key)
      else
        id = xadd("event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3])
      end
    else
      local tp = ARGV[i + 7]
      if tp == "" then tp = traceparent end
      if err ~= "" then
        id = xadd("event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3], "error", err,
          "traceparent", tp)
      elseif key ~= "" then
        id = xadd("event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3], "key", key,
          "traceparent", tp)
      else
        id = xadd("event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3],
          "traceparent", tp)
      end
    end
    if type(id) == "table" and id.err then return fail(id.err, "XADD", stream) end
    added[#added + 1] = id
    lastId = id
    written = written + 1
    if later then mark, markId = position, id end
  end
end
if mark ~= before then
  local set = redis.pcall("HSET", marks, field, mark .. " " .. markId)
  if type(set) == "table" and set.err then return fail(set.err, "HSET", marks) end
end
return { written, skipped, lastId, mark or "", added[1] or "" }

