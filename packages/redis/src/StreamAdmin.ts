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
import {
  num,
  parseAutoClaim,
  parseConsumers,
  parseEntries,
  parseGroupEntry,
  parseGroups,
  parsePendingEntries,
  parsePendingSummary,
  parseRead,
  parseStreamInfo,
  text,
  unexpected
} from "./internal/replies.ts"
import { RedisConnection } from "./RedisConnection.ts"
import { classify, type RedisError } from "./RedisError.ts"

// ---------------------------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------------------------

/**
 * One stream entry: its id and its field/value pairs.
 *
 * @since 0.1.0
 * @category models
 */
export interface Entry {
  readonly id: string
  readonly fields: Readonly<Record<string, string>>
}

/**
 * An entry as a group read returns it: `fields` is `undefined` when the entry is still pending in the group but was
 * deleted from the stream (XDEL, trimming).
 *
 * @since 0.1.0
 * @category models
 */
export interface GroupEntry {
  readonly id: string
  readonly fields: Readonly<Record<string, string>> | undefined
}

/**
 * `XINFO STREAM`. Fields added in Redis 7.0 are `undefined` on older servers.
 *
 * @since 0.1.0
 * @category models
 */
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

/**
 * One group of `XINFO GROUPS`.
 *
 * @since 0.1.0
 * @category models
 */
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

/**
 * One consumer of `XINFO CONSUMERS`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConsumerInfo {
  readonly name: string
  readonly pending: number
  /** Milliseconds since the consumer last interacted with the server. */
  readonly idleMs: number
  /** Milliseconds since its last successful read (Redis ≥ 7.2). */
  readonly inactiveMs: number | undefined
}

/**
 * `XPENDING stream group`: the summary form.
 *
 * @since 0.1.0
 * @category models
 */
export interface PendingSummary {
  readonly count: number
  readonly smallestId: Option.Option<string>
  readonly largestId: Option.Option<string>
  readonly consumers: ReadonlyArray<{ readonly name: string; readonly pending: number }>
}

/**
 * One entry of `XPENDING stream group [IDLE ms] start end count [consumer]`: the detail form.
 *
 * @since 0.1.0
 * @category models
 */
export interface PendingEntry {
  readonly id: string
  readonly consumer: string
  /** Milliseconds since it was last delivered. */
  readonly idleMs: number
  /** Times it was delivered (the first delivery counts). */
  readonly deliveries: number
}

/**
 * `XAUTOCLAIM`.
 *
 * @since 0.1.0
 * @category models
 */
export interface AutoClaimResult {
  /** Cursor for the next call; `0-0` once the whole pending list was scanned. */
  readonly next: string
  readonly entries: ReadonlyArray<Entry>
  /** Pending ids whose entries no longer exist; Redis removed them from the pending list. */
  readonly deleted: ReadonlyArray<string>
}

/**
 * Entries read from one stream by `XREAD` / `XREADGROUP`.
 *
 * @since 0.1.0
 * @category models
 */
export interface StreamEntries {
  readonly stream: string
  readonly entries: ReadonlyArray<GroupEntry>
}

/**
 * What {@link trim} keeps: about `maxLen` entries (`MAXLEN`), or the entries from `minId` on (`MINID`).
 *
 * @since 0.1.0
 * @category options
 */
export type TrimStrategy = { readonly maxLen: number } | { readonly minId: string }

/**
 * Options of {@link trim}: exact instead of approximate trimming, and a bound on the entries one call evicts.
 *
 * @since 0.1.0
 * @category options
 */
export interface TrimOptions {
  /** `=` instead of the default `~` (approximate, much cheaper: whole radix-tree nodes). */
  readonly exact?: boolean
  /** Most entries evicted by one call (`LIMIT`, approximate trimming only). */
  readonly limit?: number
}

// ---------------------------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------------------------

/**
 * Runs one raw command on the connection in context (`RedisConnection`'s `send`) and parses its reply. The building
 * block of this module, for commands it does not wrap; a parser that throws fails as a `RedisCommandError`.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = <A>(
  name: string,
  key: string,
  args: ReadonlyArray<string | number>,
  parse: (reply: unknown) => A
): Effect.Effect<A, RedisError, RedisConnection> =>
  RedisConnection.use((redis) =>
    Effect.flatMap(redis.send(name, args, { key }), (reply) =>
      Effect.try({ try: () => parse(reply), catch: (cause) => classify(cause, { command: name, key }) })
    )
  )

const millis = (d: Duration.Input): number => Math.max(0, Math.round(Duration.toMillis(Duration.fromInputUnsafe(d))))

const asNumber =
  (name: string) =>
  (reply: unknown): number =>
    num(reply) ?? unexpected(name, reply)

const isOk = (reply: unknown) => text(reply) === "OK"

/**
 * `XLEN`: entries in the stream (0 when it does not exist).
 *
 * @since 0.1.0
 * @category inspecting
 */
export const length = (stream: string) => command("XLEN", stream, [stream], asNumber("XLEN"))

/**
 * `XINFO STREAM`. Fails with `RedisCommandError` ("ERR no such key") when the stream does not exist.
 *
 * @since 0.1.0
 * @category inspecting
 */
export const info = (stream: string) => command("XINFO", stream, ["STREAM", stream], parseStreamInfo)

/**
 * `XINFO GROUPS`.
 *
 * @since 0.1.0
 * @category inspecting
 */
export const groups = (stream: string) => command("XINFO", stream, ["GROUPS", stream], parseGroups)

/**
 * `XINFO CONSUMERS`.
 *
 * @since 0.1.0
 * @category inspecting
 */
export const consumers = (stream: string, group: string) =>
  command("XINFO", stream, ["CONSUMERS", stream, group], parseConsumers)

/**
 * `XPENDING stream group`: how many entries are delivered and not acknowledged, and by whom.
 *
 * @since 0.1.0
 * @category inspecting
 */
export const pending = (stream: string, group: string) =>
  command("XPENDING", stream, [stream, group], parsePendingSummary)

/**
 * Options of {@link pendingEntries}: the id range, how many, whose entries and how idle.
 *
 * @since 0.1.0
 * @category options
 */
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

/**
 * `XPENDING stream group [IDLE ms] start end count [consumer]`: pending entries with idle time and delivery count.
 *
 * @since 0.1.0
 * @category inspecting
 */
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
 *
 * @since 0.1.0
 * @category trimming
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

/**
 * Options of {@link claim} and {@link claimIds}: the idle time and delivery count to set on the entries claimed.
 *
 * @since 0.1.0
 * @category options
 */
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
): Array<string | number> => [
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
 *
 * @since 0.1.0
 * @category claiming
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
 *
 * @since 0.1.0
 * @category claiming
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

/**
 * `XAUTOCLAIM stream group consumer min-idle start COUNT n`: claims up to `count` entries idle at least `minIdle`.
 *
 * @since 0.1.0
 * @category claiming
 */
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

/**
 * `XDEL`: returns the number of entries deleted.
 *
 * @since 0.1.0
 * @category trimming
 */
export const del = (stream: string, ids: ReadonlyArray<string>) =>
  ids.length === 0 ? Effect.succeed(0) : command("XDEL", stream, [stream, ...ids], asNumber("XDEL"))

/**
 * `XACK`: returns the number of entries acknowledged now (ids not pending count 0).
 *
 * @since 0.1.0
 * @category acknowledging
 */
export const ack = (stream: string, group: string, ids: ReadonlyArray<string>) =>
  ids.length === 0 ? Effect.succeed(0) : command("XACK", stream, [stream, group, ...ids], asNumber("XACK"))

/**
 * Options of {@link createGroup}: where the group starts, whether a missing stream is created, and `ENTRIESREAD`.
 *
 * @since 0.1.0
 * @category options
 */
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
 *
 * @since 0.1.0
 * @category groups
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

/**
 * `XGROUP DESTROY`: `true` when the group existed. Its pending list goes with it.
 *
 * @since 0.1.0
 * @category groups
 */
export const destroyGroup = (stream: string, group: string) =>
  command("XGROUP", stream, ["DESTROY", stream, group], (reply) => asNumber("XGROUP DESTROY")(reply) > 0)

/**
 * `XGROUP SETID`: moves the group's last-delivered id (`$` for the end, `0` to re-deliver everything).
 *
 * @since 0.1.0
 * @category groups
 */
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

/**
 * `XGROUP CREATECONSUMER`: `true` when created.
 *
 * @since 0.1.0
 * @category groups
 */
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
 *
 * @since 0.1.0
 * @category groups
 */
export const deleteConsumer = (stream: string, group: string, consumer: string) =>
  command("XGROUP", stream, ["DELCONSUMER", stream, group, consumer], asNumber("XGROUP DELCONSUMER"))

/**
 * `XRANGE stream start end [COUNT n]` (`-` and `+` by default; `(id` for an exclusive start).
 *
 * @since 0.1.0
 * @category reading
 */
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

/**
 * The id of the last entry of the stream, if any (`XREVRANGE stream + - COUNT 1`).
 *
 * @since 0.1.0
 * @category reading
 */
export const lastId = (stream: string) =>
  command("XREVRANGE", stream, [stream, "+", "-", "COUNT", 1], (reply) =>
    Option.map(Option.fromUndefinedOr(parseEntries(reply)[0]), (e) => e.id)
  )

/**
 * `XREAD [COUNT n] [BLOCK ms] STREAMS stream id`: entries after `id` (`$` for only new ones).
 *
 * @since 0.1.0
 * @category reading
 */
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
 *
 * @since 0.1.0
 * @category reading
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
