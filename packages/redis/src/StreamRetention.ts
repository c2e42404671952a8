/**
 * Trimming that knows its readers (`trim: { acked: true }`) and backpressure from consumer lag (`maxLag`).
 *
 * {@link apply} trims a stream only below the oldest entry that one of its consumer groups still has to read or
 * acknowledge: per group, its smallest pending id, else the first entry after its `last-delivered-id`; the safe id is
 * the smallest over the groups. Everything below it has been processed by every group and is trimmed
 * (`XTRIM MINID`); nothing a group has not processed is. One Lua script per stream, so the groups cannot move between
 * the look and the trim, in one round trip (`XINFO GROUPS` and `XPENDING` run inside scripts on Redis 7.0).
 *
 * - A stream with no group has nobody to protect and nobody known to have read it: only `maxLen` applies (without
 *   `maxLen` nothing is trimmed). A plain `XREAD` reader (`RedisStreamSubscription`) is not a group and is not
 *   protected: give a reader that must not lose entries a group.
 * - Every group caught up: the whole stream is trimmed (its last id stays, so ids keep growing).
 * - With `maxLen`, the operator chooses what a group that lags gets. `onLag: "hold"` (the default): the stream grows
 *   past `maxLen`, the result names the groups holding it (`holding`), the gauge `stream_group_lag{stream,group}`
 *   shows how far each group is behind, and {@link make}'s gate holds the sink's writes, so the source slows down,
 *   until the groups catch up. `onLag: "trim"`: `maxLen` wins, and the entries trimmed before a group processed
 *   them are counted per group (`sink_trimmed_unread_total{stream,group}`; unread or read and unacknowledged).
 * - Approximate trimming (the default, `~`) removes whole radix-tree nodes only, so it never trims past the safe id
 *   either: it may keep a few processed entries.
 * - The script carries no `#!lua` flags, so Redis runs it even at `maxmemory` (`XTRIM` is not refused under OOM).
 *
 * {@link lagProbe} / {@link lagGate} (`maxLag: { group, entries }`) hold the sink while the named group is that far
 * behind (`XINFO GROUPS` lag plus pending), whether or not anything is trimmed.
 *
 * Metric names carry no prefix here; the Prometheus formatter adds the configured one.
 *
 * @example
 * ```ts
 * const result = yield* StreamRetention.apply("orders.events", { acked: true, maxLen: 100_000, onLag: "hold" })
 * if (result.holding.length > 0) yield* Effect.logWarning(result.holding.map((g) => g.reason).join("; "))
 * ```
 *
 * @since 0.1.0
 */
import * as ConfigError from "@redflow/core/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Gate from "./internal/gate.ts"
import { retention, type RetentionReply } from "./internal/retentionScript.ts"
import * as Script from "./internal/script.ts"
import type { RedisConnection } from "./RedisConnection.ts"
import type { RedisError } from "./RedisError.ts"
import * as StreamAdmin from "./StreamAdmin.ts"

const COMPONENT = "StreamRetention"

/**
 * `trim: { acked: true, … }`.
 *
 * @since 0.1.0
 * @category options
 */
export interface AckedTrim {
  readonly acked: true
  /** Most entries a stream should keep; what happens when a lagging group needs more is `onLag`. */
  readonly maxLen?: number
  /** What a group that lags past `maxLen` gets. Default `hold` (nothing it has not processed is trimmed). */
  readonly onLag?: "hold" | "trim"
  /** Exact trimming (`=`) instead of the default approximate (`~`). */
  readonly exact?: boolean
}

const AckedTrimSchema = Schema.Struct({
  acked: Schema.Literal(true),
  maxLen: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0))),
  onLag: Schema.optionalKey(Schema.Literals(["hold", "trim"])),
  exact: Schema.optionalKey(Schema.Boolean)
})

/**
 * Checks `trim: { acked: true, … }` options, failing with a {@link ConfigError.ConfigError} naming the option.
 *
 * @since 0.1.0
 * @category options
 */
export const decode: (input: unknown) => Effect.Effect<AckedTrim, ConfigError.ConfigError> = ConfigError.decoder(
  COMPONENT,
  AckedTrimSchema
)

/**
 * One group of a stream, as {@link apply} saw it before trimming.
 *
 * @since 0.1.0
 * @category models
 */
export interface GroupState {
  readonly group: string
  /** Entries not yet delivered to the group (`XINFO GROUPS` lag); `undefined` when Redis cannot tell (after XDEL). */
  readonly lag: number | undefined
  /** Entries delivered to the group and not acknowledged. */
  readonly pending: number
  /** The oldest entry the group still needs; `undefined` when it has processed the whole stream. */
  readonly oldestUnprocessed: string | undefined
  /** Entries trimmed by `maxLen` before the group processed them (`onLag: "trim"`). */
  readonly trimmedUnprocessed: number
}

/**
 * A group that keeps the stream past `maxLen` (`onLag: "hold"`), with a reason naming it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Holding {
  readonly group: string
  readonly reason: string
}

/**
 * What {@link apply} did.
 *
 * @since 0.1.0
 * @category models
 */
export interface RetentionResult {
  readonly stream: string
  readonly trimmed: number
  /** Entries left. */
  readonly length: number
  /** The id below which the stream was trimmed; `undefined` when no group needs anything (or there is none). */
  readonly safeId: string | undefined
  readonly groups: ReadonlyArray<GroupState>
  /** Empty unless `onLag: "hold"` and the stream is past `maxLen` because of these groups. */
  readonly holding: ReadonlyArray<Holding>
}

/**
 * Entries a group still has to read or acknowledge (`XINFO GROUPS` lag plus pending), per stream and group.
 *
 * @since 0.1.0
 * @category metrics
 */
export const groupLag = Metric.gauge("stream_group_lag", {
  description: "Entries a consumer group still has to read or acknowledge (XINFO GROUPS lag plus pending)"
})

/**
 * Entries trimmed by `maxLen` before a group read or acknowledged them (`onLag: "trim"`).
 *
 * @since 0.1.0
 * @category metrics
 */
export const trimmedUnread = Metric.counter("sink_trimmed_unread_total", {
  description: "Entries trimmed by maxLen before a consumer group read or acknowledged them",
  incremental: true
})

const toResult = (stream: string, options: AckedTrim, reply: RetentionReply): RetentionResult => ({
  stream,
  trimmed: reply.trimmed,
  length: reply.length,
  safeId: reply.safeId,
  groups: reply.groups.map((g) => ({
    group: g.name,
    lag: g.lag,
    pending: g.pending,
    oldestUnprocessed: g.bound,
    trimmedUnprocessed: g.trimmedUnprocessed
  })),
  holding: reply.groups
    .filter((g) => g.holding)
    .map((g) => ({
      group: g.name,
      reason:
        `group ${g.name} has not processed entries from ${g.bound} on (${describeBehind(g.lag, g.pending)}), ` +
        `so stream ${stream} keeps ${reply.length} entries, past maxLen ${options.maxLen}`
    }))
})

const describeBehind = (lag: number | undefined, pending: number) =>
  lag === undefined ? `${pending} pending, lag unknown` : `${lag} unread, ${pending} pending`

const report = (result: RetentionResult): Effect.Effect<void> =>
  Effect.forEach(
    result.groups,
    (g) => {
      const attributes = { stream: result.stream, group: g.group }
      return Effect.all([
        g.lag === undefined
          ? Effect.logDebug(`stream_group_lag of ${g.group} on ${result.stream} not updated: Redis reports no lag`)
          : Metric.update(Metric.withAttributes(groupLag, attributes), g.lag + g.pending),
        g.trimmedUnprocessed > 0
          ? Metric.update(Metric.withAttributes(trimmedUnread, attributes), g.trimmedUnprocessed)
          : Effect.void
      ])
    },
    { discard: true }
  )

/**
 * Trims `stream` below the oldest entry some group still has to read or acknowledge, and applies `maxLen` as
 * `onLag` says; updates the metrics. Call it after a batch was written to the stream. One script call.
 *
 * @since 0.1.0
 * @category trimming
 */
export const apply = (
  stream: string,
  options: AckedTrim
): Effect.Effect<RetentionResult, RedisError, RedisConnection> =>
  Script.run(retention, {
    stream,
    maxLen: options.maxLen,
    onLag: options.onLag ?? "hold",
    approximate: options.exact !== true
  }).pipe(
    Effect.map((reply) => toResult(stream, options, reply)),
    Effect.tap(report)
  )

/**
 * A write gate for `onLag: "hold"`: {@link Retention.afterWrite} runs {@link apply} after each batch and remembers
 * the streams held past `maxLen`; while there are some, the gate holds, and each of its probes runs the script on
 * them again (so the stream is trimmed, and writes resume, as soon as the lagging groups catch up).
 *
 * @since 0.1.0
 * @category trimming
 */
export interface Retention {
  readonly options: AckedTrim
  /** Trims `stream` after a batch was written to it. */
  readonly afterWrite: (stream: string) => Effect.Effect<RetentionResult, RedisError, RedisConnection>
  /** Holds while some stream is past `maxLen` because of a group (`onLag: "hold"`); never holds with `"trim"`. */
  readonly gate: Gate.WriteGate
}

/**
 * Builds a {@link Retention} for one pipeline: checks the options and makes its hold gate (named `retention`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: {
  readonly pipeline: string
  readonly trim: AckedTrim
  /** How often the gate looks again while holding. Default 1 second. */
  readonly interval?: Duration.Input
}): Effect.Effect<Retention, ConfigError.ConfigError, RedisConnection> =>
  Effect.gen(function* () {
    const trim = yield* decode(options.trim).pipe(
      Effect.mapError((e) => ConfigError.make(COMPONENT, ["trim", ...e.path], e.reason, e.fix))
    )
    const held = new Map<string, ReadonlyArray<Holding>>()
    const afterWrite = (stream: string) =>
      apply(stream, trim).pipe(
        Effect.tap((result) =>
          Effect.sync(() => {
            if (result.holding.length > 0) held.set(stream, result.holding)
            else held.delete(stream)
          })
        )
      )
    const probe = Effect.gen(function* () {
      for (const stream of [...held.keys()]) yield* afterWrite(stream)
      const reasons = [...held.values()].flatMap((hs) => hs.map((h) => h.reason))
      return reasons.length === 0 ? Gate.pass : Gate.hold(reasons.join("; "))
    })
    // The probe asks Redis nothing while no stream is held, so it runs before every batch (no cached answer): the
    // write after the one that found a group holding is held, and the stream grows past maxLen by at most the
    // writes already under way. While holding, it looks again every interval.
    const gate =
      trim.maxLen === undefined || trim.onLag === "trim"
        ? Gate.open
        : yield* Gate.make({
            name: "retention",
            pipeline: options.pipeline,
            probe,
            minInterval: 0,
            schedule: Schedule.spaced(options.interval ?? Duration.seconds(1))
          })
    return { options: trim, afterWrite, gate }
  })

// ---------------------------------------------------------------------------------------------------------------
// maxLag: backpressure from consumer lag alone
// ---------------------------------------------------------------------------------------------------------------

/**
 * `maxLag: { group, entries }`: hold the source while `group` has `entries` or more entries to read or acknowledge.
 *
 * @since 0.1.0
 * @category options
 */
export interface MaxLag {
  readonly group: string
  readonly entries: number
}

const MaxLagSchema = Schema.Struct({
  group: Schema.String.check(Schema.isNonEmpty()),
  entries: Schema.Int.check(Schema.isGreaterThan(0))
})

/**
 * How far a group is behind on one stream.
 *
 * @since 0.1.0
 * @category models
 */
export interface GroupLag {
  readonly stream: string
  readonly group: string
  /** Unread plus pending entries; a lower bound when `exact` is false. */
  readonly behind: number
  /** False when Redis could not compute the lag and it was counted, up to the limit, with `XRANGE`. */
  readonly exact: boolean
}

/**
 * How far `group` is behind on `stream` (`undefined`: the stream or the group does not exist). `XINFO GROUPS` lag
 * plus pending; when Redis reports no lag (entries deleted with XDEL inside the group's unread range), the unread
 * entries are counted with `XRANGE` from the last-delivered id, at most `limit` of them: a lag Redis cannot tell is
 * never taken for zero.
 *
 * @since 0.1.0
 * @category backpressure
 */
export const groupLagOf = (
  stream: string,
  group: string,
  limit: number
): Effect.Effect<GroupLag | undefined, RedisError, RedisConnection> =>
  Effect.gen(function* () {
    const exists = yield* StreamAdmin.command("EXISTS", stream, [stream], (r) => Number(r) === 1)
    if (!exists) return undefined
    const info = (yield* StreamAdmin.groups(stream)).find((g) => g.name === group)
    if (info === undefined) return undefined
    if (info.lag !== undefined) return { stream, group, behind: info.lag + info.pending, exact: true }
    const unread = yield* StreamAdmin.command(
      "XRANGE",
      stream,
      [stream, `(${info.lastDeliveredId}`, "+", "COUNT", limit],
      (r) => (Array.isArray(r) ? r.length : 0)
    )
    return { stream, group, behind: unread + info.pending, exact: unread < limit }
  })

/**
 * The probe of `maxLag`: holds while the group is `entries` or more behind on one of `streams` (the streams the sink
 * has written to), with a reason naming the group; updates `stream_group_lag`. A stream or group that does not exist
 * yet does not hold (nothing to be behind on), with a debug log.
 *
 * @since 0.1.0
 * @category backpressure
 */
export const lagProbe = (
  maxLag: MaxLag,
  streams: () => Iterable<string>
): Effect.Effect<Gate.Verdict, RedisError, RedisConnection> =>
  Effect.gen(function* () {
    const reasons: Array<string> = []
    for (const stream of streams()) {
      const lag = yield* groupLagOf(stream, maxLag.group, maxLag.entries + 1)
      if (lag === undefined) {
        yield* Effect.logDebug(`maxLag: no group ${maxLag.group} on stream ${stream} yet`)
        continue
      }
      yield* Metric.update(Metric.withAttributes(groupLag, { stream, group: maxLag.group }), lag.behind)
      if (lag.behind >= maxLag.entries) {
        reasons.push(
          `group ${maxLag.group} is ${lag.exact ? "" : "at least "}${lag.behind} entries behind on ${stream} ` +
            `(maxLag ${maxLag.entries})`
        )
      }
    }
    return reasons.length === 0 ? Gate.pass : Gate.hold(reasons.join("; "))
  })

/**
 * `maxLag` as a write gate named `lag:<group>`, probing at most once per `interval` (default 1 second).
 *
 * @since 0.1.0
 * @category backpressure
 */
export const lagGate = (options: {
  readonly pipeline: string
  readonly maxLag: MaxLag
  readonly streams: () => Iterable<string>
  readonly interval?: Duration.Input
}): Effect.Effect<Gate.WriteGate, ConfigError.ConfigError, RedisConnection> =>
  Effect.gen(function* () {
    const maxLag = yield* ConfigError.decoder(
      COMPONENT,
      MaxLagSchema
    )(options.maxLag).pipe(Effect.mapError((e) => ConfigError.make(COMPONENT, ["maxLag", ...e.path], e.reason, e.fix)))
    return yield* Gate.make({
      name: `lag:${maxLag.group}`,
      pipeline: options.pipeline,
      probe: lagProbe(maxLag, options.streams),
      ...(options.interval === undefined ? {} : { minInterval: options.interval })
    })
  })
