/**
 * The sink with `memoryGuard` on, against a real redis-server with a real `maxmemory`: while memory is above the high
 * water the sink writes nothing (and does not run into OOM); once memory is freed every event is written.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Stream } from "effect"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisConnection from "../../src/RedisConnection.ts"
import * as RedisStreamSink from "../../src/RedisStreamSink.ts"
import { uniquePrefix, withClient } from "../support.ts"

const sleep = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))
const cmd = <A>(url: string, f: Parameters<typeof withClient<A>>[1]) => Effect.promise(() => withClient(url, f))

const usedMemory = (url: string) =>
  cmd(url, async (c) => {
    const info = await c.info("memory")
    const field = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, "m").exec(info)?.[1] ?? "0")
    return field("used_memory") - field("mem_not_counted_for_evict")
  })

describe("RedisStreamSink memoryGuard", () => {
  it.live(
    "above the high water nothing is written and nothing fails; after memory is freed every event is written once",
    () =>
      Effect.gen(function* () {
        const server = yield* RedisTestServer.make({ args: ["--maxmemory-policy", "noeviction"] })
        const limit = (yield* usedMemory(server.url)) + 8 * 1024 * 1024
        yield* cmd(server.url, (c) => c.config("SET", "maxmemory", String(limit)))
        const ballast = `${uniquePrefix("sinkmem")}.ballast`
        for (let i = 0; (yield* usedMemory(server.url)) < limit * 0.95; i++) {
          yield* cmd(server.url, (c) => c.set(`${ballast}:${i}`, "x".repeat(64 * 1024)))
        }
        const stream = `${uniquePrefix("sinkmem")}.events`
        const run = SyntheticSource.make({ count: 2_000, payloadBytes: 200 }).pipe(
          Stream.run(RedisStreamSink.make({ stream, pipeline: stream, memoryGuard: { interval: "50 millis" } })),
          Effect.provide(Layer.merge(RedisConnection.layer({ url: server.url }), CheckpointStore.layerMemory))
        )
        const fiber = yield* Effect.forkChild(run)

        yield* sleep(1_500)
        expect(fiber.pollUnsafe()).toBeUndefined() // still running: held, not failed with OOM
        expect(yield* cmd(server.url, (c) => c.xlen(stream))).toBe(0)

        const keys = yield* cmd(server.url, (c) => c.keys(`${ballast}:*`))
        yield* cmd(server.url, (c) => c.del(...keys))
        const exit = yield* Fiber.await(fiber)
        expect(Exit.isSuccess(exit)).toBe(true)
        if (Exit.isSuccess(exit)) expect(exit.value.events).toBe(2_000)
        expect(yield* cmd(server.url, (c) => c.xlen(stream))).toBe(2_000)
      }),
    { timeout: 60_000 }
  )

  it.effect("a memoryGuard option that cannot work is a ConfigError naming the option", () =>
    Effect.gen(function* () {
      const error = yield* SyntheticSource.make({ count: 1 }).pipe(
        Stream.run(RedisStreamSink.make({ stream: "x", memoryGuard: { highWater: 0.5, lowWater: 0.7 } })),
        Effect.provide(
          Layer.merge(RedisConnection.layer({ url: "redis://127.0.0.1:6379" }), CheckpointStore.layerMemory)
        ),
        Effect.flip
      )
      expect(error._tag).toBe("ConfigError")
      expect(error.message).toMatch(/lowWater/)
    })
  )
})
