import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { Metrics } from "@redflow/core"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { uniquePrefix, withClient } from "../support.ts"
import { counter, landed, sleep, start } from "./harness.ts"

describe("script cache lost (restart, failover, SCRIPT FLUSH)", () => {
  it.live("NOSCRIPT is answered by sending the script source once; no error, nothing lost or doubled", () =>
    Effect.gen(function* () {
      const server = yield* RedisTestServer.make({ useEnv: false })
      const prefix = uniquePrefix("noscript")
      const run = yield* start({
        url: server.url,
        prefix,
        count: 6_000,
        ratePerSecond: 6_000,
        sink: { guarantee: "exactly-once", batch: { maxEvents: 200 } }
      })
      for (let i = 0; i < 3; i++) {
        yield* sleep(250)
        yield* Effect.promise(() => withClient(server.url, (c) => c.script("FLUSH")))
      }
      yield* Fiber.join(run.fiber)
      const result = yield* landed(server.url, prefix, 6_000)
      expect(result.missing).toEqual([])
      expect(result.duplicates).toBe(0)
      expect(yield* counter(Metrics.sinkErrors, { pipeline: prefix, sink: "redis", kind: "RedisCommandError" })).toBe(0)
      const cached = yield* Effect.promise(() => withClient(server.url, (c) => c.info("memory")))
      expect(Number(/number_of_cached_scripts:(\d+)/.exec(cached)![1])).toBe(1)
    })
  )
})
