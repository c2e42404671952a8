/**
 * The Lua script of `StreamRetention.apply`: one call per stream, atomic and one round trip, so that no consumer can
 * read, acknowledge or be created between the moment the safe id is computed and the trim.
 *
 * Per group, the oldest entry it still needs is its smallest pending id (`XPENDING` summary: delivered, not
 * acknowledged) when it has pending entries, else the first entry after its `last-delivered-id`; a group that has
 * neither has processed everything. The safe id is the smallest of those; `XTRIM MINID safe` removes only entries
 * below it. Stream ids are compared as decimal strings, not Lua numbers: a sequence can exceed a double's 2^53.
 *
 * The script has no `#!lua` shebang on purpose: Redis then refuses it under `maxmemory` only if it calls a command
 * flagged `denyoom`, and `XTRIM` is not one, so trimming still runs when Redis is full, which is when it matters.
 *
 * KEYS[1] is the stream. ARGV: maxLen ("" = none), onLag (`hold` | `trim`), the trim operator (`=` | `~`).
 *
 * Answers `{ trimmed, length, safeId | "", { name, lag (-1 = unknown), pending, bound | "", unread, holding }... }`.
 */
import * as Script from "./script.ts"

const source = `
local stream = KEYS[1]
local maxLen = tonumber(ARGV[1])
local onLag = ARGV[2]
local op = ARGV[3]

local function cmpNum(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end
local function cmpId(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  local c = cmpNum(am, bm)
  if c ~= 0 then return c end
  return cmpNum(as, bs)
end

if redis.call('EXISTS', stream) == 0 then return {0, 0, '', {}} end

local groups = {}
local safe = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local f = {}
  for j = 1, #g, 2 do f[g[j]] = g[j + 1] end
  local bound = nil
  if f['pending'] > 0 then
    bound = redis.call('XPENDING', stream, f['name'])[2]
  else
    local nxt = redis.call('XRANGE', stream, '(' .. f['last-delivered-id'], '+', 'COUNT', 1)
    if #nxt > 0 then bound = nxt[1][1] end
  end
  groups[#groups + 1] = { name = f['name'], lag = f['lag'], pending = f['pending'], bound = bound, unread = 0, holding = 0 }
  if bound and (safe == nil or cmpId(bound, safe) < 0) then safe = bound end
end

local trimmed = 0
if #groups > 0 then
  if safe then
    trimmed = redis.call('XTRIM', stream, 'MINID', op, safe)
  else
    -- every group has processed every entry
    trimmed = redis.call('XTRIM', stream, 'MAXLEN', op, 0)
  end
end

local len = redis.call('XLEN', stream)
if maxLen and len > maxLen then
  if #groups == 0 or not safe then
    trimmed = trimmed + redis.call('XTRIM', stream, 'MAXLEN', op, maxLen)
  elseif onLag == 'trim' then
    local ids = redis.call('XRANGE', stream, '-', '+', 'COUNT', len - maxLen)
    local n = redis.call('XTRIM', stream, 'MAXLEN', op, maxLen)
    trimmed = trimmed + n
    for _, g in ipairs(groups) do
      if g.bound and n > 0 then
        -- ids are sorted: find the first trimmed id at or after the group's bound
        local lo, hi = 1, n + 1
        while lo < hi do
          local mid = math.floor((lo + hi) / 2)
          if cmpId(ids[mid][1], g.bound) >= 0 then hi = mid else lo = mid + 1 end
        end
        g.unread = n - lo + 1
      end
    end
  else
    -- hold: count what is left below the safe id (approximate trimming keeps part of a node), so only the
    -- entries some group still needs decide whether the stream is past maxLen
    local below = 0
    if op == '~' then
      below = #redis.call('XRANGE', stream, '-', '(' .. safe, 'COUNT', len - maxLen)
    end
    if len - below > maxLen then
      for _, g in ipairs(groups) do
        if g.bound and cmpId(g.bound, safe) == 0 then g.holding = 1 end
      end
    end
  end
  len = redis.call('XLEN', stream)
end

local out = {}
for _, g in ipairs(groups) do
  out[#out + 1] = g.name
  out[#out + 1] = g.lag or -1
  out[#out + 1] = g.pending
  out[#out + 1] = g.bound or ''
  out[#out + 1] = g.unread
  out[#out + 1] = g.holding
end
return {trimmed, len, safe or '', out}
`

/** What the script saw and did for one group. */
export interface GroupReply {
  readonly name: string
  /** `XINFO GROUPS` lag before the trim; `undefined` when Redis could not compute it (after deletions). */
  readonly lag: number | undefined
  readonly pending: number
  /** The oldest entry the group still needs; `undefined` when it has processed everything. */
  readonly bound: string | undefined
  /** Entries the group had not processed that `maxLen` trimmed (`onLag: "trim"`). */
  readonly trimmedUnprocessed: number
  /** The group keeps the stream past `maxLen` (`onLag: "hold"`). */
  readonly holding: boolean
}

export interface RetentionReply {
  readonly trimmed: number
  readonly length: number
  readonly safeId: string | undefined
  readonly groups: ReadonlyArray<GroupReply>
}

export interface RetentionCall {
  readonly stream: string
  readonly maxLen: number | undefined
  readonly onLag: "hold" | "trim"
  readonly approximate: boolean
}

const text = (u: unknown): string => (typeof u === "string" ? u : Buffer.isBuffer(u) ? u.toString("utf8") : String(u))
const int = (u: unknown): number => (typeof u === "number" ? u : Number(text(u)))

const malformed = (reply: unknown): never => {
  throw new Error(`retention script: unexpected reply ${JSON.stringify(reply)}`)
}

/** @internal */
export const parse = (reply: unknown): RetentionReply => {
  if (!Array.isArray(reply) || reply.length !== 4 || !Array.isArray(reply[3])) return malformed(reply)
  const flat = reply[3] as Array<unknown>
  const groups: Array<GroupReply> = []
  for (let i = 0; i + 5 < flat.length; i += 6) {
    const lag = int(flat[i + 1])
    const bound = text(flat[i + 3])
    groups.push({
      name: text(flat[i]),
      lag: lag < 0 ? undefined : lag,
      pending: int(flat[i + 2]),
      bound: bound === "" ? undefined : bound,
      trimmedUnprocessed: int(flat[i + 4]),
      holding: int(flat[i + 5]) === 1
    })
  }
  const safeId = text(reply[2])
  return { trimmed: int(reply[0]), length: int(reply[1]), safeId: safeId === "" ? undefined : safeId, groups }
}

/** The typed descriptor. */
export const retention = Script.make({
  name: "redflow-retention",
  source,
  keys: (call: RetentionCall) => [call.stream],
  args: (call: RetentionCall) => [
    call.maxLen === undefined ? "" : call.maxLen,
    call.onLag,
    call.approximate ? "~" : "="
  ],
  parse
})
