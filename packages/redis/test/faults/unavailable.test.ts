import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Schedule } from "effect"
import { Metrics } from "@redflow/core"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as ChaosProxy from "@redflow/testing/ChaosProxy"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { uniquePrefix, withClient } from "../support.ts"
import { counter, landed, sleep, start } from "./harness.ts"

describe("server unavailable (spec: connection refused → retries with backoff; blocks checkpoint)", () => {
  it.live("at start: the sink retries, the checkpoint stays put, delivery starts when the server comes up", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(() => RedisTestServer.freePort())
      const url = `redis://127.0.0.1:${port}`
      const prefix = uniquePrefix("down-at-start")
      const health = yield* PipelineHealth.make()
      const run = yield* start({ url, prefix, count: 3_000, sink: { batch: { maxEvents: 1000 } } }).pipe(
        Effect.provideService(PipelineHealth.PipelineHealth, health)
      )
      yield* sleep(1_500)
      // Nothing listens yet: connection refused, and nothing moved.
      expect(run.fiber.pollUnsafe()).toBeUndefined()
      expect(yield* run.checkpoint).toBe(0)
      const refusedRetries = yield* counter(Metrics.sinkRetries, {
        pipeline: prefix,
        sink: "redis",
        reason: "RedisUnavailable"
      })
      // Backoff, not a loop: each write in flight (up to four) retries on its own schedule, 100, 200, 400, 800 ms
      // (±20 %) within 1.5 s.
      expect(refusedRetries).toBeGreaterThanOrEqual(3)
      expect(refusedRetries).toBeLessThanOrEqual(4 * 7)
      // Backpressure: the source was pulled no further than the batches in flight (at-least-once: maxEvents across
      // both), one batch waiting and the chunk being offered.
      expect(yield* run.pulled).toBeLessThanOrEqual(1000 + 1000 + 2 * 100)

      // An application that tracks health sees the retried failures as the sink's last error.
      const components = yield* health.components
      expect(components[prefix]?.lastError).toContain("RedisUnavailable")

      yield* RedisTestServer.make({ port })
      const batches = yield* Fiber.join(run.fiber)
      expect(batches.reduce((n, b) => n + b.events, 0)).toBe(3_000)
      const result = yield* landed(url, prefix, 3_000)
      expect(result.missing).toEqual([])
      expect(result.duplicates).toBe(0)
    })
  )

  it.live("the try after an outage comes when the client reconnects, not when a long backoff runs out", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(() => RedisTestServer.freePort())
      const url = `redis://127.0.0.1:${port}`
      const prefix = uniquePrefix("down-then-ready")
      // A backoff of 60 s: without the reconnect cutting it short, nothing would be written before 60 s.
      const run = yield* start({
        url,
        prefix,
        count: 3_000,
        sink: { batch: { maxEvents: 1000 }, policies: { RedisUnavailable: Schedule.spaced("60 seconds") } }
      })
      yield* sleep(1_500)
      expect(yield* run.checkpoint).toBe(0)
      const startedAt = Date.now()
      yield* RedisTestServer.make({ port })
      yield* Fiber.join(run.fiber)
      // ioredis reconnects within 2 s (its reconnect delay is capped there); the sink tries again at once.
      expect(Date.now() - startedAt).toBeLessThan(30_000)
      const result = yield* landed(url, prefix, 3_000)
      expect(result.missing).toEqual([])
      expect(result.duplicates).toBe(0)
    })
  )

  for (const guarantee of ["at-least-once", "exactly-once"] as const) {
    it.live(`mid-run (${guarantee}): connections reset and refused for 2 s, then delivery resumes with no gap`, () =>
      Effect.gen(function* () {
        const server = yield* RedisTestServer.make({ useEnv: false })
        const proxy = yield* ChaosProxy.make({ target: { host: server.host, port: server.port } })
        const prefix = uniquePrefix(`down-mid-${guarantee}`)
        const run = yield* start({
          url: proxy.url,
          prefix,
          count: 12_000,
          ratePerSecond: 4_000,
          sink: { guarantee, batch: { maxEvents: 200 } }
        })
        yield* sleep(800)
        const reconnectsBefore = yield* counter(Metrics.reconnects, { client: "redflow" })
        proxy.refuse()
        proxy.resetAll()
        yield* sleep(300)
        const atOutage = yield* run.checkpoint
        const pulledAtOutage = yield* run.pulled
        expect(atOutage).toBeGreaterThan(0)
        yield* sleep(1_700)
        // While Redis is unreachable the checkpoint does not move and the source is not pulled past the queue bound.
        expect(yield* run.checkpoint).toBe(atOutage)
        // In flight: maxEvents across two batches (at-least-once) or two whole batches (exactly-once).
        const inFlight = guarantee === "at-least-once" ? 200 : 2 * 200
        expect((yield* run.pulled) - pulledAtOutage).toBeLessThanOrEqual(inFlight + 200 + 2 * 100)
        expect(run.fiber.pollUnsafe()).toBeUndefined()
        proxy.heal()
        yield* Fiber.join(run.fiber)
        const result = yield* landed(server.url, prefix, 12_000)
        expect(result.missing).toEqual([])
        if (guarantee === "exactly-once") expect(result.duplicates).toBe(0)
        else expect(result.duplicates).toBeLessThanOrEqual(200)
        expect(
          yield* counter(Metrics.sinkRetries, { pipeline: prefix, sink: "redis", reason: "RedisUnavailable" })
        ).toBeGreaterThan(0)
        expect(yield* counter(Metrics.reconnects, { client: "redflow" })).toBeGreaterThan(reconnectsBefore)
      })
    )
  }
})

describe("stream does not exist (spec: auto-created by XADD, no failure)", () => {
  it.live("the first batch creates each stream", () =>
    Effect.gen(function* () {
      const server = yield* RedisTestServer.make()
      const prefix = uniquePrefix("create")
      const before = yield* Effect.promise(() => withClient(server.url, (c) => c.exists(`${prefix}.orders`)))
      expect(before).toBe(0)
      const run = yield* start({ url: server.url, prefix, count: 30 })
      yield* Fiber.join(run.fiber)
      const types = yield* Effect.promise(() =>
        withClient(server.url, (c) =>
          Promise.all(["customers", "orders", "payments"].map((t) => c.type(`${prefix}.${t}`)))
        )
      )
      expect(types).toEqual(["stream", "stream", "stream"])
      expect((yield* landed(server.url, prefix, 30)).missing).toEqual([])
    })
  )
})
