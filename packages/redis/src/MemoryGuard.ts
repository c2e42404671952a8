/**
 * A write gate that holds the sink's writes before Redis runs out of memory, instead of running into `OOM command
 * not allowed`: above `highWater` × `maxmemory` it holds (backpressure to the source), and it lets writes through
 * again once memory is below `lowWater` × `maxmemory` (hysteresis, so it does not flap around one threshold).
 *
 * Memory is what Redis itself compares with `maxmemory` before refusing a write: `used_memory` minus
 * `mem_not_counted_for_evict` (replication and AOF buffers), from `INFO memory`, read at most once per `interval`
 * whatever the write rate. On a cluster every master is read and the fullest one decides, since a write to any of
 * them can be refused.
 *
 * When it does nothing, by design:
 * - no `maxmemory` (0, the default of a self-hosted Redis): Redis never refuses a write for memory; the guard never
 *   holds (it keeps reading, so a `CONFIG SET maxmemory` later is picked up);
 * - an `allkeys-*` eviction policy: Redis makes room by evicting any key, streams included, and does not refuse the
 *   write; holding would not save the streams. The guard says so once in the log (a warning: entries can be lost to
 *   eviction) and never holds;
 * - a `volatile-*` policy evicts only keys with a TTL; a stream has none. While the database holds keys with a TTL
 *   (INFO keyspace `expires`), Redis makes room by evicting them and memory sits at `maxmemory` as a cache's does: the
 *   guard lets writes through (holding would stop the pipeline for good on a healthy cache). Once no such key is
 *   left, writes are refused as under `noeviction`, and the guard holds like it does there.
 *
 * It cannot hold for good while memory is below the low water: every decision is made on a fresh read, a read that
 * fails (Redis down, `INFO` refused) lets writes through (the write then fails on its own and is retried by the
 * sink's policies), and raising `maxmemory` lowers the share at the next read. Between low and high water a hold
 * lasts until memory falls below the low water: a consumer trimming, keys deleted, `maxmemory` raised.
 *
 * @example
 * ```ts
 * const guard = yield* MemoryGuard.make({ pipeline: "orders", highWater: 0.9, lowWater: 0.8 })
 * // the sink: yield* guard.await before each batch
 * ```
 *
 * @since 0.1.0
 */
import * as ConfigError from "@redflow/core/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Gate from "./internal/gate.ts"
import { type Client, RedisConnection } from "./RedisConnection.ts"
import type { RedisError } from "./RedisError.ts"

const COMPONENT = "MemoryGuard"

/**
 * Options of {@link make}: the pipeline whose writes are held, and the shares of `maxmemory` where holding starts and
 * ends.
 *
 * @since 0.1.0
 * @category options
 */
export interface Options {
  /** The pipeline whose writes are held (the `pipeline` attribute of `sink_held`). */
  readonly pipeline: string
  /** Share of `maxmemory` above which writes are held. Default 0.9. At most 1. */
  readonly highWater?: number
  /** Share of `maxmemory` below which held writes resume. Default 0.8 (or `highWater` − 0.1 when lower). Below `highWater`. */
  readonly lowWater?: number
  /** Least time between two reads of `INFO memory`, and how often a hold looks again. Default 1 second. */
  readonly interval?: Duration.Input
  /** The gate's name in metrics, logs and health. Default `memory`. */
  readonly name?: string
}

const isPositiveDuration = (u: unknown): u is Duration.Input => {
  try {
    const d = Duration.fromInput(u as Duration.Input)
    return Option.isSome(d) && Duration.isFinite(d.value) && Duration.toMillis(d.value) > 0
  } catch {
    return false
  }
}

const Share = Schema.Number.check(
  Schema.makeFilter(
    (n: number) => (Number.isFinite(n) && n > 0 && n <= 1) || `must be a share above 0 and at most 1, got ${n}`
  )
)

const OptionsSchema = Schema.Struct({
  pipeline: Schema.String.check(Schema.makeFilter((s: string) => s !== "" || "must be a non-empty string")),
  highWater: Schema.optionalKey(Share),
  lowWater: Schema.optionalKey(Share),
  interval: Schema.optionalKey(
    Schema.declare(isPositiveDuration, { expected: `a positive finite duration such as "1 second"` })
  ),
  name: Schema.optionalKey(Schema.String)
})

const decode = ConfigError.decoder(COMPONENT, OptionsSchema)

/**
 * What one read of a server's memory found.
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryReading {
  /** `used_memory` minus `mem_not_counted_for_evict`: what Redis compares with `maxmemory`. */
  readonly used: number
  /** 0 when unset. */
  readonly maxmemory: number
  readonly policy: string
  /** Keys with a TTL (INFO keyspace `expires`, all databases); read only under a `volatile-*` policy. */
  readonly volatileKeys: number | undefined
}

const infoFields = (text: string): Map<string, string> => {
  const fields = new Map<string, string>()
  for (const line of text.split(/\r?\n/)) {
    const colon = line.indexOf(":")
    if (colon > 0 && !line.startsWith("#")) fields.set(line.slice(0, colon), line.slice(colon + 1).trim())
  }
  return fields
}

const numberField = (fields: Map<string, string>, name: string): number => {
  const value = Number(fields.get(name) ?? "0")
  return Number.isFinite(value) ? value : 0
}

const readNode = async (client: { info: (section: string) => Promise<string> }): Promise<MemoryReading> => {
  const memory = infoFields(await client.info("memory"))
  const policy = memory.get("maxmemory_policy") ?? "noeviction"
  let volatileKeys: number | undefined
  if (policy.startsWith("volatile-")) {
    volatileKeys = 0
    for (const [key, value] of infoFields(await client.info("keyspace"))) {
      if (!key.startsWith("db")) continue
      volatileKeys += Number(/(?:^|,)expires=(\d+)/.exec(value)?.[1] ?? "0")
    }
  }
  return {
    used: numberField(memory, "used_memory") - numberField(memory, "mem_not_counted_for_evict"),
    maxmemory: numberField(memory, "maxmemory"),
    policy,
    volatileKeys
  }
}

const readAll = (client: Client): Promise<ReadonlyArray<MemoryReading>> =>
  "nodes" in client && typeof client.nodes === "function"
    ? Promise.all(client.nodes("master").map(readNode))
    : readNode(client).then((r) => [r])

/**
 * Reads `INFO memory` of the server in context (every master of a cluster).
 *
 * @since 0.1.0
 * @category reading
 */
export const read: Effect.Effect<ReadonlyArray<MemoryReading>, RedisError, RedisConnection> = RedisConnection.use(
  (redis) => redis.run(readAll, { command: "INFO" })
)

/** Whether Redis refuses writes when full under this policy (rather than evicting other keys to make room). */
const refusesWhenFull = (reading: MemoryReading) =>
  reading.policy === "noeviction" || (reading.policy.startsWith("volatile-") && reading.volatileKeys === 0)

const percent = (share: number) => `${Math.round(share * 1000) / 10}%`

/**
 * A memory guard: a write gate (see `internal/gate.ts`) the sink awaits before each batch. Fails with a
 * `ConfigError` when `lowWater` is not below `highWater` or a share is outside (0, 1].
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Gate.WriteGate, ConfigError.ConfigError, RedisConnection> =>
  Effect.gen(function* () {
    const decoded = yield* decode(options)
    const highWater = decoded.highWater ?? 0.9
    const lowWater = decoded.lowWater ?? (highWater > 0.2 ? Math.min(0.8, highWater - 0.1) : highWater / 2)
    if (!(lowWater < highWater)) {
      return yield* ConfigError.make(
        COMPONENT,
        ["lowWater"],
        `must be below highWater (${highWater}), got ${lowWater}`,
        "set lowWater a little below highWater, e.g. highWater 0.9 and lowWater 0.8"
      )
    }
    const interval = decoded.interval ?? Duration.seconds(1)
    const name = decoded.name ?? "memory"
    let holding = false
    let warnedEviction = false

    const decide = (readings: ReadonlyArray<MemoryReading>) =>
      Effect.gen(function* () {
        const guarded = readings.filter((r) => r.maxmemory > 0)
        if (guarded.length === 0) {
          holding = false
          return Gate.pass
        }
        const evicting = guarded.filter((r) => r.policy.startsWith("allkeys-"))
        if (evicting.length > 0 && !warnedEviction) {
          warnedEviction = true
          yield* Effect.logWarning(
            `maxmemory-policy is ${evicting[0]!.policy}: when memory is full Redis evicts any key, streams and the ` +
              `checkpoint included, instead of refusing writes; the memory guard does not hold writes under it. ` +
              `Fix: CONFIG SET maxmemory-policy noeviction (or volatile-lru, keeping TTLs off the streams)`
          ).pipe(Effect.annotateLogs({ pipeline: decoded.pipeline, gate: name }))
        }
        const refusing = guarded.filter(refusesWhenFull)
        if (refusing.length === 0) {
          holding = false
          return Gate.pass
        }
        const fullest = refusing.reduce((a, b) => (a.used / a.maxmemory >= b.used / b.maxmemory ? a : b))
        const share = fullest.used / fullest.maxmemory
        holding = holding ? share >= lowWater : share > highWater
        return holding
          ? Gate.hold(
              `used ${percent(share)} of maxmemory (${fullest.used} of ${fullest.maxmemory} bytes; holds above ` +
                `${percent(highWater)}, resumes below ${percent(lowWater)})`
            )
          : Gate.pass
      })

    return yield* Gate.make({
      name,
      pipeline: decoded.pipeline,
      probe: Effect.flatMap(read, decide),
      minInterval: interval
    })
  })
