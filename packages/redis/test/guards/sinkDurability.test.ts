/**
 * The sink's `durability` option against real redis-servers started with different persistence settings: `require`
 * refuses to start on a server that can lose acknowledged writes on a restart (nothing written), and starts on one
 * with AOF `everysec`; the default `warn` writes either way.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Stream } from "effect"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisConnection from "../../src/RedisConnection.ts"
import * as RedisStreamSink from "../../src/RedisStreamSink.ts"
import { uniquePrefix, withClient } from "../support.ts"

const write = (url: string, stream: string, durability: RedisStreamSink.Options["durability"]) =>
  SyntheticSource.make({ count: 100 }).pipe(
    Stream.run(RedisStreamSink.make({ stream, pipeline: stream, ...(durability ? { durability } : {}) })),
    Effect.provide(Layer.merge(RedisConnection.layer({ url }), CheckpointStore.layerMemory))
  )

const xlen = (url: string, stream: string) => Effect.promise(() => withClient(url, (c) => c.xlen(stream)))

describe("RedisStreamSink durability", () => {
  it.live(
    "require: AOF off fails start-up with DurabilityError and the fix, nothing written; warn writes",
    () =>
      Effect.gen(function* () {
        const server = yield* RedisTestServer.make({ args: ["--appendonly", "no", "--save", ""] })
        const stream = `${uniquePrefix("sinkdur")}.events`
        const error = yield* Effect.flip(write(server.url, stream, "require"))
        expect(error._tag).toBe("DurabilityError")
        expect(error.message).toMatch(/appendonly yes/)
        expect(yield* xlen(server.url, stream)).toBe(0)

        const summary = yield* write(server.url, stream, undefined)
        expect(summary.events).toBe(100)
        expect(yield* xlen(server.url, stream)).toBe(100)
      }),
    { timeout: 60_000 }
  )

  it.live(
    "require: AOF with appendfsync everysec starts and writes",
    () =>
      Effect.gen(function* () {
        const server = yield* RedisTestServer.make({ args: ["--appendonly", "yes", "--appendfsync", "everysec"] })
        const stream = `${uniquePrefix("sinkdur")}.events`
        const summary = yield* write(server.url, stream, "require")
        expect(summary.events).toBe(100)
        expect(yield* xlen(server.url, stream)).toBe(100)
      }),
    { timeout: 60_000 }
  )
})
