import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { Metrics } from "@redflow/core"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { uniquePrefix, withClient } from "../support.ts"
import { counter, landed, sleep, start, TABLES } from "./harness.ts"

const streamLengths = (url: string, prefix: string) =>
  Effect.promise(() =>
    withClient(url, async (c) =>
      (await Promise.all(TABLES.map((t) => c.xlen(`${prefix}.${t}`)))).reduce((a, b) => a + b, 0)
    )
  )

describe("OOM (spec: fails batch; retries; checkpoint only after all events acknowledged)", () => {
  for (const guarantee of ["exactly-once", "at-least-once"] as const) {
    it.live(
      `${guarantee}: over maxmemory mid-run nothing is half-written; when memory frees every event lands once`,
      () =>
        Effect.gen(function* () {
          const server = yield* RedisTestServer.make({ args: ["--maxmemory-policy", "noeviction"] })
          const prefix = uniquePrefix(`oom-${guarantee}`)
          const run = yield* start({
            url: server.url,
            prefix,
            count: 10_000,
            ratePerSecond: 5_000,
            sink: { guarantee, batch: { maxEvents: 200 } }
          })
          yield* sleep(600)
          yield* Effect.promise(() => withClient(server.url, (c) => c.config("SET", "maxmemory", "1")))
          yield* sleep(300)
          const checkpoint = yield* run.checkpoint
          const lengths = yield* streamLengths(server.url, prefix)
          expect(checkpoint).toBeGreaterThan(0)
          // What landed past the checkpoint is at most the batch that was in flight when memory ran out.
          expect(lengths - checkpoint).toBeGreaterThanOrEqual(0)
          expect(lengths - checkpoint).toBeLessThanOrEqual(200)
          yield* sleep(1_500)
          // Blocked: every write refused whole, the checkpoint held, the sink still retrying.
          expect(yield* run.checkpoint).toBe(checkpoint)
          expect(yield* streamLengths(server.url, prefix)).toBe(lengths)
          expect(run.fiber.pollUnsafe()).toBeUndefined()
          expect(
            yield* counter(Metrics.sinkErrors, { pipeline: prefix, sink: "redis", kind: "RedisOutOfMemory" })
          ).toBeGreaterThan(2)

          yield* Effect.promise(() => withClient(server.url, (c) => c.config("SET", "maxmemory", "0")))
          yield* Fiber.join(run.fiber)
          const result = yield* landed(server.url, prefix, 10_000)
          expect(result.missing).toEqual([])
          // An OOM refusal is a known outcome (the script did not run), so even at-least-once writes nothing twice.
          expect(result.duplicates).toBe(0)
          expect(result.outOfOrder).toBe(0)
        })
    )
  }

  it.live("for contrast: a plain pipeline of XADDs near maxmemory is half-written, the sink's script is not", () =>
    Effect.gen(function* () {
      const server = yield* RedisTestServer.make({ args: ["--maxmemory-policy", "noeviction"] })
      const prefix = uniquePrefix("oom-contrast")
      const used = yield* Effect.promise(() =>
        withClient(server.url, async (c) => Number(/used_memory:(\d+)/.exec(await c.info("memory"))![1]))
      )
      yield* Effect.promise(() => withClient(server.url, (c) => c.config("SET", "maxmemory", String(used + 50_000))))
      const payload = "x".repeat(1024)
      const results = yield* Effect.promise(() =>
        withClient(server.url, async (c) => {
          const p = c.pipeline()
          for (let i = 0; i < 200; i++) p.xadd(`${prefix}.plain`, "*", "event", payload)
          return (await p.exec()) ?? []
        })
      )
      const failed = results.filter(([e]) => e !== null).length
      expect(failed).toBeGreaterThan(0)
      expect(failed).toBeLessThan(200) // half-written: some landed, some refused
    })
  )
})
