/**
 * The PostgreSQL source into Redis Streams: the program of packages/postgres/README.md, line for line (a test keeps
 * them identical). `DATABASE_URL=postgres://… REDIS_URL=redis://… pnpm exec node examples/postgres-to-redis.ts`
 * against a server with `wal_level=logical`; Ctrl-C or SIGTERM stops it (exit 130: `NodeRuntime.runMain`'s code for an
 * interrupted program), after the sink has checkpointed what it wrote.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Config, Effect, Layer, Stream } from "effect"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as Source from "@redflow/core/Source"
import { PostgresSource } from "@redflow/postgres"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"

const program = Effect.gen(function* () {
  const url = yield* Config.String("DATABASE_URL") // postgres://redflow@db:5432/shop
  const source = yield* PostgresSource.make({ url, tables: ["public.orders"], slot: "shop", publication: "shop" })
  const from = yield* (yield* CheckpointStore.CheckpointStore).load("shop")
  yield* source.stream(from).pipe(
    Stream.run(
      RedisStreamSink.make({
        stream: "cdc.${source.table}",
        key: "${key.id}",
        pipeline: "shop",
        guarantee: "exactly-once"
      })
    ),
    // each checkpoint commit of "shop" tells the source it may release the WAL up to there
    Source.acknowledgeCommits(source, "shop")
  )
})

program.pipe(
  Effect.scoped,
  Effect.provide(Layer.mergeAll(RedisConnection.layerConfig(), CheckpointStore.layerFile("./shop.checkpoint.json"))),
  NodeRuntime.runMain
)
