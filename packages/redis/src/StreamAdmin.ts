/**
 * Stream management with typed results: every command of docs/DESIGN.md's contract, "Consuming" and "Stream management"
 * sections (XLEN, XINFO, XPENDING, XTRIM, XCLAIM, XAUTOCLAIM, XDEL, XACK, XGROUP …, XREAD, XREADGROUP, XRANGE),
 * each parsed from the raw reply into a plain typed value. Failures are the typed {@link RedisError}s of
 * `RedisConnection.run`; a reply of a shape this module does not know fails as a `RedisCommandError`.
 *
 * Replies are parsed from what the server sends, whatever the protocol: ioredis 6 speaks RESP3 and maps replies
 * to RESP2-like arrays ("legacy" mapping), but not always the same ones as RESP2 would give (a raw `XREADGROUP`
 * comes back as a flat `[stream, entries]` list rather than `[[stream, entries]]`), so the parsers accept both.
 *
 * @example
 * ```ts
 * const program = Effect.gen(function* () {
 *   const length = yield* StreamAdmin.length("orders.events")
 *   const pending = yield* StreamAdmin.pending("orders.events", "mygroup")
 *   const stuck = yield* StreamAdmin.pendingEntries("orders.events", "mygroup", { minIdle: "60 seconds" })
 *   yield* StreamAdmin.claim("orders.events", "mygroup", "worker2", "60 seconds", stuck.map((e) => e.id))
 * })
 * ```
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import { type Client, RedisConnection } from "./RedisConnection.ts"
import type { RedisError } from "./RedisError.ts"

// ---------------------------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------------------------

/** One stream entry: its id and its field/value pairs. */
export interface Entry {
  readonly id: string
  readonly fields: Readonly<Record<string, string>>
}

/**
 * An entry as a group read returns it: `fields` is `undefined` when the entry is still pending in the group but was
 * deleted from the stream (XDEL, trimming).
 */
export interface GroupEntry {
  readonly id: string
  readonly fields: Readonly<Record<string, string>> | undefined
}

/** `XINFO STREAM`. Fields added in Redis 7.0 are `undefined` on older servers. */
export interface StreamInfo {
  readonly length: number
  readonly radixTreeKeys: number
  readonly radixTreeNodes: number
  readonly lastGeneratedId: string
  readonly maxDeletedEntryId: string | undefined
  readonly entriesAdded: number | undefined
  readonly recordedFirstEntryId: string | undefined
  readonly groups: number
  readonly firstEntry: Option.Option<Entry>
  readonly lastEntry: Option.Option<Entry>
}

/** One group of `XINFO GROUPS`. */
export interface GroupInfo {
  readonly name: string
  readonly consumers: number
  /** Entries delivered to the group's consumers and not acknowledged. */
  readonly pending: number
  readonly lastDeliveredId: string
  /** Entries the group has read (Redis ≥ 7.0); `undefined` when unknown. */
  readonly entriesRead: number | undefined
  /** Entries still to be delivered to the group (Redis ≥ 7.0); `undefined` when it cannot be computed. */
  readonly lag: number | undefined
}

/** One consumer of `XINFO CONSUMERS`. */
export interface ConsumerInfo {
  readonly name: string
  readonly pending: number
  /** Milliseconds since the consumer last interacted with the server. */
  readonly idleMs: number
  /** Milliseconds since its last successful read (Redis ≥ 7.2). */
  readonly inactiveMs: number | undefined
}

/** `XPENDING stream group`: the summary form. */
export interface PendingSummary {
  readonly count: number
  readonly smallestId: Option.Option<string>
  readonly largestId: Option.Option<string>
  readonly consumers: ReadonlyArray<{ readonly name: string; readonly pending: number }>
}

/** One entry of `XPENDING stream group [IDLE ms] start end count [consumer]`: the detail form. */
export interface PendingEntry {
  readonly id: string
  readonly consumer: string
  /** Milliseconds since it was last delivered. */
  readonly idleMs: number
  /** Times it was delivered (the first delivery counts). */
  readonly deliveries: number
}

/** `XAUTOCLAIM`. */
export interface AutoClaimResult {
  /** Cursor for the next call; `0-0` once the whole pending list was scanned. */
  readonly next: string
  readonly entries: ReadonlyArray<Entry>
  /** Pending ids whose entries no longer exist; Redis removed them from the pending list. */
  readonly deleted: ReadonlyArray<string>
}

/** Entries read from one stream by `XREAD` / `XREADGROUP`. */
export interface StreamEntries {
  readonly stream: string
  readonly entries: ReadonlyArray<GroupEntry>
}

export type TrimStrategy = { readonly maxLen: number } | { readonly minId: string }

export interface TrimOptions {
  /** `=` instead of the default `~` (approximate, much cheaper: whole radix-tree nodes). */
  readonly exact?: boolean
  /** Most entries evicted by one call (`LIMIT`, approximate trimming only). */
  readonly limit?: number
}

// ---------------------------------------------------------------------------------------------------------------
// Reply parsing
// ---------------------------------------------------------------------------------------------------------------

/** A reply of a shape this module does not know; `RedisConnection.run` turns it into a `RedisCommandError`. */
const unexpected = (command: string, reply: unknown): never => {
  throw new Error(`unexpected ${command} reply: ${JSON.stringify(reply)?.slice(0, 300)}`)
}

const text = (u: unknown): string | undefined =>
  Predicate.isString(u) ? u : u instanceof Uint8Array ? Buffer.from(u).toString("utf8") : undefined

const num = (u: unknown): number | undefined => {
  if (Predicate.isNumber(u)) return u
  if (Predicate.isBigInt(u)) return Number(u)
  const s = text(u)
  if (s === undefined || s === "") return undefined
  const n = Number(s)
  return Number.isFinite(n) ? n : undefined
}

/** A map reply: a flat `[k, v, k, v]` array (RESP2 and legacy mapping), a `Map`, or an object (RESP3 mapping). */
export const toRecord = (reply: unknown): Record<string, unknown> | undefined => {
  if (Array.isArray(reply)) {
    if (reply.length % 2 !== 0) return undefined
    const out: Record<string, unknown> = {}
    for (let i = 0; i < reply.length; i += 2) {
      const key = text(reply[i])
      if (key === undefined) return undefined
      out[key] = reply[i + 1]
    }
    return out
  }
  if (reply instanceof Map) {
    const out: Record<string, unknown> = {}
    for (const [k, v] of reply) {
      const key = text(k)
      if (key === undefined) return undefined
      out[key] = v
    }
    return out
  }
  if (Predicate.isObject(reply)) return reply as Record<string, unknown>
  return undefined
}

/** An entry's field/value list; `undefined` for `null` (a pending entry deleted from the stream). */
export const parseFields = (reply: unknown): Record<string, string> | undefined => {
  if (reply === null || reply === undefined) return undefined
  // The shape every read returns, `[field, value, …]`: straight into the result, without a record in between (a
  // consumer parses every entry it reads).
  if (Array.isArray(reply) && reply.length % 2 === 0) {
    const out: Record<string, string> = {}
    for (let i = 0; i < reply.length; i += 2) {
      const key = text(reply[i])
      if (key === undefined) return unexpected("fields", reply)
      const value: unknown = reply[i + 1]
      out[key] = Predicate.isString(value) ? value : (text(value) ?? String(value))
    }
    return out
  }
  const record = toRecord(reply)
  if (record === undefined) return unexpected("fields", reply)
  const out: Record<string, string> = {}
  for (const key in record) out[key] = text(record[key]) ?? String(record[key])
  return out
}

/** `[id, [field, value, …]]`, fields possibly `null`. */
export const parseGroupEntry = (reply: unknown): GroupEntry => {
  if (!Array.isArray(reply) || reply.length !== 2) return unexpected("entry", reply)
  const id = text(reply[0])
  if (id === undefined) return unexpected("entry", reply)
  return { id, fields: parseFields(reply[1]) }
}

const parseEntry = (reply: unknown): Entry => {
  const entry = parseGroupEntry(reply)
  return { id: entry.id, fields: entry.fields ?? {} }
}

const parseEntries = (reply: unknown): Array<Entry> =>
  Array.isArray(reply) ? reply.map(parseEntry) : reply === null ? [] : unexpected("entries", reply)

/**
 * `XREAD` / `XREADGROUP`: `null` (nothing, or a block that timed out), `[[stream, entries], …]` (RESP2), or the
 * legacy mapping of a RESP3 map, `[stream, entries, …]`.
 */
export const parseRead = (reply: unknown): Array<StreamEntries> => {
  if (reply === null || reply === undefined) return []
  const pairs: Array<[unknown, unknown]> = []
  if (Array.isArray(reply) && reply.length > 0 && text(reply[0]) !== undefined) {
    if (reply.length % 2 !== 0) return unexpected("XREAD", reply)
    for (let i = 0; i < reply.length; i += 2) pairs.push([reply[i], reply[i + 1]])
  } else if (Array.isArray(reply)) {
    for (const item of reply) {
      if (!Array.isArray(item) || item.length !== 2) return unexpected("XREAD", reply)
      pairs.push([item[0], item[1]])
    }
  } else {
    const record = toRecord(reply)
    if (record === undefined) return unexpected("XREAD", reply)
    for (const key in record) pairs.push([key, record[key]])
  }
  return pairs.map(([stream, entries]) => {
    const name = text(stream)
    if (name === undefined || !Array.isArray(entries)) return unexpected("XREAD", reply)
    return { stream: name, entries: entries.map(parseGroupEntry) }
  })
}

const requireNumber = (command: string, record: Record<string, unknown>, key: string): number =>
  num(record[key]) ?? unexpected(command, record)

const requireText = (command: string, record: Record<string, unknown>, key: string): string =>
  text(record[key]) ?? unexpected(command, record)

/** `XINFO STREAM`. */
export const parseStreamInfo = (reply: unknown): StreamInfo => {
  const r = toRecord(reply) ?? unexpected("XINFO STREAM", reply)
  const entry = (u: unknown) => (u === null || u === undefined ? Option.none() : Option.some(parseEntry(u)))
  return {
    length: requireNumber("XINFO STREAM", r, "length"),
    radixTreeKeys: requireNumber("XINFO STREAM", r, "radix-tree-keys"),
    radixTreeNodes: requireNumber("XINFO STREAM", r, "radix-tree-nodes"),
    lastGeneratedId: requireText("XINFO STREAM", r, "last-generated-id"),
    maxDeletedEntryId: text(r["max-deleted-entry-id"]),
    entriesAdded: num(r["entries-added"]),
    recordedFirstEntryId: text(r["recorded-first-entry-id"]),
    groups: requireNumber("XINFO STREAM", r, "groups"),
    firstEntry: entry(r["first-entry"]),
    lastEntry: entry(r["last-entry"])
  }
}

/** `XINFO GROUPS`. */
export const parseGroups = (reply: unknown): Array<GroupInfo> =>
  (Array.isArray(reply) ? reply : unexpected("XINFO GROUPS", reply)).map((item) => {
    const r = toRecord(item) ?? unexpected("XINFO GROUPS", reply)
    return {
      name: requireText("XINFO GROUPS", r, "name"),
      consumers: requireNumber("XINFO GROUPS", r, "consumers"),
      pending: requireNumber("XINFO GROUPS", r, "pending"),
      lastDeliveredId: requireText("XINFO GROUPS", r, "last-delivered-id"),
      entriesRead: num(r["entries-read"]),
      lag: num(r["lag"])
    }
  })

/** `XINFO CONSUMERS`. */
export const parseConsumers = (reply: unknown): Array<ConsumerInfo> =>
  (Array.isArray(reply) ? reply : unexpected("XINFO CONSUMERS", reply)).map((item) => {
    const r = toRecord(item) ?? unexpected("XINFO CONSUMERS", reply)
    return {
      name: requireText("XINFO CONSUMERS", r, "name"),
      pending: requireNumber("XINFO CONSUMERS", r, "pending"),
      idleMs: requireNumber("XINFO CONSUMERS", r, "idle"),
      inactiveMs: num(r["inactive"])
    }
  })

/** `XPENDING stream group`: `[count, smallest, largest, [[consumer, count], …]]`, nulls when nothing is pending. */
export const parsePendingSummary = (reply: unknown): PendingSummary => {
  if (!Array.isArray(reply) || reply.length !== 4) return unexpected("XPENDING", reply)
  const [count, smallest, largest, consumers] = reply
  const list = consumers === null ? [] : Array.isArray(consumers) ? consumers : unexpected("XPENDING", reply)
  return {
    count: num(count) ?? unexpected("XPENDING", reply),
    smallestId: Option.fromUndefinedOr(text(smallest)),
    largestId: Option.fromUndefinedOr(text(largest)),
    consumers: list.map((c) => {
      if (!Array.isArray(c) || c.length !== 2) return unexpected("XPENDING", reply)
      return { name: text(c[0]) ?? unexpected("XPENDING", reply), pending: num(c[1]) ?? unexpected("XPENDING", reply) }
    })
  }
}

/** `XPENDING stream group start end count`: `[[id, consumer, idle, deliveries], …]`. */
export const parsePendingEntries = (reply: unknown): Array<PendingEntry> =>
  (Array.isArray(reply) ? reply : unexpected("XPENDING", reply)).map((item) => {
    if (!Array.isArray(item) || item.length !== 4) return unexpected("XPENDING", reply)
    return {
      id: text(item[0]) ?? unexpected("XPENDING", reply),
      consumer: text(item[1]) ?? unexpected("XPENDING", reply),
      idleMs: num(item[2]) ?? unexpected("XPENDING", reply),
      deliveries: num(item[3]) ?? unexpected("XPENDING", reply)
    }
  })

/**
 * `XAUTOCLAIM`: `[next, entries, deleted]` (Redis ≥ 7.0); on 6.2 there is no third element and deleted entries
 * come back with `null` fields (they are reported in `deleted` here too).
 */
export const parseAutoClaim = (reply: unknown): AutoClaimResult => {
  if (!Array.isArray(reply) || reply.length < 2) return unexpected("XAUTOCLAIM", reply)
  const next = text(reply[0]) ?? unexpected("XAUTOCLAIM", reply)
  const raw = Array.isArray(reply[1]) ? reply[1].map(parseGroupEntry) : unexpected("XAUTOCLAIM", reply)
  const deleted = Array.isArray(reply[2]) ? reply[2].map((id) => text(id) ?? unexpected("XAUTOCLAIM", reply)) : []
  const entries: Array<Entry> = []
  for (const e of raw) {
    if (e.fields === undefined) deleted.push(e.id)
    else entries.push({ id: e.id, fields: e.fields })
  }
  return { next, entries, deleted }
}

// ---------------------------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------------------------

type Arg = string | number

const call = (client: Client, command: string, args: ReadonlyArray<Arg>): Promise<unknown> =>
  (client as unknown as { call: (command: string, args: Array<Arg>) => Promise<unknown> }).call(command, [...args])

/**
 * Runs one raw command on the connection in context and parses its reply. The building block of this module, for
 * commands it does not wrap.
 */
export const command = <A>(
  name: string,
  key: string,
  args: ReadonlyArray<Arg>,
  parse: (reply: unknown) => A
): Effect.Effect<A, RedisError, RedisConnection> =>
  RedisConnection.use((redis) =>
    redis.run(async (client) => parse(await call(client, name, args)), { command: name, key })
  )

const millis = (d: Duration.Input): number => Math.max(0, Math.round(Duration.toMillis(Duration.fromInputUnsafe(d))))

const asNumber =
  (name: string) =>
  (reply: unknown): number =>
    num(reply) ?? unexpected(name, reply)

const isOk = (reply: unknown) => text(reply) === "OK"

/** `XLEN`: entries in the stream (0 when it does not exist). */
export const length = (stream: string) => command("XLEN", stream, [stream], asNumber("XLEN"))

/** `XINFO STREAM`. Fails with `RedisCommandError` ("ERR no such key") when the stream does not exist. */
export const info = (stream: string) => command("XINFO", stream, ["STREAM", stream], parseStreamInfo)

/** `XINFO GROUPS`. */
export const groups = (stream: string) => command("XINFO", stream, ["GROUPS", stream], parseGroups)

/** `XINFO CONSUMERS`. */
export const consumers = (stream: string, group: string) =>
  command("XINFO", stream, ["CONSUMERS", stream, group], parseConsumers)

/** `XPENDING stream group`: how many entries are delivered and not acknowledged, and by whom. */
export const pending = (stream: string, group: string) =>
  command("XPENDING", stream, [stream, group], parsePendingSummary)

export interface PendingEntriesOptions {
  /** Default `-`. */
  readonly start?: string
  /** Default `+`. */
  readonly end?: string
  /** Default 100. */
  readonly count?: number
  /** Only this consumer's entries. */
  readonly consumer?: string
  /** Only entries idle at least this long (`IDLE`). */
  readonly minIdle?: Duration.Input
}

/** `XPENDING stream group [IDLE ms] start end count [consumer]`: pending entries with idle time and delivery count. */
export const pendingEntries = (stream: string, group: string, options: PendingEntriesOptions = {}) =>
  command(
    "XPENDING",
    stream,
    [
      stream,
      group,
      ...(options.minIdle !== undefined ? ["IDLE", millis(options.minIdle)] : []),
      options.start ?? "-",
      options.end ?? "+",
      options.count ?? 100,
      ...(options.consumer !== undefined ? [options.consumer] : [])
    ],
    parsePendingEntries
  )

/**
 * `XTRIM stream MAXLEN|MINID ~|= threshold [LIMIT n]`: returns the number of entries removed. Approximate (`~`)
 * by default, like the contract's `XTRIM orders.events MAXLEN ~ 10000` (docs/DESIGN.md, "Stream management").
 */
export const trim = (stream: string, strategy: TrimStrategy, options: TrimOptions = {}) =>
  command(
    "XTRIM",
    stream,
    [
      stream,
      ...("maxLen" in strategy ? ["MAXLEN", options.exact === true ? "=" : "~", strategy.maxLen] : []),
      ...("minId" in strategy ? ["MINID", options.exact === true ? "=" : "~", strategy.minId] : []),
      ...(options.limit !== undefined && options.exact !== true ? ["LIMIT", options.limit] : [])
    ],
    asNumber("XTRIM")
  )

export interface ClaimOptions {
  /** Set the entries' idle time (`IDLE`). */
  readonly idle?: Duration.Input
  /** Set the delivery counter (`RETRYCOUNT`). */
  readonly retryCount?: number
}

const claimArgs = (
  stream: string,
  group: string,
  consumer: string,
  minIdle: Duration.Input,
  ids: ReadonlyArray<string>,
  options: ClaimOptions
): Array<Arg> => [
  stream,
  group,
  consumer,
  millis(minIdle),
  ...ids,
  ...(options.idle !== undefined ? ["IDLE", millis(options.idle)] : []),
  ...(options.retryCount !== undefined ? ["RETRYCOUNT", options.retryCount] : [])
]

/**
 * `XCLAIM`: takes over the given pending entries that are idle at least `minIdle`, increments their delivery
 * count, and returns them (entries no longer in the stream are dropped from the pending list and not returned).
 */
export const claim = (
  stream: string,
  group: string,
  consumer: string,
  minIdle: Duration.Input,
  ids: ReadonlyArray<string>,
  options: ClaimOptions = {}
): Effect.Effect<Array<Entry>, RedisError, RedisConnection> =>
  ids.length === 0
    ? Effect.succeed([])
    : command("XCLAIM", stream, claimArgs(stream, group, consumer, minIdle, ids, options), (reply) => {
        const out: Array<Entry> = []
        for (const item of Array.isArray(reply) ? reply : unexpected("XCLAIM", reply)) {
          // Redis 6 answers null for a claimed entry that no longer exists.
          if (item === null) continue
          const e = parseGroupEntry(item)
          if (e.fields !== undefined) out.push({ id: e.id, fields: e.fields })
        }
        return out
      })

/**
 * `XCLAIM … JUSTID`: takes over the entries without returning them and without incrementing their delivery count
 * (also how a consumer keeps entries it is still working on from looking idle). Returns the ids claimed.
 */
export const claimIds = (
  stream: string,
  group: string,
  consumer: string,
  minIdle: Duration.Input,
  ids: ReadonlyArray<string>,
  options: ClaimOptions = {}
): Effect.Effect<Array<string>, RedisError, RedisConnection> =>
  ids.length === 0
    ? Effect.succeed([])
    : command("XCLAIM", stream, [...claimArgs(stream, group, consumer, minIdle, ids, options), "JUSTID"], (reply) =>
        (Array.isArray(reply) ? reply : unexpected("XCLAIM", reply)).map((id) => text(id) ?? unexpected("XCLAIM", id))
      )

/** `XAUTOCLAIM stream group consumer min-idle start COUNT n`: claims up to `count` entries idle at least `minIdle`. */
export const autoClaim = (
  stream: string,
  group: string,
  consumer: string,
  minIdle: Duration.Input,
  options: { readonly start?: string; readonly count?: number } = {}
) =>
  command(
    "XAUTOCLAIM",
    stream,
    [stream, group, consumer, millis(minIdle), options.start ?? "0-0", "COUNT", options.count ?? 100],
    parseAutoClaim
  )

/** `XDEL`: returns the number of entries deleted. */
export const del = (stream: string, ids: ReadonlyArray<string>) =>
  ids.length === 0 ? Effect.succeed(0) : command("XDEL", stream, [stream, ...ids], asNumber("XDEL"))

/** `XACK`: returns the number of entries acknowledged now (ids not pending count 0). */
export const ack = (stream: string, group: string, ids: ReadonlyArray<string>) =>
  ids.length === 0 ? Effect.succeed(0) : command("XACK", stream, [stream, group, ...ids], asNumber("XACK"))

export interface CreateGroupOptions {
  /** `$` (only new entries, the default, as in docs/DESIGN.md's `XGROUP CREATE`), `0` (the whole stream), or an id. */
  readonly start?: string
  /** Create the stream when missing (`MKSTREAM`). Default true. */
  readonly mkStream?: boolean
  /** `ENTRIESREAD` (Redis ≥ 7.0), for an exact `lag`. */
  readonly entriesRead?: number
}

/**
 * `XGROUP CREATE stream group start [MKSTREAM]`: `true` when created, `false` when the group already existed
 * (`BUSYGROUP` is not an error here).
 */
export const createGroup = (
  stream: string,
  group: string,
  options: CreateGroupOptions = {}
): Effect.Effect<boolean, RedisError, RedisConnection> =>
  command(
    "XGROUP",
    stream,
    [
      "CREATE",
      stream,
      group,
      options.start ?? "$",
      ...(options.mkStream === false ? [] : ["MKSTREAM"]),
      ...(options.entriesRead !== undefined ? ["ENTRIESREAD", options.entriesRead] : [])
    ],
    isOk
  ).pipe(
    Effect.catchIf(
      (error) => error._tag === "RedisCommandError" && error.code === "BUSYGROUP",
      () => Effect.succeed(false)
    )
  )

/** `XGROUP DESTROY`: `true` when the group existed. Its pending list goes with it. */
export const destroyGroup = (stream: string, group: string) =>
  command("XGROUP", stream, ["DESTROY", stream, group], (reply) => asNumber("XGROUP DESTROY")(reply) > 0)

/** `XGROUP SETID`: moves the group's last-delivered id (`$` for the end, `0` to re-deliver everything). */
export const setGroupId = (
  stream: string,
  group: string,
  id: string,
  options: { readonly entriesRead?: number } = {}
) =>
  command(
    "XGROUP",
    stream,
    ["SETID", stream, group, id, ...(options.entriesRead !== undefined ? ["ENTRIESREAD", options.entriesRead] : [])],
    (reply) => (isOk(reply) ? undefined : unexpected("XGROUP SETID", reply))
  )

/** `XGROUP CREATECONSUMER`: `true` when created. */
export const createConsumer = (stream: string, group: string, consumer: string) =>
  command(
    "XGROUP",
    stream,
    ["CREATECONSUMER", stream, group, consumer],
    (reply) => asNumber("XGROUP CREATECONSUMER")(reply) > 0
  )

/**
 * `XGROUP DELCONSUMER`: removes a consumer and returns how many entries it had pending. Those entries are dropped
 * from the group's pending list: claim them first if they still need processing.
 */
export const deleteConsumer = (stream: string, group: string, consumer: string) =>
  command("XGROUP", stream, ["DELCONSUMER", stream, group, consumer], asNumber("XGROUP DELCONSUMER"))

/** `XRANGE stream start end [COUNT n]` (`-` and `+` by default; `(id` for an exclusive start). */
export const range = (
  stream: string,
  options: { readonly start?: string; readonly end?: string; readonly count?: number } = {}
) =>
  command(
    "XRANGE",
    stream,
    [
      stream,
      options.start ?? "-",
      options.end ?? "+",
      ...(options.count !== undefined ? ["COUNT", options.count] : [])
    ],
    parseEntries
  )

/** The id of the last entry of the stream, if any (`XREVRANGE stream + - COUNT 1`). */
export const lastId = (stream: string) =>
  command("XREVRANGE", stream, [stream, "+", "-", "COUNT", 1], (reply) =>
    Option.map(Option.fromUndefinedOr(parseEntries(reply)[0]), (e) => e.id)
  )

/** `XREAD [COUNT n] [BLOCK ms] STREAMS stream id`: entries after `id` (`$` for only new ones). */
export const read = (
  stream: string,
  id: string,
  options: { readonly count?: number; readonly block?: Duration.Input } = {}
) =>
  command(
    "XREAD",
    stream,
    [
      ...(options.count !== undefined ? ["COUNT", options.count] : []),
      ...(options.block !== undefined ? ["BLOCK", millis(options.block)] : []),
      "STREAMS",
      stream,
      id
    ],
    (reply) => parseRead(reply).find((s) => s.stream === stream)?.entries ?? []
  )

/**
 * `XREADGROUP GROUP group consumer [COUNT n] [BLOCK ms] STREAMS stream id`: `>` for entries never delivered to the
 * group, or an id to re-read this consumer's own pending entries after it (`0` for all of them).
 */
export const readGroup = (
  stream: string,
  group: string,
  consumer: string,
  id: string,
  options: { readonly count?: number; readonly block?: Duration.Input } = {}
) =>
  command(
    "XREADGROUP",
    stream,
    [
      "GROUP",
      group,
      consumer,
      ...(options.count !== undefined ? ["COUNT", options.count] : []),
      ...(options.block !== undefined ? ["BLOCK", millis(options.block)] : []),
      "STREAMS",
      stream,
      id
    ],
    (reply) => parseRead(reply).find((s) => s.stream === stream)?.entries ?? []
  )
