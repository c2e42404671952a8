import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { Metrics } from "@redflow/core"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisTopology from "@redflow/testing/RedisTopology"
import { uniquePrefix, withClient } from "../support.ts"
import { counter, landed, sleep, start } from "./harness.ts"

/** Polls until the sink has reported a RedisTimeout; returns the milliseconds since `since`. */
const firstTimeout = (pipeline: string, since: number) =>
  Effect.gen(function* () {
    for (;;) {
      const n = yield* counter(Metrics.sinkErrors, { pipeline, sink: "redis", kind: "RedisTimeout" })
      if (n > 0) return Date.now() - since
      yield* sleep(10)
    }
  })

describe("connection timeout (spec: command hangs → timeout after configured duration)", () => {
  for (const guarantee of ["exactly-once", "at-least-once"] as const) {
    it.live(`${guarantee}: CLIENT PAUSE WRITE gives RedisTimeout after commandTimeout, then recovery`, () =>
      Effect.gen(function* () {
        const server = yield* RedisTestServer.make({ useEnv: false })
        const prefix = uniquePrefix(`pause-${guarantee}`)
        const run = yield* start({
          url: server.url,
          prefix,
          count: 8_000,
          ratePerSecond: 4_000,
          sink: { guarantee, batch: { maxEvents: 200 } },
          connection: { commandTimeout: "300 millis" }
        })
        yield* sleep(500)
        const paused = Date.now()
        yield* Effect.promise(() => withClient(server.url, (c) => c.call("CLIENT", "PAUSE", "2000", "WRITE")))
        const elapsed = yield* firstTimeout(prefix, paused)
        // The first command sent into the pause times out after the configured 300 ms (plus scheduling slack).
        expect(elapsed).toBeGreaterThanOrEqual(290)
        expect(elapsed).toBeLessThan(900)
        const checkpoint = yield* run.checkpoint
        yield* sleep(1_000)
        expect(yield* run.checkpoint).toBe(checkpoint)
        yield* Fiber.join(run.fiber)
        const result = yield* landed(server.url, prefix, 8_000)
        expect(result.missing).toEqual([])
        // Timed-out writes still run when the pause ends: exactly-once skips them, at-least-once may not.
        if (guarantee === "exactly-once") {
          expect(result.duplicates).toBe(0)
          expect(result.outOfOrder).toBe(0)
        }
      })
    )
  }

  it.live("exactly-once: SIGSTOP of the server for 2 s, then SIGCONT: timeouts, recovery, no duplicates", () =>
    Effect.gen(function* () {
      const server = yield* RedisTestServer.make({ useEnv: false })
      const prefix = uniquePrefix("sigstop")
      const run = yield* start({
        url: server.url,
        prefix,
        count: 8_000,
        ratePerSecond: 4_000,
        sink: { guarantee: "exactly-once", batch: { maxEvents: 200 } },
        connection: { commandTimeout: "300 millis", socketTimeout: "1 second", connectTimeout: "1 second" }
      })
      yield* sleep(500)
      const stopped = Date.now()
      yield* RedisTopology.pause(server.pid!)
      const elapsed = yield* firstTimeout(prefix, stopped)
      expect(elapsed).toBeGreaterThanOrEqual(290)
      expect(elapsed).toBeLessThan(900)
      yield* sleep(2_000 - (Date.now() - stopped))
      yield* RedisTopology.resume(server.pid!)
      yield* Fiber.join(run.fiber)
      const result = yield* landed(server.url, prefix, 8_000)
      expect(result.missing).toEqual([])
      expect(result.duplicates).toBe(0)
      expect(result.outOfOrder).toBe(0)
    })
  )
})
