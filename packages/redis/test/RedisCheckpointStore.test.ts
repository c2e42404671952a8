import { expect, layer } from "@effect/vitest"
import { Effect, Layer, Option, Stream } from "effect"
import { CheckpointStore } from "@redflow/core/CheckpointStore"
import * as Position from "@redflow/core/Position"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as PipelineLease from "../src/PipelineLease.ts"
import * as RedisCheckpointStore from "../src/RedisCheckpointStore.ts"
import * as RedisConnection from "../src/RedisConnection.ts"
import * as RedisStreamSink from "../src/RedisStreamSink.ts"
import { uniquePrefix, withClient } from "./support.ts"

layer(RedisTestServer.layer(), { excludeTestServices: true })("RedisCheckpointStore against a real Redis", (it) => {
  const stores = (url: string, key: string) =>
    RedisCheckpointStore.layer({ key }).pipe(Layer.provideMerge(RedisConnection.layer({ url })))

  it.effect("stores positions per key in one hash, and reads them back", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const hash = uniquePrefix("checkpoints")
      const result = yield* Effect.gen(function* () {
        const store = yield* CheckpointStore
        const none = yield* store.load("orders")
        yield* store.commit("orders", Position.fromSequence(41))
        yield* store.commit("orders", Position.fromSequence(42))
        yield* store.commit("payments", Position.fromSequence(7))
        return { none, orders: yield* store.load("orders"), payments: yield* store.load("payments") }
      }).pipe(Effect.provide(stores(url, hash)))
      expect(result.none).toEqual(Option.none())
      expect(result.orders).toEqual(Option.some(Position.fromSequence(42)))
      expect(result.payments).toEqual(Option.some(Position.fromSequence(7)))
      const raw = yield* Effect.promise(() => withClient(url, (c) => c.hgetall(hash)))
      expect(raw).toEqual({ orders: Position.fromSequence(42), payments: Position.fromSequence(7) })
    })
  )

  it.effect(
    "under a lease's fence, a commit with a superseded token writes nothing; one with the current token writes",
    () =>
      Effect.gen(function* () {
        const { url } = yield* RedisTestServer.RedisTestServer
        const hash = uniquePrefix("fenced")
        const fenceKey = PipelineLease.fenceKey(uniquePrefix("fenced-pipeline"))
        yield* Effect.promise(() => withClient(url, (c) => c.set(fenceKey, "7")))
        const under =
          (token: number) =>
          <E, R>(e: Effect.Effect<void, E, R>) =>
            Effect.provideService(e, PipelineLease.CheckpointFence, Option.some({ key: fenceKey, token }))
        const outcome = yield* Effect.gen(function* () {
          const store = yield* CheckpointStore
          // The current holder's token: written. A stale one: refused, the hash as the holder left it.
          yield* store.commit("orders", Position.fromSequence(50)).pipe(under(7))
          const stale = yield* store.commit("orders", Position.fromSequence(10)).pipe(under(6), Effect.flip)
          // Without a fence (no lease) the store commits as before.
          yield* store.commit("payments", Position.fromSequence(3))
          return stale
        }).pipe(Effect.provide(stores(url, hash)))
        expect(outcome).toMatchObject({ _tag: "CheckpointError", operation: "commit", key: "orders" })
        expect(outcome.cause).toMatchObject({ _tag: "RedisCommandError", code: "FENCED" })
        expect(outcome.message).toContain("FENCED 7")
        const raw = yield* Effect.promise(() => withClient(url, (c) => c.hgetall(hash)))
        expect(raw).toEqual({ orders: Position.fromSequence(50), payments: Position.fromSequence(3) })
      })
  )

  it.effect("a value that is not a position is a CheckpointError naming the hash", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const hash = uniquePrefix("corrupt")
      yield* Effect.promise(() => withClient(url, (c) => c.hset(hash, "orders", "not-a-position")))
      const error = yield* Effect.gen(function* () {
        return yield* (yield* CheckpointStore).load("orders")
      }).pipe(Effect.provide(stores(url, hash)), Effect.flip)
      expect(error._tag).toBe("CheckpointError")
      expect(error.message).toContain(hash)
      expect(error.message).toContain("not a position")
    })
  )

  it.effect("carries the sink's checkpoint: after a run it holds the last event's position", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const hash = uniquePrefix("sink-checkpoints")
      const prefix = uniquePrefix("sink")
      yield* SyntheticSource.make({ count: 2_500 }).pipe(
        Stream.run(RedisStreamSink.make({ stream: `${prefix}.\${source.table}`, pipeline: "orders" })),
        Effect.provide(stores(url, hash))
      )
      const stored = yield* Effect.promise(() => withClient(url, (c) => c.hget(hash, "orders")))
      expect(stored).toBe(Position.fromSequence(2_500))
    })
  )
})
