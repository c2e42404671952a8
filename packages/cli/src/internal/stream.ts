/**
 * `redflow stream info|groups|pending|trim|claim`: docs/DESIGN.md's stream-management commands, with readable and JSON
 * output, on `StreamAdmin`.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import { Argument, Command, Flag } from "effect/cli"
import type { RedisConnection } from "@redflow/redis/RedisConnection"
import type { RedisError } from "@redflow/redis/RedisError"
import * as StreamAdmin from "@redflow/redis/StreamAdmin"
import { GroupNotFound, StreamNotFound, UsageError } from "./errors.ts"
import * as Flags from "./flags.ts"
import * as Output from "./output.ts"
import * as Redis from "./redis.ts"

const streamArg = Argument.String("stream").pipe(Argument.withDescription("Stream name, e.g. orders.events"))
const groupArg = Argument.String("group").pipe(Argument.withDescription("Consumer group"))

/** Runs an admin action on a connection to `--redis` / `REDIS_URL`. */
const withRedis = <A, E, R>(redisFlag: Option.Option<string>, action: Effect.Effect<A, E, R>) =>
  Output.handler(
    Effect.flatMap(Flags.resolveRedisUrl(redisFlag), (url) =>
      action.pipe(Effect.provide(Redis.layer(url)), Effect.scoped)
    )
  )

const json = Flags.Json.use(Effect.succeed)

const optionalId = (o: Option.Option<StreamAdmin.Entry>) => Option.match(o, { onNone: () => null, onSome: (e) => e.id })

const noSuchStream = (stream: string) => new StreamNotFound({ stream })

/** XINFO STREAM, with a missing stream said plainly. */
const infoOf = (stream: string) =>
  StreamAdmin.info(stream).pipe(
    Effect.catchIf(
      (e) => e._tag === "RedisCommandError" && /no such key/i.test(e.message),
      () => Effect.fail(noSuchStream(stream))
    )
  )

/**
 * A `NOGROUP` reply said plainly: the stream is missing ({@link StreamNotFound}), or the group is
 * ({@link GroupNotFound}, with how to list or create groups).
 */
const withGroup =
  (stream: string, group: string) =>
  <A, E, R>(self: Effect.Effect<A, E, R>) =>
    Effect.catchIf(
      self,
      (e) => Predicate.isTagged(e, "RedisCommandError") && /^NOGROUP\b/.test((e as { message?: string }).message ?? ""),
      () => Effect.flatMap(infoOf(stream), () => Effect.fail(new GroupNotFound({ stream, group })))
    )

const info = Command.make("info", { redis: Flags.redis, stream: streamArg }, ({ redis, stream }) =>
  withRedis(
    redis,
    Effect.gen(function* () {
      const i = yield* infoOf(stream)
      const summary = {
        command: "stream info",
        stream,
        length: i.length,
        firstEntryId: optionalId(i.firstEntry),
        lastEntryId: optionalId(i.lastEntry),
        lastGeneratedId: i.lastGeneratedId,
        entriesAdded: i.entriesAdded ?? null,
        maxDeletedEntryId: i.maxDeletedEntryId ?? null,
        groups: i.groups,
        radixTreeKeys: i.radixTreeKeys,
        radixTreeNodes: i.radixTreeNodes
      }
      if (yield* json) return yield* Output.printJson(summary)
      yield* Output.print(
        `${stream}`,
        `  length             ${Output.count(i.length)}`,
        `  first entry        ${summary.firstEntryId ?? "-"}`,
        `  last entry         ${summary.lastEntryId ?? "-"}`,
        `  last generated id  ${i.lastGeneratedId}`,
        `  entries added      ${i.entriesAdded === undefined ? "-" : Output.count(i.entriesAdded)}`,
        `  groups             ${i.groups}`
      )
    })
  )
).pipe(Command.withDescription("Length, first and last entry, and groups of a stream (XINFO STREAM)"))

const groups = Command.make("groups", { redis: Flags.redis, stream: streamArg }, ({ redis, stream }) =>
  withRedis(
    redis,
    Effect.gen(function* () {
      yield* infoOf(stream)
      const list = yield* StreamAdmin.groups(stream)
      const rows = list.map((g) => ({
        name: g.name,
        consumers: g.consumers,
        pending: g.pending,
        lastDeliveredId: g.lastDeliveredId,
        entriesRead: g.entriesRead ?? null,
        lag: g.lag ?? null
      }))
      if (yield* json) return yield* Output.printJson({ command: "stream groups", stream, groups: rows })
      if (rows.length === 0) return yield* Output.print(`${stream} has no consumer groups`)
      yield* Output.print(
        table(
          ["group", "consumers", "pending", "last delivered", "lag"],
          rows.map((r) => [r.name, String(r.consumers), String(r.pending), r.lastDeliveredId, String(r.lag ?? "-")])
        )
      )
    })
  )
).pipe(
  Command.withDescription("The consumer groups of a stream: consumers, pending, last delivered id, lag (XINFO GROUPS)")
)

const pending = Command.make(
  "pending",
  {
    redis: Flags.redis,
    stream: streamArg,
    group: groupArg,
    consumer: Flag.String("consumer").pipe(Flag.withDescription("Only this consumer's entries"), Flag.optional),
    minIdle: Flags.intAtLeast("min-idle", 0, "milliseconds").pipe(
      Flag.withMetavar("MS"),
      Flag.withDescription("Only entries idle at least MS milliseconds"),
      Flag.optional
    ),
    count: Flags.intAtLeast("count", 1, "a number of entries").pipe(
      Flag.withMetavar("N"),
      Flag.withDescription("List at most N pending entries (default 20)"),
      Flag.withDefault(20)
    )
  },
  ({ consumer, count, group, minIdle, redis, stream }) =>
    withRedis(
      redis,
      Effect.gen(function* () {
        const summary = yield* StreamAdmin.pending(stream, group).pipe(withGroup(stream, group))
        const entries = yield* StreamAdmin.pendingEntries(stream, group, {
          count,
          ...Option.match(consumer, { onNone: () => ({}), onSome: (c) => ({ consumer: c }) }),
          ...Option.match(minIdle, { onNone: () => ({}), onSome: (ms) => ({ minIdle: Duration.millis(ms) }) })
        }).pipe(withGroup(stream, group))
        const out = {
          command: "stream pending",
          stream,
          group,
          pending: summary.count,
          smallestId: Option.getOrNull(summary.smallestId),
          largestId: Option.getOrNull(summary.largestId),
          consumers: summary.consumers,
          entries
        }
        if (yield* json) return yield* Output.printJson(out)
        yield* Output.print(
          `${stream} / ${group}: ${Output.count(summary.count)} pending` +
            (summary.count > 0 ? ` (${out.smallestId} … ${out.largestId})` : ""),
          ...summary.consumers.map((c) => `  ${c.name}: ${Output.count(c.pending)}`)
        )
        if (entries.length > 0) {
          yield* Output.print(
            table(
              ["id", "consumer", "idle ms", "deliveries"],
              entries.map((e) => [e.id, e.consumer, String(e.idleMs), String(e.deliveries)])
            )
          )
        }
      })
    )
).pipe(Command.withDescription("Entries delivered to a group and not acknowledged, by consumer (XPENDING)"))

/**
 * XTRIM until the bound is reached. An approximate trim (`~`) removes at most 100 × `stream-node-max-entries`
 * entries per call (Redis's default LIMIT), so one call on a long stream stops far above the bound (66,667 entries
 * trimmed to 1,000 left 56,667); the calls go on until one removes nothing, which is within a node of the bound.
 */
const trimToBound = (stream: string, strategy: StreamAdmin.TrimStrategy, exact: boolean) => {
  const go = (
    removed: number,
    calls: number
  ): Effect.Effect<{ removed: number; calls: number }, RedisError, RedisConnection> =>
    Effect.flatMap(StreamAdmin.trim(stream, strategy, { exact }), (n) =>
      exact || n === 0 ? Effect.succeed({ removed: removed + n, calls: calls + 1 }) : go(removed + n, calls + 1)
    )
  return go(0, 0)
}

const trim = Command.make(
  "trim",
  {
    redis: Flags.redis,
    stream: streamArg,
    maxlen: Flags.intAtLeast("maxlen", 0, "a stream length").pipe(
      Flag.withMetavar("N"),
      Flag.withDescription("Keep about the last N entries (exactly N with --exact)"),
      Flag.optional
    ),
    minid: Flag.String("minid").pipe(
      Flag.withMetavar("ID"),
      Flag.filter(
        (id) => /^\d+(-\d+)?$/.test(id),
        (id) => `Expected a stream id such as 1700000000000-0, got "${id}"`
      ),
      Flag.withDescription("Drop entries with ids below ID"),
      Flag.optional
    ),
    exact: Flag.Boolean("exact").pipe(
      Flag.withDescription("Trim exactly (=) instead of approximately (~, whole radix-tree nodes: cheaper)"),
      Flag.withDefault(false)
    )
  },
  ({ exact, maxlen, minid, redis, stream }) =>
    withRedis(
      redis,
      Effect.gen(function* () {
        if (Option.isSome(maxlen) === Option.isSome(minid)) {
          return yield* new UsageError({
            flag: "maxlen",
            message: "give either --maxlen N or --minid ID (one of them)"
          })
        }
        const before = yield* StreamAdmin.length(stream)
        const strategy: StreamAdmin.TrimStrategy = Option.isSome(maxlen)
          ? { maxLen: maxlen.value }
          : { minId: Option.getOrThrow(minid) }
        const { calls, removed } = yield* trimToBound(stream, strategy, exact)
        const after = yield* StreamAdmin.length(stream)
        const out = {
          command: "stream trim",
          stream,
          ...strategy,
          exact,
          removed,
          calls,
          lengthBefore: before,
          length: after
        }
        if (yield* json) return yield* Output.printJson(out)
        yield* Output.print(
          `${stream}: removed ${Output.count(removed)} entries (${exact ? "exact" : "approximate"}), length ${Output.count(before)} → ${Output.count(after)}` +
            (calls > 1
              ? ` in ${calls} XTRIM calls (Redis removes at most 100 nodes of entries per approximate call)`
              : "")
        )
      })
    )
).pipe(
  Command.withDescription(
    "Trim a stream to about N entries (XTRIM MAXLEN ~ N), exactly with --exact, or below an id with --minid"
  )
)

const claim = Command.make(
  "claim",
  {
    redis: Flags.redis,
    stream: streamArg,
    group: groupArg,
    consumer: Argument.String("consumer").pipe(Argument.withDescription("The consumer that takes the entries")),
    ids: Argument.String("id").pipe(
      Argument.withDescription("Entry ids to claim (default: every pending entry idle long enough, via XAUTOCLAIM)"),
      Argument.variadic()
    ),
    minIdle: Flags.intAtLeast("min-idle", 0, "milliseconds").pipe(
      Flag.withMetavar("MS"),
      Flag.withDescription("Claim only entries idle at least MS milliseconds (default 60000)"),
      Flag.withDefault(60_000)
    )
  },
  ({ consumer, group, ids, minIdle, redis, stream }) =>
    withRedis(
      redis,
      Effect.gen(function* () {
        const idle = Duration.millis(minIdle)
        let claimed: Array<string> = []
        let deleted: Array<string> = []
        if (ids.length > 0) {
          claimed = (yield* StreamAdmin.claim(stream, group, consumer, idle, ids).pipe(withGroup(stream, group))).map(
            (e) => e.id
          )
        } else {
          let cursor = "0-0"
          do {
            const page = yield* StreamAdmin.autoClaim(stream, group, consumer, idle, {
              start: cursor,
              count: 100
            }).pipe(withGroup(stream, group))
            claimed = claimed.concat(page.entries.map((e) => e.id))
            deleted = deleted.concat(page.deleted)
            cursor = page.next
          } while (cursor !== "0-0")
        }
        const out = { command: "stream claim", stream, group, consumer, minIdleMs: minIdle, claimed, deleted }
        if (yield* json) return yield* Output.printJson(out)
        yield* Output.print(
          `${consumer} claimed ${Output.count(claimed.length)} entries of ${stream} / ${group} idle ≥ ${minIdle} ms` +
            (deleted.length > 0 ? ` (${deleted.length} pending ids no longer in the stream were dropped)` : ""),
          ...claimed.slice(0, 20).map((id) => `  ${id}`),
          ...(claimed.length > 20 ? [`  … ${claimed.length - 20} more`] : [])
        )
      })
    )
).pipe(
  Command.withDescription(
    "Give stuck pending entries to another consumer: XCLAIM the given ids, or XAUTOCLAIM every entry idle ≥ --min-idle"
  )
)

export const command = Command.make("stream").pipe(
  Command.withDescription("Inspect and manage streams: info, groups, pending, trim, claim"),
  Command.withSubcommands([info, groups, pending, trim, claim])
)

/** A left-aligned text table. */
const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join("  ")
      .trimEnd()
  return [line(header), ...rows.map(line)].map((l) => `  ${l}`).join("\n")
}
