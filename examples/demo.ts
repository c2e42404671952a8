/**
 * The library in a few lines: the synthetic source into Redis Streams through `RedisStreamSink.deliver`, then a
 * summary of what landed. (`pnpm demo` runs the fuller `redflow demo` of packages/cli: source, sink and a consumer
 * group together, with progress, metrics and Ctrl-C draining.)
 *
 * Redis: `REDIS_URL` when set, else a `redis-server` spawned on a free port, else a Docker container.
 * Run with `node examples/demo.ts` (`EVENTS=50000 node examples/demo.ts` for more).
 */
import { Console, Effect, Layer, Stream } from "effect"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"

const events = Number(process.env.EVENTS ?? 20_000)

const program = Effect.gen(function* () {
  const server = yield* RedisTestServer.make()
  yield* Console.log(
    `Redis: ${server.url} (${server.source === "env" ? "REDIS_URL" : server.source === "process" ? "spawned redis-server" : "container"})`
  )
  const prefix = `demo.${Date.now().toString(36)}`
  const started = Date.now()
  const summary = yield* SyntheticSource.make({ count: events, payloadBytes: 512 }).pipe(
    RedisStreamSink.deliver({ stream: `${prefix}.\${source.table}`, key: "${key.id}", pipeline: "demo" }),
    Stream.tap((batch) =>
      Effect.sync(() =>
        process.stdout.write(
          `\r  delivered up to position ${batch.position} (${batch.events} events in the last batch)   `
        )
      )
    ),
    Stream.runFold(
      () => ({ events: 0, batches: 0, streams: new Map<string, number>() }),
      (acc, batch) => {
        for (const s of batch.streams) acc.streams.set(s.stream, (acc.streams.get(s.stream) ?? 0) + s.written)
        return { events: acc.events + batch.events, batches: acc.batches + 1, streams: acc.streams }
      }
    ),
    Effect.provide(Layer.mergeAll(RedisConnection.layer({ url: server.url }), CheckpointStore.layerMemory))
  )
  const seconds = (Date.now() - started) / 1000
  yield* Console.log(
    `\n${summary.events} events in ${summary.batches} batches, ${seconds.toFixed(2)} s (${Math.round(summary.events / seconds)} events/s)`
  )
  const redis = yield* Effect.scoped(
    Effect.gen(function* () {
      const connection = yield* RedisConnection.make({ url: server.url })
      const lines: Array<string> = []
      for (const [stream, written] of summary.streams) {
        const length = yield* connection.run((c) => c.xlen(stream))
        lines.push(`  ${stream}: ${written} written, XLEN ${length}`)
      }
      return lines
    })
  )
  yield* Console.log(["Streams:", ...redis].join("\n"))
})

Effect.runPromise(Effect.scoped(program)).catch((error) => {
  console.error(String(error))
  process.exit(1)
})
