/**
 * The library in a few lines: the synthetic source into Redis Streams through `RedisStreamSink.deliver`, then a
 * summary of what landed. (`pnpm demo` runs the fuller `redflow demo` of packages/cli: source, sink and a consumer
 * group together, with progress, metrics and Ctrl-C draining.)
 *
 * Redis: `REDIS_URL` when set, else a `redis-server` spawned on a free port, else a Docker container.
 * Run with `pnpm exec node examples/demo.ts` (`EVENTS=50000 pnpm exec node examples/demo.ts` for more).
 */
import { Console, Effect, Stream } from "effect"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import { runExample } from "./shared.ts"

const events = Number(process.env.EVENTS ?? 20_000)

const program = Effect.gen(function* () {
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
    Effect.provide(CheckpointStore.layerMemory)
  )
  const seconds = (Date.now() - started) / 1000
  yield* Console.log(
    `\n${summary.events} events in ${summary.batches} batches, ${seconds.toFixed(2)} s (${Math.round(summary.events / seconds)} events/s)`
  )
  const connection = yield* RedisConnection.RedisConnection
  const lines: Array<string> = []
  for (const [stream, written] of summary.streams) {
    const length = yield* connection.run((c) => c.xlen(stream))
    lines.push(`  ${stream}: ${written} written, XLEN ${length}`)
  }
  yield* Console.log(["Streams:", ...lines].join("\n"))
})

runExample(() => program)
