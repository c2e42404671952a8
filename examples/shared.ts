/**
 * What every example needs around its point: a Redis server (`REDIS_URL`, else a spawned `redis-server`), demo
 * events written by the sink, and a main that runs until done or Ctrl-C (which interrupts, so consumers shut down
 * gracefully).
 */
import { resolve } from "node:path"
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Schedule, Stream } from "effect"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import * as StreamAdmin from "@redflow/redis/StreamAdmin"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"

/** Whether the module was started with `node examples/<name>.ts` (rather than imported by its test). */
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
 * Runs an example's main against `REDIS_URL`, or a `redis-server` spawned for the run (stopped at the end), with a
 * `RedisConnection` to it. Ctrl-C interrupts the main.
 */
export const runExample = <A, E>(main: (url: string) => Effect.Effect<A, E, RedisConnection.RedisConnection>): void =>
  NodeRuntime.runMain(
    Effect.scoped(
      Effect.gen(function* () {
        const server = yield* RedisTestServer.make()
        yield* Console.log(`Redis: ${server.url} (${server.source === "env" ? "REDIS_URL" : "spawned for this run"})`)
        return yield* main(server.url).pipe(Effect.provide(RedisConnection.layer({ url: server.url })))
      })
    )
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
