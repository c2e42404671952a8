/**
 * The consumer's logic on the in-memory store (internal/consumer/memoryStore.ts), driven by `TestClock`: read-ahead,
 * `limit`, claims of idle entries, `maxDeliveries` and the dead-letter stream, give-back and shutdown. The protocol
 * against a real Redis is tested in ../RedisStreamConsumer*.test.ts.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Duration, Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { CdcEvent, Position } from "@redflow/core"
import * as Envelope from "@redflow/core/Envelope"
import * as Idempotency from "../../src/Idempotency.ts"
import * as MemoryStore from "../../src/internal/consumer/memoryStore.ts"
import * as Settings from "../../src/internal/consumer/settings.ts"
import type { ConsumerStore } from "../../src/internal/consumer/store.ts"
import * as Workers from "../../src/internal/consumer/workers.ts"
import type * as RedisStreamConsumer from "../../src/RedisStreamConsumer.ts"

const event = (n: number) =>
  CdcEvent.make({
    op: "c",
    before: null,
    after: { id: n },
    source: { connector: "test", name: "test", db: "shop", table: "orders", ts_ms: 0 },
    ts_ms: 0,
    position: Position.fromSequence(n)
  })

const fieldsOf = (n: number) => {
  const e = event(n)
  return { event: Envelope.native.encode(e), id: e.id, op: e.op, table: "orders" }
}

const fill = (stream: MemoryStore.MemoryStream, n: number) =>
  Effect.forEach(
    Array.from({ length: n }, (_, i) => i + 1),
    (i) => MemoryStore.append(stream, fieldsOf(i))
  )

type Run = Omit<RedisStreamConsumer.RunOptions<unknown, never>, "stream" | "group" | "consumer">

const start = (stream: MemoryStore.MemoryStream, consumer: string, options: Run) =>
  Effect.gen(function* () {
    const settings = yield* Settings.decode({ stream: stream.name, group: "g", consumer, ...options })
    const store = MemoryStore.make(stream, settings)
    return yield* Effect.forkChild(
      Effect.scoped(Workers.run(settings, store, { ...options, stream: stream.name, group: "g", consumer }))
    )
  })

/** Advances the clock 1 ms at a time until `check` holds (at most `limitMs`), so background fibers run in between. */
const until = (label: string, check: () => boolean, limitMs = 10_000, stepMs = 1) =>
  Effect.gen(function* () {
    for (let t = 0; t < limitMs; t += stepMs) {
      if (check()) return
      yield* TestClock.adjust(Duration.millis(stepMs))
    }
    return yield* Effect.die(new Error(`${label}: not true after ${limitMs} ms of test time`))
  })

const pendingOf = (stream: MemoryStore.MemoryStream) => stream.groups.get("g")?.pending ?? new Map()

describe("RedisStreamConsumer on the memory store (TestClock)", () => {
  it.effect("reads ahead at most twice count beyond what the handlers hold", () =>
    Effect.gen(function* () {
      const stream = MemoryStore.makeStream("s")
      yield* fill(stream, 100)
      const gate = yield* Deferred.make<void>()
      const fiber = yield* start(stream, "c1", { count: 5, handler: () => Deferred.await(gate) })
      yield* until("first delivery", () => pendingOf(stream).size > 0)
      yield* TestClock.adjust("10 seconds")
      // One with the handler, at most 2 × 5 read ahead.
      expect(pendingOf(stream).size).toBeGreaterThan(5)
      expect(pendingOf(stream).size).toBeLessThanOrEqual(11)
      yield* Deferred.succeed(gate, undefined)
      yield* until(
        "all handled",
        () => pendingOf(stream).size === 0 && stream.groups.get("g")!.lastDeliveredId === stream.entries[99]!.id
      )
      yield* Fiber.interrupt(fiber)
    })
  )

  it.effect("limit: handles exactly limit messages, reads none beyond them, and returns", () =>
    Effect.gen(function* () {
      const stream = MemoryStore.makeStream("s")
      const ids = yield* fill(stream, 50)
      const handled: Array<string> = []
      const fiber = yield* start(stream, "c1", {
        count: 4,
        limit: 7,
        concurrency: 3,
        handler: (e) => Effect.sync(() => handled.push(e.id))
      })
      yield* until("the run returned", () => fiber.pollUnsafe() !== undefined)
      expect(handled).toHaveLength(7)
      expect(stream.groups.get("g")!.lastDeliveredId).toBe(ids[6])
      expect(pendingOf(stream).size).toBe(0)
    })
  )

  it.effect("a graceful stop gives back what was read ahead: delivery counts restored, idle for minIdle", () =>
    Effect.gen(function* () {
      const stream = MemoryStore.makeStream("s")
      const ids = yield* fill(stream, 30)
      const started = yield* Deferred.make<void>()
      const fiber = yield* start(stream, "c1", {
        count: 10,
        minIdle: "30 seconds",
        shutdownTimeout: "1 second",
        handler: () => Effect.andThen(Deferred.succeed(started, undefined), Effect.never)
      })
      yield* Deferred.await(started)
      yield* TestClock.adjust("1 second")
      const readAhead = [...pendingOf(stream).keys()].filter((id) => id !== ids[0])
      expect(readAhead.length).toBeGreaterThanOrEqual(10)
      const stopping = yield* Effect.forkChild(Fiber.interrupt(fiber))
      yield* until("stopped", () => stopping.pollUnsafe() !== undefined)
      const pending = pendingOf(stream)
      // The handler's entry keeps its delivery (it was interrupted past the shutdown timeout); the rest are given back.
      expect(pending.get(ids[0]!)?.deliveries).toBe(1)
      for (const id of readAhead) expect(pending.get(id)?.deliveries).toBe(0)
      const now = yield* Clock.currentTimeMillis
      expect(now - pending.get(ids[1]!)!.deliveredAt).toBeGreaterThanOrEqual(30_000)
    })
  )

  it.effect("shutdown: a handler finishing within shutdownTimeout is acknowledged; one past it stays pending", () =>
    Effect.gen(function* () {
      const stream = MemoryStore.makeStream("s")
      const ids = yield* fill(stream, 2)
      let running = 0
      const fiber = yield* start(stream, "c1", {
        concurrency: 2,
        shutdownTimeout: "5 seconds",
        handler: (e) =>
          Effect.sync(() => running++).pipe(
            Effect.andThen(Effect.sleep(e.id === stream.entries[0]!.fields.id ? "2 seconds" : "1 hour"))
          )
      })
      yield* until("both running", () => running === 2)
      const stopping = yield* Effect.forkChild(Fiber.interrupt(fiber))
      yield* until("stopped", () => stopping.pollUnsafe() !== undefined)
      expect([...pendingOf(stream).keys()]).toEqual([ids[1]])
    })
  )

  it.effect("entries of a crashed consumer are claimed once idle for minIdle, with their delivery counted", () =>
    Effect.gen(function* () {
      const stream = MemoryStore.makeStream("s")
      const ids = yield* fill(stream, 5)
      // c0 reads the five entries and dies without acknowledging them.
      const c0 = MemoryStore.make(stream, yield* Settings.decode({ stream: "s", group: "g", consumer: "c0" }))
      yield* c0.createGroup("0")
      yield* c0.readGroup(">", 10, undefined)
      const seen: Array<RedisStreamConsumer.Message> = []
      const fiber = yield* start(stream, "c1", {
        minIdle: "10 seconds",
        handler: (_, m) => Effect.sync(() => seen.push(m))
      })
      yield* TestClock.adjust("9 seconds")
      expect(seen).toHaveLength(0)
      yield* until("claimed", () => seen.length === 5)
      expect(seen.map((m) => [m.id, m.delivery, m.deliveries])).toEqual(ids.map((id) => [id, "claimed", 2]))
      yield* until("acknowledged", () => pendingOf(stream).size === 0)
      yield* Fiber.interrupt(fiber)
    })
  )

  it.effect("maxDeliveries: a failing entry is handled maxDeliveries times, then parked once with its error", () =>
    Effect.gen(function* () {
      const stream = MemoryStore.makeStream("s")
      const ids = yield* fill(stream, 3)
      const attempts = new Map<string, number>()
      const poison = stream.entries[1]!.fields.id!
      const fiber = yield* start(stream, "c1", {
        minIdle: "1 second",
        maxDeliveries: 3,
        handler: (e) =>
          Effect.suspend(() => {
            attempts.set(e.id, (attempts.get(e.id) ?? 0) + 1)
            return e.id === poison ? Effect.fail(new Error("boom: card declined")) : Effect.void
          })
      })
      yield* until("parked", () => stream.deadLetters.length === 1)
      yield* TestClock.adjust("1 minute")
      expect(attempts.get(poison)).toBe(3)
      expect(stream.deadLetters).toHaveLength(1)
      expect(stream.deadLetters[0]).toMatchObject({ source_id: ids[1], deliveries: "3", consumer: "c1" })
      expect(stream.deadLetters[0]!.error).toMatch(/boom: card declined/)
      expect(pendingOf(stream).size).toBe(0)
      expect(stream.errors.size).toBe(0)
      yield* Fiber.interrupt(fiber)
    })
  )

  it.effect("an entry that does not decode is parked at once, and the others are handled", () =>
    Effect.gen(function* () {
      const stream = MemoryStore.makeStream("s")
      yield* fill(stream, 2)
      const bad = yield* MemoryStore.append(stream, { event: "{not json", id: "x" })
      let handled = 0
      const fiber = yield* start(stream, "c1", { handler: () => Effect.sync(() => handled++) })
      yield* until("handled and parked", () => handled === 2 && stream.deadLetters.length === 1)
      expect(stream.deadLetters[0]).toMatchObject({ source_id: bad, deliveries: "1" })
      yield* until("nothing pending", () => pendingOf(stream).size === 0)
      yield* Fiber.interrupt(fiber)
    })
  )

  it.effect("with idempotency, a duplicate of a handled event is acknowledged without running the handler", () =>
    Effect.gen(function* () {
      const stream = MemoryStore.makeStream("s")
      yield* MemoryStore.append(stream, fieldsOf(1))
      yield* MemoryStore.append(stream, fieldsOf(1))
      const store = yield* Idempotency.makeMemory()
      let handled = 0
      const fiber = yield* start(stream, "c1", { idempotency: store, handler: () => Effect.sync(() => handled++) })
      yield* until(
        "both done",
        () => stream.groups.get("g")?.lastDeliveredId === stream.entries[1]!.id && pendingOf(stream).size === 0
      )
      expect(handled).toBe(1)
      yield* Fiber.interrupt(fiber)
    })
  )

  it.effect(
    "Redis slower than minIdle allows: no entry reaches a handler more than maxDeliveries times, each is parked once",
    () =>
      Effect.gen(function* () {
        // Every call but the reads takes 60 ms and a handler 150 ms, against a minIdle of 200 ms: consumers claim
        // entries from each other while these are admitted or parked. Before the fix, an entry acknowledged (parked)
        // by one consumer between another's claim and its delivery count check was handed out as a first delivery:
        // a 4th attempt with maxDeliveries 3.
        const slowed = (store: ConsumerStore): ConsumerStore => {
          const late = <A, E>(effect: Effect.Effect<A, E>) => Effect.andThen(Effect.sleep("60 millis"), effect)
          return {
            ...store,
            touch: (ids) => late(store.touch(ids)),
            deliveries: (ids) => late(store.deliveries(ids)),
            lastError: (id) => late(store.lastError(id)),
            fence: (id, n) => late(store.fence(id, n)),
            addDeadLetter: (fields) => late(store.addDeadLetter(fields)),
            ack: (ids, forget) => late(store.ack(ids, forget)),
            recordError: (id, reason) => late(store.recordError(id, reason))
          }
        }
        const stream = MemoryStore.makeStream("s")
        const ids = yield* fill(stream, 10)
        const attempts = new Map<string, number>()
        const fibers: Array<Fiber.Fiber<void, unknown>> = []
        for (const consumer of ["c1", "c2", "c3"]) {
          const options = {
            stream: "s",
            group: "g",
            consumer,
            minIdle: Duration.millis(200),
            maxDeliveries: 3,
            concurrency: 2,
            handler: (e: CdcEvent.CdcEvent) =>
              Effect.sync(() => attempts.set(e.id, (attempts.get(e.id) ?? 0) + 1)).pipe(
                Effect.andThen(Effect.sleep("150 millis")),
                Effect.andThen(Effect.fail(new Error("550 mailbox unavailable")))
              )
          }
          const settings = yield* Settings.decode(options)
          const store = slowed(MemoryStore.make(stream, settings))
          fibers.push(yield* Effect.forkChild(Effect.scoped(Workers.run(settings, store, options))))
        }
        yield* until("all parked", () => new Set(stream.deadLetters.map((d) => d.source_id)).size === 10, 30_000, 10)
        yield* TestClock.adjust("10 seconds")
        for (const n of attempts.values()) expect(n).toBeLessThanOrEqual(3)
        expect(stream.deadLetters.map((d) => d.source_id).sort()).toEqual([...ids].sort())
        expect(pendingOf(stream).size).toBe(0)
        for (const fiber of fibers) yield* Fiber.interrupt(fiber)
      })
  )

  it.effect(
    "a copy read with its twin while the twin runs is not charged a delivery: both parked with the handler's error",
    () =>
      Effect.gen(function* () {
        const stream = MemoryStore.makeStream("s")
        // Two entries carrying the same event (a replayed duplicate), read in the same round by two workers.
        const twins = [yield* MemoryStore.append(stream, fieldsOf(1)), yield* MemoryStore.append(stream, fieldsOf(1))]
        const idempotency = yield* Idempotency.makeMemory({ lease: "10 seconds" })
        let attempts = 0
        const fiber = yield* start(stream, "c1", {
          concurrency: 2,
          minIdle: "1 second",
          maxDeliveries: 3,
          idempotency,
          handler: () =>
            Effect.sync(() => attempts++).pipe(
              Effect.andThen(Effect.sleep("100 millis")),
              Effect.andThen(Effect.fail(new Error("550 mailbox unavailable")))
            )
        })
        yield* until("both parked", () => stream.deadLetters.length === 2, 60_000, 10)
        expect(stream.deadLetters.map((d) => d.source_id).sort()).toEqual([...twins].sort())
        for (const parked of stream.deadLetters) expect(parked.error).toMatch(/550 mailbox unavailable/)
        expect(attempts).toBe(6)
        yield* Fiber.interrupt(fiber)
      })
  )
})
