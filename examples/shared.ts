/**
 * What every example needs around its point: a Redis server (`REDIS_URL`, else a spawned `redis-server`), demo
 * events written by the sink, and a main that runs until done or Ctrl-C (which interrupts, so consumers shut down
 * gracefully).
 */
import { resolve } from "node:path"
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Config, Console, Effect, Option, Redacted, Result, Schedule, Stream } from "effect"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as ConfigError from "@redflow/core/ConfigError"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import * as RedisUrl from "@redflow/redis/RedisUrl"
import * as StreamAdmin from "@redflow/redis/StreamAdmin"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"

/** Whether the module was started with `pnpm exec node examples/<name>.ts` (rather than imported by its test). */
export const isMain = (meta: ImportMeta): boolean =>
  process.argv[1] !== undefined && resolve(process.argv[1]) === meta.filename

/**
 * Writes events through the sink (what a CDC pipeline does), entries keyed by the row's `id` unless `keyed` is
 * false (the sink dead-letters an event without a row, such as a truncate, when a key template is set).
 */
export const publish = (stream: string, events: Stream.Stream<CdcEvent>, options: { readonly keyed?: boolean } = {}) =>
  events.pipe(
    Stream.run(RedisStreamSink.make(options.keyed === false ? { stream } : { stream, key: "${key.id}" })),
    Effect.provide(CheckpointStore.layerMemory)
  )

/** `count` synthetic changes of the given tables, published to `stream`. */
export const publishSynthetic = (
  stream: string,
  count: number,
  options: { readonly tables?: ReadonlyArray<string>; readonly seed?: number } = {}
) =>
  publish(stream, SyntheticSource.make({ count, tables: [...(options.tables ?? ["orders"])], seed: options.seed ?? 1 }))

/**
 * The server an example runs against: `REDIS_URL` when set, checked before anything connects (a malformed one is a
 * `ConfigError` naming the variable; any URL form works, Sentinel and Cluster included), else a `redis-server`
 * spawned for the run (stopped at the end), else a container.
 */
export const redisServer = Effect.gen(function* () {
  const env = yield* Config.option(Config.Redacted("REDIS_URL"))
  if (Option.isSome(env) && Redacted.value(env.value).trim() !== "") {
    const parsed = RedisUrl.parse(env.value)
    if (parsed instanceof ConfigError.ConfigError) {
      return yield* ConfigError.make("the example", ["REDIS_URL"], parsed.reason, parsed.fix)
    }
    return { url: Redacted.value(env.value), label: `${RedisUrl.describe(parsed)} (REDIS_URL)` }
  }
  const spawned = yield* RedisTestServer.make()
  return {
    url: spawned.url,
    label: `${spawned.url} (${spawned.source === "container" ? "a container" : "a redis-server"} started for this run)`
  }
})

/** A failure as one line (`ConfigError: the example option REDIS_URL: Invalid Redis URL: …`), without the stack. */
const oneLine = (error: unknown): string => {
  if (typeof error !== "object" || error === null) return String(error)
  const tag = "_tag" in error && typeof error._tag === "string" ? error._tag : error.constructor.name
  const message = "message" in error && typeof error.message === "string" ? error.message : JSON.stringify(error)
  return `${tag}: ${message}`.replace(/\s*\n\s*/g, " ")
}

/** What a failed example prints on stderr: one line for a typed error, the whole cause for a defect (a bug). */
export const report = (cause: Cause.Cause<unknown>) => {
  if (Cause.hasInterruptsOnly(cause)) return Effect.void
  const error = Cause.findError(cause)
  return Console.error(Result.isSuccess(error) ? oneLine(error.success) : Cause.pretty(cause))
}

/**
 * Runs an example's main with `NodeRuntime.runMain` against `REDIS_URL` or a server started for the run, with a
 * `RedisConnection` to it. Ctrl-C interrupts the main; a failure prints one line on stderr and exits with code 1.
 */
export const runExample = <A, E>(main: (url: string) => Effect.Effect<A, E, RedisConnection.RedisConnection>): void =>
  NodeRuntime.runMain(
    Effect.scoped(
      Effect.gen(function* () {
        const { url, label } = yield* redisServer
        yield* Console.log(`Redis: ${label}`)
        return yield* main(url).pipe(Effect.provide(RedisConnection.layer({ url })))
      })
    ).pipe(Effect.tapCause(report)),
    { disableErrorReporting: true }
  )

/** One line per event, for the examples' output. */
export const describe = (event: CdcEvent): string => {
  const row = event.after ?? event.before
  return `${event.op} ${event.source.table} id=${String(row?.id)} (event ${event.id.slice(0, 8)}…)`
}

/** Waits (polling XINFO GROUPS) until the group has read everything and acknowledged all it read. */
export const allAcknowledged = (stream: string, group: string) =>
  StreamAdmin.groups(stream).pipe(
    Effect.map((groups) => groups.find((g) => g.name === group)),
    Effect.repeat({
      until: (g) => g !== undefined && g.lag === 0 && g.pending === 0,
      schedule: Schedule.spaced("100 millis")
    })
  )

/**
 * The demo around a spec consumer: publishes `count` events to `orders.events`, runs the consumer (printing each
 * event) until the group has acknowledged them all, then stops it (the consumer shuts down gracefully).
 */
export const demo = <E, R>(
  consume: (process: (event: CdcEvent) => Effect.Effect<void>) => Effect.Effect<unknown, E, R>,
  count = 20
) =>
  Effect.gen(function* () {
    yield* publishSynthetic("orders.events", count)
    yield* Effect.raceFirst(
      consume((event) => Console.log(`processed ${describe(event)}`)),
      allAcknowledged("orders.events", "mygroup")
    )
    const group = (yield* StreamAdmin.groups("orders.events")).find((g) => g.name === "mygroup")
    yield* Console.log(`done: group mygroup read ${group?.entriesRead} entries, ${group?.pending} pending`)
  })
