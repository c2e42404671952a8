import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as RedisTopology from "@redflow/testing/RedisTopology"
import { uniquePrefix, withClient } from "../support.ts"
import { landed, sleep, start } from "./harness.ts"

describe("READONLY (spec: writes to a replica fail with READONLY; write to master only)", () => {
  it.live(
    "a fixed URL pointing at a replica: a few retries, then RedisReadOnly saying the URL points at a replica",
    () =>
      Effect.gen(function* () {
        const { replica } = yield* RedisTopology.primaryReplica()
        const prefix = uniquePrefix("readonly")
        const started = Date.now()
        const run = yield* start({ url: replica.url, prefix, count: 100 })
        const error = yield* Fiber.join(run.fiber).pipe(Effect.flip)
        const ms = Date.now() - started
        expect(error).toMatchObject({ _tag: "RedisReadOnly" })
        expect((error as Error).message).toContain("points at a read-only replica")
        expect((error as Error).message).toContain(`127.0.0.1:${replica.port}`)
        // Bounded: 5 retries, 200 ms doubling to a 2 s cap (±20 % jitter): about 5 s, not forever.
        expect(ms).toBeGreaterThan(3_500)
        expect(ms).toBeLessThan(30_000) // given up, not forever (room for a loaded machine)
        expect(yield* run.checkpoint).toBe(0)
      })
  )

  it.live("the replica is promoted while the sink retries: it carries on and delivers everything", () =>
    Effect.gen(function* () {
      const { replica } = yield* RedisTopology.primaryReplica()
      const prefix = uniquePrefix("promoted")
      const run = yield* start({ url: replica.url, prefix, count: 3_000, sink: { guarantee: "exactly-once" } })
      yield* sleep(700)
      expect(yield* run.checkpoint).toBe(0)
      yield* Effect.promise(() => withClient(replica.url, (c) => c.call("REPLICAOF", "NO", "ONE")))
      yield* Fiber.join(run.fiber)
      const result = yield* landed(replica.url, prefix, 3_000)
      expect(result.missing).toEqual([])
      expect(result.duplicates).toBe(0)
    })
  )
})
