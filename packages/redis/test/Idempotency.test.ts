import { describe, expect, it, layer } from "@effect/vitest"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { CdcEvent, Position } from "@redflow/core"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Idempotency from "../src/Idempotency.ts"
import * as RedisConnection from "../src/RedisConnection.ts"
import { uniquePrefix, withClient } from "./support.ts"

const event = (n: number) =>
  CdcEvent.make({
    op: "c",
    before: null,
    after: { id: n },
    source: { connector: "test", name: "test", db: "shop", table: "orders", ts_ms: 0 },
    ts_ms: 0,
    position: Position.fromSequence(n)
  })

describe("Idempotency in memory", () => {
  it.effect("once: processes an id the first time, skips it after, and forgets it after the TTL", () =>
    Effect.gen(function* () {
      const store = yield* Idempotency.makeMemory({ ttl: "1 minute" })
      let runs = 0
      const process = Effect.sync(() => runs++)
      expect(yield* Idempotency.once(store, "e1", process)).toBe("processed")
      expect(yield* Idempotency.once(store, "e1", process)).toBe("duplicate")
      expect(runs).toBe(1)
      yield* TestClock.adjust("59 seconds")
      expect(yield* store.isProcessed("e1")).toBe(true)
      yield* TestClock.adjust("1 second")
      expect(yield* store.isProcessed("e1")).toBe(false)
      expect(yield* Idempotency.once(store, "e1", process)).toBe("processed")
      expect(runs).toBe(2)
    })
  )

  it.effect("a failed processing is not marked: the redelivery runs it again", () =>
    Effect.gen(function* () {
      const store = yield* Idempotency.makeMemory()
      const failed = yield* Effect.flip(Idempotency.once(store, "e1", Effect.fail("boom")))
      expect(failed).toBe("boom")
      expect(yield* store.isProcessed("e1")).toBe(false)
      expect(yield* Idempotency.once(store, "e1", Effect.void)).toBe("processed")
    })
  )

  it.effect("skipDuplicates wraps a handler by event id", () =>
    Effect.gen(function* () {
      const store = yield* Idempotency.makeMemory()
      const seen: Array<number> = []
      const handler = Idempotency.skipDuplicates(store)((_: CdcEvent.CdcEvent, attempt: number) =>
        Effect.sync(() => seen.push(attempt))
      )
      expect(yield* handler(event(1), 1)).toBe("processed")
      expect(yield* handler(event(1), 2)).toBe("duplicate")
      expect(yield* handler(event(2), 3)).toBe("processed")
      expect(seen).toEqual([1, 3])
    })
  )
})

layer(RedisTestServer.layer(), { excludeTestServices: true })("Idempotency in Redis", (it) => {
  it.effect("marks with SET key 1 NX PX ttl: the first mark wins and keeps its expiry", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const prefix = `${uniquePrefix("dedup")}:`
      // Two processes' connections (closed with the test's scope).
      const [one, two] = [yield* RedisConnection.make({ url }), yield* RedisConnection.make({ url })]
      const store = yield* Idempotency.makeRedis({ prefix, ttl: "10 seconds" }).pipe(
        Effect.provideService(RedisConnection.RedisConnection, one)
      )
      expect(yield* store.isProcessed("e1")).toBe(false)
      expect(yield* store.markProcessed("e1")).toBe(true)
      expect(yield* store.markProcessed("e1")).toBe(false)
      expect(yield* store.isProcessed("e1")).toBe(true)
      const [value, ttl] = yield* Effect.promise(() =>
        withClient(url, (c) => Promise.all([c.get(`${prefix}e1`), c.pttl(`${prefix}e1`)]))
      )
      expect(value).toBe("1")
      expect(ttl).toBeGreaterThan(9_000)
      expect(ttl).toBeLessThanOrEqual(10_000)

      // Shared by every consumer of a group: another process's store sees the same marks.
      const other = yield* Idempotency.makeRedis({ prefix }).pipe(
        Effect.provideService(RedisConnection.RedisConnection, two)
      )
      let runs = 0
      expect(
        yield* Idempotency.once(
          other,
          "e1",
          Effect.sync(() => runs++)
        )
      ).toBe("duplicate")
      expect(
        yield* Idempotency.once(
          other,
          "e2",
          Effect.sync(() => runs++)
        )
      ).toBe("processed")
      expect(runs).toBe(1)
      expect(yield* store.isProcessed("e2")).toBe(true)
    })
  )

  it.effect("a Redis failure is a typed error, not a silent 'not processed'", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(() => RedisTestServer.freePort())
      const connection = yield* RedisConnection.make({ url: `redis://127.0.0.1:${port}`, connectTimeout: "200 millis" })
      const store = yield* Idempotency.makeRedis().pipe(
        Effect.provideService(RedisConnection.RedisConnection, connection)
      )
      const error = yield* Effect.flip(store.isProcessed("e1"))
      expect(error._tag).toBe("RedisUnavailable")
    })
  )
})
