/**
 * The README's "Using it" program, as it is printed there (a test checks that the two stay the same): 100,000
 * synthetic changes into `cdc.<db>.<table>` streams with `exactly-once`, resuming from `./checkpoints.json`.
 *
 * Run: `REDIS_URL=redis://localhost:6379 pnpm exec node examples/using-it.ts`. Without `REDIS_URL` (or with a
 * malformed one) it stops before connecting, with one `RedisConfigError` naming the variable, and exit code 1.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer, Option, Stream } from "effect"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"

const program = Effect.gen(function* () {
  const checkpoints = yield* CheckpointStore.CheckpointStore
  const from = yield* checkpoints.load("orders")
  return yield* SyntheticSource.make({
    count: 100_000,
    ...Option.match(from, { onNone: () => ({}), onSome: (p) => ({ from: p }) })
  }).pipe(
    Stream.run(
      RedisStreamSink.make({
        stream: "cdc.${source.db}.${source.table}",
        key: "${key.id}",
        pipeline: "orders",
        guarantee: "exactly-once",
        trim: { maxLen: 1_000_000 }
      })
    )
  )
})

program.pipe(
  Effect.provide(
    Layer.mergeAll(
      RedisConnection.layerConfig(), // REDIS_URL
      CheckpointStore.layerFile("./checkpoints.json")
    )
  ),
  NodeRuntime.runMain
)
