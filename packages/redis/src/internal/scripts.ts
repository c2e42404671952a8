/**
 * The Lua script of the write path. One call carries all of a batch's entries for one stream.
 *
 * Why a script: it is all or nothing under OOM (declared with `#!lua`, Redis checks memory once before it runs,
 * REDIS-FACTS.md), where a plain pipeline half-writes a batch; one EVALSHA with 500 entries costs the client one
 * command instead of 500; and it keeps the stream's high-water mark with the entries, atomically.
 *
 * The high-water mark (a hash in the stream's hash slot, one field per pipeline) is the highest position written
 * to the stream. It serves two purposes:
 * - `skip` (exactly-once): entries at or below the mark are skipped, so a retry after an unknown outcome, or a replay
 *   after a restart, never writes an entry twice;
 * - `expected` (both guarantees): the mark the sink expects to find, because an earlier batch still in flight will
 *   have left it. If the mark differs, that earlier batch did not apply (or not yet): this call writes nothing and
 *   answers `written = -1`, and the sink sends it again once the earlier batch is through. That is what makes two
 *   batches in flight safe: a later batch never lands before an earlier one of the same stream.
 *
 * ARGV: 1 pipeline (the mark's field), 2 trim strategy ("" | "MAXLEN" | "MINID"), 3 trim operator ("~" | "="),
 * 4 trim threshold, 5 expected mark ("" = no check), 6 skip ("1" = exactly-once); then per entry, ENTRY_ARITY
 * values: position, id, op, table, key ("" when none), event, error ("" when none; set on dead-letter entries).
 * KEYS: 1 the stream, 2 the high-water hash (same hash slot).
 *
 * Returns { written, skipped, lastId }; written is -1 when the expected mark did not match.
 */
import { createHash } from "node:crypto"

export const HEADER_ARITY = 6
export const ENTRY_ARITY = 7

export const SOURCE = `#!lua
local stream = KEYS[1]
local trim, op, threshold = ARGV[2], ARGV[3], ARGV[4]
local expected, skip = ARGV[5], ARGV[6] == "1"
local mark = redis.call("HGET", KEYS[2], ARGV[1])
if expected ~= "" and mark ~= expected then
  return { -1, 0, "" }
end
local before = mark
local xadd
if trim == "" then
  xadd = function(...) return redis.call("XADD", stream, "*", ...) end
else
  xadd = function(...) return redis.call("XADD", stream, trim, op, threshold, "*", ...) end
end
local written, skipped, lastId = 0, 0, ""
for i = ${HEADER_ARITY + 1}, #ARGV, ${ENTRY_ARITY} do
  local position = ARGV[i]
  -- Positions are equal-width lowercase hex: longer, or as long and bytewise greater, is later.
  local later = not mark or #position > #mark or (#position == #mark and position > mark)
  if skip and not later then
    skipped = skipped + 1
  else
    local key, err = ARGV[i + 4], ARGV[i + 6]
    if err ~= "" then
      lastId = xadd("event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3], "error", err)
    elseif key ~= "" then
      lastId = xadd("event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3], "key", key)
    else
      lastId = xadd("event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3])
    end
    written = written + 1
    if later then mark = position end
  end
end
if mark ~= before then
  redis.call("HSET", KEYS[2], ARGV[1], mark)
end
return { written, skipped, lastId }
`

export interface Script {
  readonly source: string
  readonly sha: string
}

export const write: Script = { source: SOURCE, sha: createHash("sha1").update(SOURCE).digest("hex") }
