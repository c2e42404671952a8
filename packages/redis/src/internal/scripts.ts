/**
 * The Lua scripts of the write path. One script call carries all of a batch's entries for one stream.
 *
 * Why scripts for both guarantees: a script is all or nothing under OOM (declared with `#!lua`, Redis checks
 * memory once before it runs, REDIS-FACTS.md), where a plain pipeline half-writes a batch; and one EVALSHA with
 * 500 entries costs the client one command instead of 500, which is faster than the pipelined XADD loop.
 *
 * ARGV layout, shared by both scripts:
 *   1 sink id (the field of the high-water hash)   2 trim strategy: "" | "MAXLEN" | "MINID"
 *   3 trim operator: "~" | "="                       4 trim threshold
 *   then per entry, ENTRY_ARITY values: position, id, op, table, key ("" when none), event,
 *   error ("" when none; set on dead-letter entries)
 *
 * KEYS: 1 the stream; 2 (exactly-once) the high-water hash, in the stream's hash slot.
 *
 * Both return { written, skipped, lastId }.
 */
import { createHash } from "node:crypto"

export const ENTRY_ARITY = 7
export const HEADER_ARITY = 4

const xaddEntry = `
    local xargs = { stream }
    local n = 1
    if trim ~= "" then
      xargs[n + 1] = trim; xargs[n + 2] = op; xargs[n + 3] = threshold; n = n + 3
    end
    xargs[n + 1] = "*"
    xargs[n + 2] = "event"; xargs[n + 3] = ARGV[i + 5]
    xargs[n + 4] = "id"; xargs[n + 5] = ARGV[i + 1]
    xargs[n + 6] = "op"; xargs[n + 7] = ARGV[i + 2]
    xargs[n + 8] = "table"; xargs[n + 9] = ARGV[i + 3]
    n = n + 9
    if ARGV[i + 4] ~= "" then
      xargs[n + 1] = "key"; xargs[n + 2] = ARGV[i + 4]; n = n + 2
    end
    if ARGV[i + 6] ~= "" then
      xargs[n + 1] = "error"; xargs[n + 2] = ARGV[i + 6]
    end
    lastId = redis.call("XADD", unpack(xargs))
    written = written + 1`

const prologue = `#!lua
local stream = KEYS[1]
local trim = ARGV[2]
local op = ARGV[3]
local threshold = ARGV[4]
local written = 0
local skipped = 0
local lastId = ""
`

/** At-least-once: XADD every entry, atomically. */
export const AT_LEAST_ONCE = `${prologue}
for i = ${HEADER_ARITY + 1}, #ARGV, ${ENTRY_ARITY} do${xaddEntry}
end
return { written, skipped, lastId }
`

/**
 * Exactly-once: skip entries at or below this sink's high-water position for the stream, XADD the rest and move
 * the mark, atomically. Positions are equal-width lowercase hex, so comparing length then bytes is their order.
 */
export const EXACTLY_ONCE = `${prologue}
local mark = redis.call("HGET", KEYS[2], ARGV[1])
for i = ${HEADER_ARITY + 1}, #ARGV, ${ENTRY_ARITY} do
  local position = ARGV[i]
  if mark and (#position < #mark or (#position == #mark and position <= mark)) then
    skipped = skipped + 1
  else${xaddEntry}
    mark = position
  end
end
if written > 0 then
  redis.call("HSET", KEYS[2], ARGV[1], mark)
end
return { written, skipped, lastId }
`

export interface Script {
  readonly source: string
  readonly sha: string
}

const script = (source: string): Script => ({ source, sha: createHash("sha1").update(source).digest("hex") })

export const atLeastOnce = script(AT_LEAST_ONCE)
export const exactlyOnce = script(EXACTLY_ONCE)
