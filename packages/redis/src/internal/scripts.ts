/**
 * The Lua script of the write path. One call carries all of a batch's entries for one stream.
 *
 * Why a script: it is all or nothing under OOM (declared with `#!lua`, Redis checks memory once before it runs),
 * where a plain pipeline half-writes a batch; one EVALSHA with 500 entries costs the client one command instead of
 * 500; and it keeps the stream's high-water mark with the entries, atomically.
 *
 * A script does not roll back: a command that fails half-way leaves the writes before it in place. So the script
 * does everything that can fail before its first write (the user's ACL for each command and key, the mark's type and
 * form, the expected mark), and if an XADD or the final HSET still fails (a stream whose last possible id is used up),
 * it deletes the entries it added in this call before it returns the error. A failed call writes nothing. It keeps
 * only the first id it added for that: the call runs atomically and ids only grow, so its entries are those from that
 * id on, read back with XRANGE on failure (a list of every id would cost each entry a table slot on the way).
 *
 * The server's cost is per entry: the entry's values made into ARGV (about half of it), one `redis.pcall("XADD", …)`
 * with its arguments in place (the loop is in the source twice, with and without the trim arguments, rather than
 * behind a wrapper function; ARGV and `redis.pcall` are locals), and two string comparisons for the mark. In all
 * about 2.3 times the instructions of a native pipelined XADD of the same entry (bench/RESULTS.md, "Issue 16: the
 * write script").
 *
 * The high-water mark (a hash in the stream's hash slot, one field per pipeline) holds `<position> <entry id>`: the
 * highest position written to the stream and the id of the entry that carries it, so that a mark can be checked
 * against the stream (see `internal/sink/marks.ts`, "first contact"). It serves three purposes:
 * - `skip` (exactly-once): entries at or below the mark are skipped, so a retry after an unknown outcome, or a replay
 *   after a restart, never writes an entry twice;
 * - `expected` (both guarantees): the mark the sink expects to find, because its own last write to the stream left it
 *   (or an earlier write still in flight will have). A different mark means that earlier write has not applied yet,
 *   that this very write already applied (a retry after a lost reply), or that the mark moved under the sink (Redis
 *   lost acknowledged writes, or another writer): the call writes nothing, answers `written = -1` with the mark it
 *   found, and the sink tells the cases apart.
 * - a mark that is not `<position of the pipeline's width> <entry id>` answers `written = -2` with the raw value:
 *   corrupt, never a reason to skip.
 *
 * With a pipeline lease (`PipelineLease`), the call also carries the lease's fencing token (`ARGV[11]`) and the fence
 * key (the last of KEYS): before anything else, a token below the fence's answers `FENCED <current>` and writes nothing, so a
 * writer that was paused past its lease cannot interleave its batch with the new holder's. Without a lease the token
 * is "" and there is no third key.
 *
 * KEYS are the stream and its high-water hash (same hash slot); ARGV is the call's {@link WriteHeader}, then per
 * entry {@link ENTRY_ARITY} values: position, id, op, table, key ("" when none), event, error ("" when none; set on
 * dead-letter entries); with tracing on (the header's `traceparent` set), a {@link TRACED_ENTRY_ARITY}th: the
 * event's own `traceparent`, or "" for the header's (the batch write span). Each entry then gets a `traceparent`
 * field; with tracing off the entries and their arguments are as they were without it. With references on (the
 * header's `refTtl` set, `largeEvents: "reference"`), one more: the key to store the event's body under ("" to write
 * it inline). Such an entry's body is `SET key body PX refTtl` and the entry carries `ref` = key instead of `event`;
 * the keys are KEYS[3…] (the stream's hash slot). {@link write} is the typed descriptor: it lays a
 * {@link WriteCall} out in that order.
 *
 * Answers a {@link WriteReply}. In `check` mode the script checks permissions and reads the mark (`lastId` is then
 * the mark's entry id), and writes nothing.
 */
import { fenceCheck } from "../PipelineLease.ts"
import * as Commands from "./commands.ts"
import * as Script from "./script.ts"

/**
 * The fixed part of a call's ARGV: the Lua source reads it as `ARGV[1]` … `ARGV[11]`, in the order of
 * {@link headerArgs}.
 */
export interface WriteHeader {
  /** The mark's field: the pipeline name. */
  readonly pipeline: string
  readonly trimStrategy: "" | "MAXLEN" | "MINID"
  readonly trimOperator: "~" | "="
  readonly trimThreshold: string
  /** The mark's position the sink expects to find; "" = no mark. Changed when the sink writes on past a loss. */
  expected: string
  /** Exactly-once: skip entries at or below the mark. */
  readonly skip: boolean
  /** Width of the pipeline's positions: a mark of another width is malformed (0: any width). */
  readonly width: number
  /** "" = write; "check" = check permissions and read the mark only. */
  readonly mode: "" | "check"
  /**
   * The batch write span's `traceparent`, for the entries without one of their own; "" = tracing off (entries carry
   * {@link ENTRY_ARITY} values and get no `traceparent` field). Set once the write's span exists.
   */
  traceparent: string
  /** The TTL (ms) of bodies stored by reference; "" = this sink stores none (entries carry no key argument). */
  readonly refTtl: string
  /** The pipeline lease's fencing token; "" = no lease (no fence key in KEYS). */
  readonly token: string
}

const headerArgs = (h: WriteHeader): Array<string> => [
  h.pipeline,
  h.trimStrategy,
  h.trimOperator,
  h.trimThreshold,
  h.expected,
  h.skip ? "1" : "",
  String(h.width),
  h.mode,
  h.traceparent,
  h.refTtl,
  h.token
]

const HEADER_ARITY = 11
/** Values per entry in ARGV after the header. */
export const ENTRY_ARITY = 7
/** Values per entry when tracing is on: the event's own `traceparent` ("" for the batch's) is the last. */
export const TRACED_ENTRY_ARITY = 8

/** One call of the script: one stream's share of a batch, or a check of the stream's mark (no entries). */
export interface WriteCall {
  readonly stream: string
  /** The stream's high-water hash. */
  readonly markKey: string
  /** The pipeline lease's fence key, when the header carries a token. */
  readonly fenceKey?: string
  readonly header: WriteHeader
  /**
   * One part per entry: its {@link ENTRY_ARITY} values ({@link TRACED_ENTRY_ARITY} with tracing on, one more with
   * references on) in RESP bytes (`Commands.frameEntry`). Emptied once the call is written, so the encoded events
   * are not held longer than the write needs them (see `commands.ts`).
   */
  readonly entries: Array<Buffer>
  /** How many values the parts of `entries` hold in all. */
  readonly values: number
  /** The keys of the bodies this call stores by reference (declared as KEYS, after the stream's and its mark's). */
  readonly refs: ReadonlyArray<string>
}

/** `written` when the mark is not the expected one; `mark` is then the mark found. */
export const MARK_MISMATCH = -1
/** `written` when the mark is malformed; `mark` is then its raw value. */
export const MARK_MALFORMED = -2

/** What a call answers. */
export interface WriteReply {
  /** Entries appended, or {@link MARK_MISMATCH} / {@link MARK_MALFORMED} (nothing written). */
  readonly written: number
  /** Entries skipped as at or below the mark (exactly-once). */
  readonly skipped: number
  /** Id of the last entry appended ("" when none); in `check` mode, the id the mark names. */
  readonly lastId: string
  /** The position part of the mark after the call ("" when none), or the raw value when it is malformed. */
  readonly mark: string
  /**
   * Id of the first entry appended ("" when none). A call runs atomically, so its entries are the contiguous range
   * `firstId`..`lastId` of the stream (what a `publish` notice announces).
   */
  readonly firstId: string
}

/**
 * The per-entry loop, for one form of the XADD (with or without the trim arguments): the source holds it twice, so
 * that each entry's XADD is one `redis.pcall` with its arguments in place, without a wrapper function between.
 */
const entryLoop = (xadd: string) => `for i = ${HEADER_ARITY + 1}, #ARGV, arity do
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
      id = ${xadd}unpack(fields))
    elseif traceparent == "" then
      if err ~= "" then
        id = ${xadd}"event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3], "error", err)
      elseif key ~= "" then
        id = ${xadd}"event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3], "key", key)
      else
        id = ${xadd}"event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3])
      end
    else
      local tp = ARGV[i + 7]
      if tp == "" then tp = traceparent end
      if err ~= "" then
        id = ${xadd}"event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3], "error", err,
          "traceparent", tp)
      elseif key ~= "" then
        id = ${xadd}"event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3], "key", key,
          "traceparent", tp)
      else
        id = ${xadd}"event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3],
          "traceparent", tp)
      end
    end
    if type(id) == "table" and id.err then return fail(id.err, "XADD", stream) end
    if written == 0 then firstId = id end
    lastId = id
    written = written + 1
    if later then mark, markId = position, id end
  end
end`

const entryLoops = () => `if trim == "" then
${entryLoop(`redisPcall("XADD", stream, "*", `)}
else
${entryLoop(`redisPcall("XADD", stream, trim, op, threshold, "*", `)}
end`

const SOURCE = `#!lua
-- Locals rather than globals: the loop reads ARGV and calls redis.pcall for every entry.
local ARGV, redisPcall = ARGV, redis.pcall
local stream, marks = KEYS[1], KEYS[2]
local field, trim, op, threshold = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local expected, skip, width, mode = ARGV[5], ARGV[6] == "1", tonumber(ARGV[7]), ARGV[8]
local traceparent, refTtl = ARGV[9], ARGV[10]
local arity, refAt = ${ENTRY_ARITY}, ${ENTRY_ARITY}
if traceparent ~= "" then arity, refAt = ${TRACED_ENTRY_ARITY}, ${TRACED_ENTRY_ARITY} end
if refTtl ~= "" then arity = arity + 1 end

-- First of all: a writer whose lease was taken over writes nothing. Its fence key is the last of KEYS.
local token, refsEnd = ARGV[11], #KEYS
if token ~= "" then
  refsEnd = #KEYS - 1
${fenceCheck({ fenceKey: "KEYS[#KEYS]", token: "token" })}end

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
    return { ${MARK_MALFORMED}, 0, "", raw }
  end
end
if mode == "check" then
  return { 0, 0, markId or "", mark or "" }
end
if (mark or "") ~= expected then
  return { ${MARK_MISMATCH}, 0, "", mark or "" }
end

local written, skipped, firstId, lastId, stored = 0, 0, nil, "", {}
-- Undoes this call's entries (and the bodies it stored that were not there before), so that a failed call leaves
-- the stream as it found it. The call runs atomically and ids only grow, so its entries are exactly those from its
-- first id on: read back with XRANGE rather than remembered one by one (those its own trimming removed are gone).
local function fail(err, command, key)
  if firstId then
    local range = redis.pcall("XRANGE", stream, firstId, "+")
    if type(range) == "table" and not range.err then
      for _, entry in ipairs(range) do redis.pcall("XDEL", stream, entry[1]) end
    end
  end
  for _, ref in ipairs(stored) do redis.pcall("DEL", ref) end
  return redis.error_reply(err .. " (" .. command .. " on " .. key .. "; " .. written ..
    " entries of this call removed again, nothing written)")
end
local before = mark
${entryLoops()}
if mark ~= before then
  local set = redis.pcall("HSET", marks, field, mark .. " " .. markId)
  if type(set) == "table" and set.err then return fail(set.err, "HSET", marks) end
end
return { written, skipped, lastId, mark or "", firstId or "" }
`

/**
 * The write script as a typed descriptor.
 *
 * @since 0.1.0
 * @category scripts
 */
export const write: Script.Script<[call: WriteCall], WriteReply> = Script.make({
  name: "sink write",
  source: SOURCE,
  keys: (call: WriteCall) =>
    call.fenceKey === undefined
      ? [call.stream, call.markKey, ...call.refs]
      : [call.stream, call.markKey, ...call.refs, call.fenceKey],
  args: (call: WriteCall): Array<Commands.Arg> => {
    const args: Array<Commands.Arg> = headerArgs(call.header)
    if (call.entries.length > 0) args.push(new Commands.Framed(call.entries.slice(), call.values))
    return args
  },
  parse: (reply): WriteReply => {
    const r = reply as ReadonlyArray<unknown>
    return {
      written: Number(r[0]),
      skipped: Number(r[1]),
      lastId: String(r[2] ?? ""),
      mark: String(r[3] ?? ""),
      firstId: String(r[4] ?? "")
    }
  }
})
