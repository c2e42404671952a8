import { describe, expect, it, layer } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { CdcEvent, Position } from "@redflow/core"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Idempotency from "../src/Idempotency.ts"
import * as RedisConnection from "../src/RedisConnection.ts"
import { RedisUnavailable } from "../src/RedisError.ts"
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

  it.effect("a failed processing is released, not marked: the redelivery runs it again", () =>
    Effect.gen(function* () {
      const store = yield* Idempotency.makeMemory()
      const failed = yield* Effect.flip(Idempotency.once(store, "e1", Effect.fail("boom")))
      expect(failed).toBe("boom")
      expect(yield* store.isProcessed("e1")).toBe(false)
      expect(yield* Idempotency.once(store, "e1", Effect.void)).toBe("processed")
    })
  )

  it.effect(
    "a copy processed while another is in progress is busy; a crashed reservation expires after the lease",
    () =>
      Effect.gen(function* () {
        const store = yield* Idempotency.makeMemory({ lease: "30 seconds" })
        const first = yield* store.acquire("e1")
        expect(first._tag).toBe("Acquired")
        const busy = yield* Effect.flip(Idempotency.once(store, "e1", Effect.void))
        expect(busy).toMatchObject({ _tag: "EventInProgress", eventId: "e1" })
        // The first holder crashed (never completed nor released): after the lease the event can be processed.
        yield* TestClock.adjust("30 seconds")
        expect(yield* Idempotency.once(store, "e1", Effect.void)).toBe("processed")
        // A late release by the crashed holder does not undo the mark.
        if (first._tag === "Acquired") yield* store.release("e1", first.token)
        expect(yield* store.isProcessed("e1")).toBe(true)
      })
  )

  it.effect("a processing slower than the lease keeps its event: the reservation is renewed every third of it", () =>
    Effect.gen(function* () {
      const store = yield* Idempotency.makeMemory({ lease: "30 seconds" })
      let runs = 0
      const slow = Effect.sleep("100 seconds").pipe(Effect.andThen(Effect.sync(() => runs++)))
      const first = yield* Effect.forkChild(Idempotency.once(store, "e1", slow))
      // Without renewals the reservation would have expired at 30 s and this copy would run too.
      yield* TestClock.adjust("45 seconds")
      expect(yield* store.acquire("e1")).toEqual({ _tag: "Busy" })
      yield* TestClock.adjust("45 seconds")
      expect(yield* Effect.flip(Idempotency.once(store, "e1", slow))).toMatchObject({ _tag: "EventInProgress" })
      yield* TestClock.adjust("10 seconds")
      expect(yield* Fiber.join(first)).toBe("processed")
      expect(runs).toBe(1)
      expect(yield* store.acquire("e1")).toEqual({ _tag: "Processed" })
    })
  )

  it.effect("a reservation lost while processing interrupts the processing; a failed renewal is tried again", () =>
    Effect.gen(function* () {
      const memory = yield* Idempotency.makeMemory({ lease: "30 seconds" })
      // Another consumer took the event (the lease expired while this process could not renew it).
      const taken: Idempotency.IdempotencyStore = { ...memory, renew: () => Effect.succeed(false) }
      let interrupted = false
      const slow = Effect.sleep("100 seconds").pipe(Effect.onInterrupt(() => Effect.sync(() => (interrupted = true))))
      const lost = yield* Effect.forkChild(Effect.flip(Idempotency.once(taken, "e1", slow)))
      yield* TestClock.adjust("10 seconds")
      expect(yield* Fiber.join(lost)).toMatchObject({ _tag: "ReservationLost", eventId: "e1" })
      expect(interrupted).toBe(true)
      expect(yield* memory.isProcessed("e1")).toBe(false)

      // A renewal that fails (Redis unreachable for a moment) does not stop the processing: the next one is tried, in
      // time since renewals come every third of the lease.
      let failures = 0
      const flaky: Idempotency.IdempotencyStore = {
        ...memory,
        renew: (eventId, token) =>
          failures++ < 1
            ? Effect.fail(new RedisUnavailable({ message: "down", outcomeUnknown: false }))
            : memory.renew(eventId, token)
      }
      const done = yield* Effect.forkChild(Idempotency.once(flaky, "e2", Effect.sleep("100 seconds")))
      yield* TestClock.adjust("100 seconds")
      expect(yield* Fiber.join(done)).toBe("processed")
      expect(failures).toBeGreaterThan(2)
      expect(yield* memory.isProcessed("e2")).toBe(true)
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
  it.effect("reserves with SET NX PX lease, marks with SET key 1 PX ttl; shared by every consumer of a group", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const prefix = `${uniquePrefix("dedup")}:`
      // Two processes' connections (closed with the test's scope).
      const [one, two] = [yield* RedisConnection.make({ url }), yield* RedisConnection.make({ url })]
      const store = yield* Idempotency.makeRedis({ prefix, ttl: "10 seconds", lease: "5 seconds" }).pipe(
        Effect.provideService(RedisConnection.RedisConnection, one)
      )
      const other = yield* Idempotency.makeRedis({ prefix }).pipe(
        Effect.provideService(RedisConnection.RedisConnection, two)
      )
      const inspect = (key: string) =>
        Effect.promise(() => withClient(url, (c) => Promise.all([c.get(`${prefix}${key}`), c.pttl(`${prefix}${key}`)])))

      const acquired = yield* store.acquire("e1")
      if (acquired._tag !== "Acquired") return expect.fail(`expected Acquired, got ${acquired._tag}`)
      const [reserved, leaseLeft] = yield* inspect("e1")
      expect(reserved).toBe(acquired.token)
      expect(leaseLeft).toBeGreaterThan(4_000)
      expect(leaseLeft).toBeLessThanOrEqual(5_000)
      // While reserved, another worker's copy is busy.
      expect(yield* other.acquire("e1")).toEqual({ _tag: "Busy" })
      expect(yield* Effect.flip(Idempotency.once(other, "e1", Effect.void))).toMatchObject({ _tag: "EventInProgress" })

      yield* store.complete("e1", acquired.token)
      const [value, ttl] = yield* inspect("e1")
      expect(value).toBe("1")
      expect(ttl).toBeGreaterThan(9_000)
      expect(ttl).toBeLessThanOrEqual(10_000)
      expect(yield* other.acquire("e1")).toEqual({ _tag: "Processed" })
      expect(yield* other.isProcessed("e1")).toBe(true)
      // Releasing after completion (a stale token) does not undo the mark.
      yield* store.release("e1", acquired.token)
      expect(yield* other.isProcessed("e1")).toBe(true)

      let runs = 0
      expect(
        yield* Idempotency.once(
          other,
          "e1",
          Effect.sync(() => runs++)
        )
      ).toBe("duplicate")
      expect(yield* Effect.flip(Idempotency.once(other, "e2", Effect.fail("boom")))).toBe("boom")
      expect((yield* inspect("e2"))[0]).toBeNull()
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

  it.effect("renews a reservation in Redis while the processing runs, and stops when it is no longer ours", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const prefix = `${uniquePrefix("dedup")}:`
      const [one, two] = [yield* RedisConnection.make({ url }), yield* RedisConnection.make({ url })]
      const store = yield* Idempotency.makeRedis({ prefix, lease: "300 millis" }).pipe(
        Effect.provideService(RedisConnection.RedisConnection, one)
      )
      const other = yield* Idempotency.makeRedis({ prefix, lease: "300 millis" }).pipe(
        Effect.provideService(RedisConnection.RedisConnection, two)
      )
      const first = yield* Effect.forkChild(Idempotency.once(store, "e1", Effect.sleep("1 second")))
      yield* Effect.sleep("700 millis")
      // Over two leases in: still reserved, with a fresh lease.
      expect(yield* other.acquire("e1")).toEqual({ _tag: "Busy" })
      const pttl = yield* Effect.promise(() => withClient(url, (c) => c.pttl(`${prefix}e1`)))
      expect(pttl).toBeGreaterThan(0)
      expect(pttl).toBeLessThanOrEqual(300)
      expect(yield* Fiber.join(first)).toBe("processed")
      expect(yield* other.isProcessed("e1")).toBe(true)

      // The reservation changes hands under a running processing: the next renewal finds out and interrupts it.
      let interrupted = false
      const slow = Effect.sleep("5 seconds").pipe(Effect.onInterrupt(() => Effect.sync(() => (interrupted = true))))
      const second = yield* Effect.forkChild(Effect.flip(Idempotency.once(store, "e2", slow)))
      yield* Effect.sleep("50 millis")
      yield* Effect.promise(() => withClient(url, (c) => c.set(`${prefix}e2`, "pending:someone-else", "PX", 5000)))
      const started = Date.now()
      expect(yield* Fiber.join(second)).toMatchObject({ _tag: "ReservationLost", eventId: "e2" })
      expect(Date.now() - started).toBeLessThan(4_000) // interrupted well before its 5 s
      expect(interrupted).toBe(true)
      // The other holder's reservation is left alone.
      expect(yield* Effect.promise(() => withClient(url, (c) => c.get(`${prefix}e2`)))).toBe("pending:someone-else")
    })
  )

  it.effect("a Redis failure is a typed error, not a silent 'not processed'", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(() => RedisTestServer.freePort())
      const connection = yield* RedisConnection.make({ url: `redis://127.0.0.1:${port}`, connectTimeout: "200 millis" })
      const store = yield* Idempotency.makeRedis().pipe(
        Effect.provideService(RedisConnection.RedisConnection, connection)
      )
      const error = yield* Effect.flip(store.acquire("e1"))
      expect(error._tag).toBe("RedisUnavailable")
    })
  )
})
