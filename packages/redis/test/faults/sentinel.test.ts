import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisTopology from "@redflow/testing/RedisTopology"
import { uniquePrefix } from "../support.ts"
import { dataLoss, landed, sleep, start, untilCheckpoint } from "./harness.ts"

describe("Sentinel failover (spec scenario: master fails, Sentinel promotes a replica)", () => {
  it.live(
    "SIGKILL of the master: the sink follows the new master and finishes; acknowledged writes lost are reported",
    () =>
      Effect.gen(function* () {
        const sentinel = yield* RedisTopology.sentinel()
        const prefix = uniquePrefix("failover")
        const count = 16_000
        const run = yield* start({
          url: sentinel.url,
          prefix,
          count,
          ratePerSecond: 4_000,
          // Writes the old master acknowledged and never replicated are lost: say so and go on, so that the test can
          // count them against what the sink reported.
          sink: { guarantee: "exactly-once", batch: { maxEvents: 200 }, onDataLoss: "continue" },
          connection: { commandTimeout: "1 second", connectTimeout: "1 second", socketTimeout: "2 seconds" }
        })
        // Kill the master once the sink is writing (on a loaded machine that can take more than a second).
        yield* untilCheckpoint(run, 1_000)
        const acknowledgedAtKill = yield* run.checkpoint
        yield* RedisTopology.kill(sentinel.master.pid)
        const killedAt = Date.now()
        const promoted = yield* sentinel.waitForNewMaster({ previous: sentinel.master, timeout: "20 seconds" })
        expect(promoted.port).toBe(sentinel.replica.port)
        yield* Fiber.join(run.fiber)
        const recoveredMs = Date.now() - killedAt
        const result = yield* landed(promoted.url, prefix, count)
        // Only writes the old master acknowledged but had not yet replicated can be missing; everything after the
        // failover was re-sent to the new master.
        expect(result.missing.every((n) => n <= acknowledgedAtKill)).toBe(true)
        expect(result.duplicates).toBe(0)
        // A loss is never silent: the mark on the new master went back, and the sink counted it.
        if (result.missing.length > 0) expect(yield* dataLoss(prefix)).toBeGreaterThanOrEqual(1)
        console.log(
          `failover without WAIT: ${result.missing.length} acknowledged writes lost; finished ${recoveredMs} ms after the kill`
        )
      })
  )

  it.live(
    "with waitForReplicas: no acknowledged write is lost; the checkpoint waits for a replica after failover",
    () =>
      Effect.gen(function* () {
        const sentinel = yield* RedisTopology.sentinel()
        const prefix = uniquePrefix("failover-wait")
        const count = 16_000
        const run = yield* start({
          url: sentinel.url,
          prefix,
          count,
          ratePerSecond: 4_000,
          sink: {
            guarantee: "exactly-once",
            batch: { maxEvents: 200 },
            waitForReplicas: { replicas: 1, timeout: "500 millis" }
          },
          connection: { commandTimeout: "1 second", connectTimeout: "1 second", socketTimeout: "2 seconds" }
        })
        yield* untilCheckpoint(run, 1)
        yield* RedisTopology.kill(sentinel.master.pid)
        const promoted = yield* sentinel.waitForNewMaster({ previous: sentinel.master, timeout: "20 seconds" })
        // The promoted master has no replica: WAIT cannot be satisfied, so the checkpoint must hold.
        yield* sleep(1_500)
        const held = yield* run.checkpoint
        yield* sleep(1_000)
        expect(yield* run.checkpoint).toBe(held)
        expect(run.fiber.pollUnsafe()).toBeUndefined()
        // An operator brings a replacement replica: the sink goes on.
        yield* RedisTestServer.make({ args: ["--replicaof", promoted.host, String(promoted.port)] })
        yield* Fiber.join(run.fiber)
        const result = yield* landed(promoted.url, prefix, count)
        expect(result.missing).toEqual([])
        expect(result.duplicates).toBe(0)
        console.log(`failover with WAIT: ${result.missing.length} acknowledged writes lost`)
      })
  )
})
