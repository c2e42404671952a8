/**
 * The checkpoint is off the write path: a checkpoint write that takes long holds back no write to Redis (it used to
 * hold a write slot until it finished, so at most four batches landed while one checkpoint was written), and
 * checkpoints are written at most every `batch.checkpointInterval`, the batches written meanwhile sharing one.
 */
import { expect, layer } from "@effect/vitest"
import { Deferred, type Duration, Effect, Fiber, Layer, Stream } from "effect"
import { Position } from "@redflow/core"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisConnection from "../src/RedisConnection.ts"
import * as RedisStreamSink from "../src/RedisStreamSink.ts"
import { uniquePrefix, withClient } from "./support.ts"

/** An in-memory store that counts its commits and, while `gate` is open (not yet succeeded), holds each one. */
const gatedStore = (gate: Deferred.Deferred<void> | undefined) =>
  Effect.map(CheckpointStore.makeMemory(), ({ store, contents }) => {
    let commits = 0
    const service = CheckpointStore.CheckpointStore.of({
      load: store.load,
      commit: (key, position) =>
        Effect.suspend(() => {
          commits++
          return gate === undefined
            ? store.commit(key, position)
            : Effect.andThen(Deferred.await(gate), store.commit(key, position))
        })
    })
    return { service, contents, commits: () => commits }
  })

const lengthOf = (url: string, stream: string) => Effect.promise(() => withClient(url, (c) => c.xlen(stream)))

layer(RedisTestServer.layer(), { excludeTestServices: true })(
  "RedisStreamSink: the checkpoint off the write path",
  (it) => {
    it.effect(
      "while a checkpoint write is stuck, every later batch still lands in Redis; the checkpoint moves only once it is stored",
      () =>
        Effect.gen(function* () {
          const { url } = yield* RedisTestServer.RedisTestServer
          const stream = `${uniquePrefix("stuck")}.orders`
          const gate = yield* Deferred.make<void>()
          const store = yield* gatedStore(gate)
          const count = 40
          // Paced, so that nearly every event is a batch of its own, as transactions arriving one at a time are.
          const run = yield* SyntheticSource.make({ count, tables: ["orders"], ratePerSecond: 200 }).pipe(
            Stream.run(
              RedisStreamSink.make({
                stream,
                pipeline: "stuck",
                guarantee: "exactly-once",
                batch: { checkpointInterval: 0 }
              })
            ),
            Effect.provide(
              Layer.mergeAll(
                RedisConnection.layer({ url }),
                Layer.succeed(CheckpointStore.CheckpointStore, store.service)
              )
            ),
            Effect.forkScoped
          )
          // Every event lands although the first checkpoint write has not finished (before, four batches did).
          let landed = 0
          for (let i = 0; i < 400 && landed < count; i++) {
            yield* Effect.sleep("25 millis")
            landed = yield* lengthOf(url, stream)
          }
          expect(landed).toBe(count)
          expect(store.commits()).toBeGreaterThanOrEqual(1)
          // Nothing is stored while the write is stuck: a checkpoint is only ever what the store acknowledged.
          expect((yield* store.contents.contents).get("stuck")).toBeUndefined()
          yield* Deferred.succeed(gate, undefined)
          const summary = yield* Fiber.join(run)
          expect(summary.written).toBe(count)
          expect(summary.batches).toBeGreaterThan(4)
          expect((yield* store.contents.contents).get("stuck")).toBe(Position.fromSequence(count))
        })
    )

    it.effect(
      "batches written within one checkpointInterval share a checkpoint write; with 0, each batch has its own",
      () =>
        Effect.gen(function* () {
          const { url } = yield* RedisTestServer.RedisTestServer
          const prefix = uniquePrefix("interval")
          const count = 40
          const deliver = (name: string, checkpointInterval: Duration.Input) =>
            Effect.gen(function* () {
              const store = yield* gatedStore(undefined)
              const batches = yield* SyntheticSource.make({ count, tables: ["orders"], ratePerSecond: 200 }).pipe(
                RedisStreamSink.deliver({ stream: `${prefix}.${name}`, pipeline: name, batch: { checkpointInterval } }),
                Stream.runCollect,
                Effect.provide(
                  Layer.mergeAll(
                    RedisConnection.layer({ url }),
                    Layer.succeed(CheckpointStore.CheckpointStore, store.service)
                  )
                )
              )
              return { batches, commits: store.commits(), stored: (yield* store.contents.contents).get(name) }
            })
          const every = yield* deliver("every", "0 millis")
          const spaced = yield* deliver("spaced", "5 seconds")
          for (const run of [every, spaced]) {
            expect(run.batches.reduce((n, b) => n + b.events, 0)).toBe(count)
            expect(run.stored).toBe(Position.fromSequence(count))
            // Each batch is emitted once its checkpoint is stored, and that checkpoint covers it.
            for (const b of run.batches) expect(Position.compare(b.position, b.checkpoint)).toBeLessThanOrEqual(0)
          }
          expect(every.batches.length).toBeGreaterThan(10)
          expect(every.commits).toBeGreaterThan(10)
          // The first checkpoint is written at once, the next one 5 s later covers every batch written since.
          expect(spaced.batches.length).toBeGreaterThan(10)
          expect(spaced.commits).toBeLessThanOrEqual(2)
          expect(new Set(spaced.batches.map((b) => b.checkpoint)).size).toBe(spaced.commits)
        })
    )
  }
)
