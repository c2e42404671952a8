import { spawn } from "node:child_process"
import { join } from "node:path"
import { expect, layer } from "@effect/vitest"
import { Duration, Effect, Fiber, Metric, Schedule, Stream } from "effect"
import { Position } from "@redflow/core"
import * as Metrics from "@redflow/core/Metrics"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as ChaosProxy from "@redflow/testing/ChaosProxy"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Idempotency from "../src/Idempotency.ts"
import * as RedisConnection from "../src/RedisConnection.ts"
import * as RedisStreamConsumer from "../src/RedisStreamConsumer.ts"
import * as RedisStreamSink from "../src/RedisStreamSink.ts"
import * as StreamAdmin from "../src/StreamAdmin.ts"
import { readStream, sinkLayers, uniquePrefix, withClient } from "./support.ts"

/** Writes synthetic order events `after + 1 … after + count` to `stream` through the sink (keyed by row id). */
const produce = (url: string, stream: string, count: number, after = 0) =>
  SyntheticSource.make({
    count: after + count,
    tables: ["orders"],
    ...(after > 0 ? { from: Position.fromSequence(after) } : {})
  }).pipe(Stream.run(RedisStreamSink.make({ stream, key: "${key.id}" })), Effect.provide(sinkLayers(url)))

/** Polls `check` every 20 ms (real time) until it holds; dies after `timeout`. */
const eventually = <E, R>(label: string, check: Effect.Effect<boolean, E, R>, timeout: Duration.Input = "20 seconds") =>
  Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(Duration.fromInputUnsafe(timeout))
    while (!(yield* check)) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for: ${label}`))
      yield* Effect.sleep("20 millis")
    }
  })

const pendingIds = (stream: string, group: string) =>
  Effect.map(StreamAdmin.pendingEntries(stream, group, { count: 100_000 }), (entries) => entries.map((e) => e.id))

const counterValue = (metric: Metric.Counter<number>, attributes: Record<string, string>) =>
  Effect.map(Metric.value(Metric.withAttributes(metric, attributes)), (state) => state.count)

/** Runs `f` with the test server's URL and a connection to it. */
const withServer = <A, E>(f: (url: string) => Effect.Effect<A, E, RedisConnection.RedisConnection>) =>
  Effect.gen(function* () {
    const { url } = yield* RedisTestServer.RedisTestServer
    return yield* f(url).pipe(Effect.provide(RedisConnection.layer({ url })))
  })

/** A consumer process that takes entries and hangs in its handler on the first one: killed later with SIGKILL. */
const DOOMED_CONSUMER = `
import { Effect, Stream } from "effect"
import * as RedisConnection from "./src/RedisConnection.ts"
import * as RedisStreamConsumer from "./src/RedisStreamConsumer.ts"
const program = RedisStreamConsumer.messages({
  stream: process.env.STREAM, group: process.env.GROUP ?? "workers", consumer: process.env.CONSUMER ?? "doomed", count: 50
}).pipe(
  Stream.runForEach(() => Effect.sync(() => process.stdout.write("processing\\n")).pipe(Effect.andThen(Effect.never)))
)
Effect.runPromise(program.pipe(Effect.provide(RedisConnection.layer({ url: process.env.URL }))))
`

/** Starts {@link DOOMED_CONSUMER} and kills it with SIGKILL once its handler has the first message. */
const crashConsumer = (env: Record<string, string>) =>
  Effect.gen(function* () {
    const child = spawn(process.execPath, ["--input-type=module", "-e", DOOMED_CONSUMER], {
      cwd: join(import.meta.dirname, ".."),
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stderr = ""
    child.stderr.on("data", (d) => (stderr += d))
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_, signal) => resolve(signal)))
    yield* Effect.promise(() => new Promise<void>((resolve) => child.stdout.once("data", () => resolve()))).pipe(
      Effect.timeoutOrElse({
        duration: "20 seconds",
        orElse: () => Effect.die(new Error(`the doomed consumer did not start: ${stderr}`))
      })
    )
    child.kill("SIGKILL")
    expect(yield* Effect.promise(() => exited)).toBe("SIGKILL")
  })

layer(RedisTestServer.layer(), { excludeTestServices: true })("RedisStreamConsumer against a real Redis", (it) => {
  it.effect("three competing consumers split 10,000 events: each processed once, nothing left pending", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("compete")
        yield* produce(url, stream, 10_000)
        const processedBy = new Map<string, Array<string>>()
        const consumerOf = (consumer: string) =>
          RedisStreamConsumer.run({
            stream,
            group: "billing",
            consumer,
            concurrency: 4,
            // Nobody crashes here: a threshold a starved process cannot reach (at 2 s, a loaded CI machine let
            // entries read ahead look idle, and another consumer took them over while they were still held).
            minIdle: "30 seconds",
            handler: (event) =>
              Effect.sync(() => {
                const seen = processedBy.get(event.id)
                if (seen === undefined) processedBy.set(event.id, [consumer])
                else seen.push(consumer)
              })
          }).pipe(Effect.forkChild)
        const fibers = yield* Effect.all([consumerOf("c1"), consumerOf("c2"), consumerOf("c3")])
        yield* eventually(
          "10,000 events processed",
          Effect.sync(() => processedBy.size === 10_000),
          "30 seconds"
        )
        yield* eventually(
          "no entry pending",
          Effect.map(StreamAdmin.pending(stream, "billing"), (p) => p.count === 0)
        )
        yield* Fiber.interruptAll(fibers)

        const ids = (yield* Effect.promise(() => readStream(url, stream))).map((e) => e.fields.id!)
        expect(ids.length).toBe(10_000)
        expect(ids.filter((id) => processedBy.get(id)?.length !== 1)).toEqual([])
        const shares = new Map<string, number>()
        for (const [consumer] of processedBy.values()) shares.set(consumer!, (shares.get(consumer!) ?? 0) + 1)
        expect([...shares.keys()].sort()).toEqual(["c1", "c2", "c3"])

        const [group] = yield* StreamAdmin.groups(stream)
        expect(group).toMatchObject({ name: "billing", consumers: 3, pending: 0, lag: 0, entriesRead: 10_000 })
        expect(yield* counterValue(Metrics.consumerAcked, { stream, group: "billing" })).toBe(10_000)
        expect(yield* counterValue(Metrics.consumerDelivered, { stream, group: "billing" })).toBe(10_000)
      })
    )
  )

  it.effect("a consumer killed mid-processing: another claims its entries after the idle threshold; none lost", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("killed")
        yield* produce(url, stream, 200)
        const child = spawn(process.execPath, ["--input-type=module", "-e", DOOMED_CONSUMER], {
          cwd: join(import.meta.dirname, ".."),
          env: { ...process.env, URL: url, STREAM: stream },
          stdio: ["ignore", "pipe", "pipe"]
        })
        let stderr = ""
        child.stderr.on("data", (d) => (stderr += d))
        const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_, signal) => resolve(signal)))
        yield* Effect.promise(() => new Promise<void>((resolve) => child.stdout.once("data", () => resolve()))).pipe(
          Effect.timeoutOrElse({
            duration: "20 seconds",
            orElse: () => Effect.die(new Error(`the doomed consumer did not start: ${stderr}`))
          })
        )
        child.kill("SIGKILL")
        expect(yield* Effect.promise(() => exited)).toBe("SIGKILL")
        // What the killed consumer had taken and never acknowledged (its reads run ahead of its handler).
        const held = (yield* StreamAdmin.pendingEntries(stream, "workers", { consumer: "doomed", count: 1000 })).map(
          (e) => e.id
        )
        expect(held.length).toBeGreaterThanOrEqual(50)

        const processed = new Map<string, number>()
        const claimed = new Set<string>()
        const rescuer = yield* RedisStreamConsumer.run({
          stream,
          group: "workers",
          consumer: "rescuer",
          // 2 s, not 200 ms: on a loaded CI machine a starved rescuer handled some entries twice at 200 ms (an entry
          // it had read but not yet admitted came back to it by its own XAUTOCLAIM; see the note on issue 10).
          minIdle: "2 seconds",
          claimInterval: "500 millis",
          handler: (event, message) =>
            Effect.sync(() => {
              processed.set(event.id, (processed.get(event.id) ?? 0) + 1)
              if (message.delivery === "claimed") claimed.add(message.id)
            })
        }).pipe(Effect.forkChild)
        yield* eventually(
          "all 200 processed",
          Effect.sync(() => processed.size === 200)
        )
        yield* eventually(
          "nothing pending",
          Effect.map(pendingIds(stream, "workers"), (ids) => ids.length === 0)
        )
        yield* Fiber.interrupt(rescuer)

        // Exactly the entries the killed consumer held were claimed; every event was processed once.
        expect([...claimed].sort()).toEqual([...held].sort())
        expect([...processed.values()].every((n) => n === 1)).toBe(true)
        const consumers = yield* StreamAdmin.consumers(stream, "workers")
        expect(consumers.find((c) => c.name === "doomed")?.pending).toBe(0)
        expect(yield* counterValue(Metrics.consumerClaimed, { stream, group: "workers" })).toBe(held.length)
      })
    )
  )

  it.effect("a poison entry goes to the dead-letter stream after N deliveries; undecodable ones at once", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("poison")
        const dlq = `${stream}.dead-letter`
        yield* produce(url, stream, 10)
        const entries = yield* Effect.promise(() => readStream(url, stream))
        const poison = entries[3]!
        const [notJson, noEvent] = yield* Effect.promise(() =>
          withClient(url, (c) =>
            Promise.all([
              c.xadd(stream, "*", "event", "{not json", "id", "bad-1"),
              c.xadd(stream, "*", "id", "bad-2", "op", "c")
            ])
          )
        )
        const attempts = new Map<string, number>()
        const fiber = yield* RedisStreamConsumer.run({
          stream,
          group: "g",
          consumer: "w1",
          maxDeliveries: 3,
          minIdle: "200 millis",
          claimInterval: "100 millis",
          handler: (event) =>
            Effect.suspend(() => {
              attempts.set(event.id, (attempts.get(event.id) ?? 0) + 1)
              return event.id === poison.fields.id ? Effect.fail(new Error("boom: card declined")) : Effect.void
            })
        }).pipe(Effect.forkChild)
        yield* eventually(
          "three dead letters",
          Effect.map(StreamAdmin.length(dlq), (n) => n === 3)
        )
        yield* eventually(
          "nothing pending",
          Effect.map(pendingIds(stream, "g"), (ids) => ids.length === 0)
        )
        yield* Fiber.interrupt(fiber)

        expect(attempts.get(poison.fields.id!)).toBe(3)
        expect([...attempts.entries()].filter(([id]) => id !== poison.fields.id).every(([, n]) => n === 1)).toBe(true)
        expect(attempts.size).toBe(10)
        const dead = yield* Effect.promise(() => readStream(url, dlq))
        const bySource = new Map(dead.map((e) => [e.fields.source_id, e.fields]))
        expect(bySource.get(notJson!)).toMatchObject({
          event: "{not json",
          id: "bad-1",
          source_stream: stream,
          group: "g",
          consumer: "w1",
          deliveries: "1"
        })
        expect(bySource.get(notJson!)!.error).toMatch(/invalid JSON/)
        expect(bySource.get(noEvent!)).toMatchObject({ id: "bad-2", error: "the entry has no event field" })
        // The poison entry keeps every original field, plus where it came from, its deliveries and its last error.
        expect(bySource.get(poison.id)).toMatchObject({
          ...poison.fields,
          source_stream: stream,
          source_id: poison.id,
          group: "g",
          deliveries: "3"
        })
        expect(bySource.get(poison.id)!.error).toMatch(/boom: card declined/)
        expect(yield* counterValue(Metrics.consumerDeadLettered, { stream, group: "g" })).toBe(3)
        // The errors hash is cleaned up once the entry is dead-lettered.
        const errors = yield* Effect.promise(() =>
          withClient(url, (c) => c.hlen(`redflow:consumer-errors:${stream}:g`))
        )
        expect(errors).toBe(0)
      })
    )
  )

  it.effect("an entry that failed once and then succeeded is acknowledged, and its last error is dropped", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("retried")
        yield* produce(url, stream, 20)
        const entries = yield* Effect.promise(() => readStream(url, stream))
        const flaky = entries[7]!.fields.id!
        const attempts = new Map<string, number>()
        const fiber = yield* RedisStreamConsumer.run({
          stream,
          group: "g",
          consumer: "w1",
          minIdle: "200 millis",
          claimInterval: "100 millis",
          handler: (event) =>
            Effect.suspend(() => {
              const n = (attempts.get(event.id) ?? 0) + 1
              attempts.set(event.id, n)
              return event.id === flaky && n === 1 ? Effect.fail(new Error("timeout talking to billing")) : Effect.void
            })
        }).pipe(Effect.forkChild)
        yield* eventually(
          "the flaky entry handled twice",
          Effect.sync(() => attempts.get(flaky) === 2)
        )
        yield* eventually(
          "nothing pending",
          Effect.map(pendingIds(stream, "g"), (ids) => ids.length === 0)
        )
        const errors = yield* Effect.promise(() =>
          withClient(url, (c) => c.hlen(`redflow:consumer-errors:${stream}:g`))
        )
        yield* Fiber.interrupt(fiber)
        expect(errors).toBe(0)
        expect([...attempts.entries()].filter(([id, n]) => n !== (id === flaky ? 2 : 1))).toEqual([])
      })
    )
  )

  it.effect("a redelivered duplicate is skipped by the idempotency helper and acknowledged", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("dupes")
        yield* produce(url, stream, 20)
        // A producer restart replays events 11..20: same event ids, new entries (at-least-once).
        yield* produce(url, stream, 10, 10)
        const entries = yield* Effect.promise(() => readStream(url, stream))
        expect(entries.length).toBe(30)
        const store = yield* Idempotency.makeRedis({ prefix: `${stream}:processed:`, ttl: "1 hour" })
        const handled: Array<string> = []
        const fiber = yield* RedisStreamConsumer.run({
          stream,
          group: "g",
          consumer: "w1",
          idempotency: store,
          orderedBy: "key",
          concurrency: 4,
          handler: (event) => Effect.sync(() => handled.push(event.id))
        }).pipe(Effect.forkChild)
        yield* eventually(
          "all entries acknowledged",
          Effect.map(StreamAdmin.groups(stream), ([g]) => g?.lag === 0 && g.pending === 0)
        )
        yield* Fiber.interrupt(fiber)
        expect(handled.length).toBe(20)
        expect(new Set(handled).size).toBe(20)
        expect(yield* store.isProcessed(entries[29]!.fields.id!)).toBe(true)
        const ttl = yield* Effect.promise(() =>
          withClient(url, (c) => c.pttl(`${stream}:processed:${entries[0]!.fields.id}`))
        )
        expect(ttl).toBeGreaterThan(3_500_000)
        expect(ttl).toBeLessThanOrEqual(3_600_000)
      })
    )
  )

  it.effect("with idempotency, a handler slower than the lease keeps its event; one that loses it stops", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("lease")
        yield* produce(url, stream, 2)
        const [first, second] = yield* Effect.promise(() => readStream(url, stream))
        const prefix = `${stream}:processed:`
        const store = yield* Idempotency.makeRedis({ prefix, lease: "300 millis" })
        const started: Array<string> = []
        let interrupted = 0
        const fiber = yield* RedisStreamConsumer.run({
          stream,
          group: "g",
          consumer: "w1",
          idempotency: store,
          concurrency: 2,
          handler: (event) =>
            Effect.sync(() => started.push(event.id)).pipe(
              Effect.andThen(Effect.sleep("1 second")),
              Effect.onInterrupt(() => Effect.sync(() => interrupted++))
            )
        }).pipe(Effect.forkChild)
        yield* eventually(
          "both handlers started",
          Effect.sync(() => started.length === 2)
        )
        // Another consumer takes over the second event's reservation (as if this one had stalled past the lease).
        yield* Effect.promise(() =>
          withClient(url, (c) => c.set(`${prefix}${second!.fields.id}`, "pending:elsewhere", "PX", 10_000))
        )
        yield* Effect.sleep("600 millis")
        // Two leases in, the first event is still reserved by this consumer: no other copy could run it.
        expect(yield* store.acquire(first!.fields.id!)).toEqual({ _tag: "Busy" })
        yield* eventually(
          "the first event acknowledged",
          Effect.map(pendingIds(stream, "g"), (ids) => !ids.includes(first!.id))
        )
        yield* Fiber.interrupt(fiber)
        expect(yield* store.isProcessed(first!.fields.id!)).toBe(true)
        // The second was interrupted and stays pending for its new holder; its reservation is not touched.
        expect(interrupted).toBe(1)
        expect(yield* pendingIds(stream, "g")).toEqual([second!.id])
        expect(yield* store.isProcessed(second!.fields.id!)).toBe(false)
        expect(yield* Effect.promise(() => withClient(url, (c) => c.get(`${prefix}${second!.fields.id}`)))).toBe(
          "pending:elsewhere"
        )
      })
    )
  )

  it.effect("Redis down at start, back during a 20 s backoff: the consumer resumes when it reconnects", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(() => RedisTestServer.freePort())
      const url = `redis://127.0.0.1:${port}`
      const stream = uniquePrefix("back")
      const handled: Array<string> = []
      const fiber = yield* RedisStreamConsumer.run({
        stream,
        group: "g",
        consumer: "w1",
        block: "200 millis",
        policies: { RedisUnavailable: Schedule.spaced("60 seconds") },
        handler: (event) => Effect.sync(() => handled.push(event.id))
      }).pipe(Effect.provide(RedisConnection.layer({ url })), Effect.forkChild)
      yield* Effect.sleep("1500 millis")
      expect(fiber.pollUnsafe()).toBeUndefined()
      const startedAt = Date.now()
      yield* RedisTestServer.make({ port })
      yield* produce(url, stream, 10)
      yield* eventually(
        "the events handled",
        Effect.sync(() => handled.length === 10),
        "40 seconds"
      )
      // ioredis reconnects within 2 s; without the reconnect cutting the backoff short this would take 60 s.
      expect(Date.now() - startedAt).toBeLessThan(40_000)
      yield* Fiber.interrupt(fiber)
    })
  )

  it.effect("shutdown while busy: finished handlers are acknowledged, the rest stays pending, none lost", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("shutdown")
        yield* produce(url, stream, 30)
        const entries = yield* Effect.promise(() => readStream(url, stream))
        const seq = new Map(entries.map((e, i) => [e.fields.id!, i + 1]))
        const finished = new Set<string>()
        const started = new Set<string>()
        const fiber = yield* RedisStreamConsumer.run({
          stream,
          group: "g",
          consumer: "w1",
          concurrency: 10,
          shutdownTimeout: "1 second",
          // Events 1-5 finish at once, 6-10 take 300 ms (they finish during the shutdown), 11+ never finish.
          handler: (event, message) => {
            const n = seq.get(event.id)!
            started.add(message.id)
            const work = n <= 5 ? Effect.void : n <= 10 ? Effect.sleep("300 millis") : Effect.never
            return work.pipe(Effect.andThen(Effect.sync(() => finished.add(message.id))))
          }
        }).pipe(Effect.forkChild)
        yield* eventually(
          "15 handlers started",
          Effect.sync(() => started.size === 15 && finished.size === 5)
        )
        const before = Date.now()
        yield* Fiber.interrupt(fiber)
        const took = Date.now() - before
        expect(took).toBeGreaterThanOrEqual(900)
        expect(took).toBeLessThan(15_000) // the handlers that never finish are cut off, not waited for

        expect(finished.size).toBe(10)
        const pending = yield* StreamAdmin.pendingEntries(stream, "g", { count: 100 })
        const ids = entries.map((e) => e.id)
        expect(pending.map((e) => e.id).sort()).toEqual(ids.filter((id) => !finished.has(id)).sort())
        expect(pending.length).toBe(20)
        // A handler had the 5 interrupted ones: that delivery counts. The 15 read ahead were never handed out: their
        // delivery count was put back.
        expect(pending.filter((e) => started.has(e.id)).map((e) => e.deliveries)).toEqual(Array(5).fill(1))
        expect(pending.filter((e) => !started.has(e.id)).map((e) => e.deliveries)).toEqual(Array(15).fill(0))

        // The same consumer restarts: its pending entries come first, and everything gets done.
        const redone = new Set<string>()
        const restarted = yield* RedisStreamConsumer.run({
          stream,
          group: "g",
          consumer: "w1",
          handler: (_, message) =>
            Effect.sync(() => {
              expect(message.delivery).toBe("pending")
              expect(message.deliveries).toBe(started.has(message.id) ? 2 : 1)
              redone.add(message.id)
            })
        }).pipe(Effect.forkChild)
        yield* eventually(
          "the rest processed",
          Effect.sync(() => redone.size === 20)
        )
        yield* eventually(
          "nothing pending",
          Effect.map(pendingIds(stream, "g"), (p) => p.length === 0)
        )
        yield* Fiber.interrupt(restarted)
        expect(new Set([...finished, ...redone]).size).toBe(30)
      })
    )
  )

  it.effect(
    "a graceful stop gives back what was read ahead: stopped twice with maxDeliveries 2, every entry handled once",
    () =>
      withServer((url) =>
        Effect.gen(function* () {
          const stream = uniquePrefix("readahead")
          yield* produce(url, stream, 600)
          const handled = new Map<string, number>()
          const start = RedisStreamConsumer.run({
            stream,
            group: "g",
            consumer: "w1",
            count: 50,
            concurrency: 2,
            maxDeliveries: 2,
            handler: (_, message) =>
              Effect.sleep("2 millis").pipe(
                Effect.andThen(Effect.sync(() => handled.set(message.id, (handled.get(message.id) ?? 0) + 1)))
              )
          }).pipe(Effect.forkChild)
          // Stops the consumer gracefully once `n` entries were handled: the reader is well ahead of the handlers.
          const stopAfter = (n: number) =>
            Effect.gen(function* () {
              const fiber = yield* start
              yield* eventually(
                `${n} handled`,
                Effect.sync(() => handled.size >= n)
              )
              yield* Fiber.interrupt(fiber)
              // What is left pending was read ahead and never reached a handler: at most twice COUNT (the read-ahead
              // bound), and its delivery count is put back, so being read again does not bring it closer to the
              // dead-letter stream.
              const left = yield* StreamAdmin.pendingEntries(stream, "g", { count: 1000 })
              expect(left.length).toBeGreaterThan(0)
              expect(left.length).toBeLessThanOrEqual(100)
              expect(left.filter((e) => handled.has(e.id))).toEqual([])
              expect(left.filter((e) => e.deliveries !== 0)).toEqual([])
            })
          yield* stopAfter(100)
          yield* stopAfter(200)
          const fiber = yield* start
          yield* eventually(
            "all 600 handled",
            Effect.sync(() => handled.size === 600)
          )
          yield* eventually(
            "nothing pending",
            Effect.map(pendingIds(stream, "g"), (ids) => ids.length === 0)
          )
          yield* Fiber.interrupt(fiber)
          expect([...handled.values()].filter((n) => n !== 1)).toEqual([])
          expect(yield* StreamAdmin.length(`${stream}.dead-letter`)).toBe(0)
          expect(yield* counterValue(Metrics.consumerDeadLettered, { stream, group: "g" })).toBe(0)
        })
      )
  )

  it.effect("a crash adds at most one delivery to what was read ahead: with maxDeliveries 2, none dead-lettered", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("crash")
        yield* produce(url, stream, 300)
        const handled = new Map<string, number>()
        const start = RedisStreamConsumer.run({
          stream,
          group: "g",
          consumer: "w1",
          count: 50,
          maxDeliveries: 2,
          handler: (_, message) =>
            Effect.sleep("1 millis").pipe(
              Effect.andThen(Effect.sync(() => handled.set(message.id, (handled.get(message.id) ?? 0) + 1)))
            )
        }).pipe(Effect.forkChild)
        // A graceful stop first: what was read ahead is given back (0 deliveries).
        const first = yield* start
        yield* eventually(
          "50 handled",
          Effect.sync(() => handled.size >= 50)
        )
        yield* Fiber.interrupt(first)
        const given = yield* StreamAdmin.pendingEntries(stream, "g", { count: 1000 })
        expect(given.length).toBeGreaterThan(0)
        expect(given.filter((e) => e.deliveries !== 0)).toEqual([])
        // Then the same consumer, in another process, re-reads them and is killed with its handler busy: no shutdown
        // code runs, so what it had read (handed out or read ahead) keeps the one delivery it counted.
        yield* crashConsumer({ URL: url, STREAM: stream, GROUP: "g", CONSUMER: "w1" })
        const crashed = yield* StreamAdmin.pendingEntries(stream, "g", { count: 1000 })
        expect(crashed.length).toBeGreaterThan(0)
        expect(crashed.filter((e) => e.deliveries > 1)).toEqual([])
        // Restarted: re-read with 2 deliveries, which is not past maxDeliveries. Everything is handled, once.
        const last = yield* start
        yield* eventually(
          "all 300 handled",
          Effect.sync(() => handled.size === 300)
        )
        yield* eventually(
          "nothing pending",
          Effect.map(pendingIds(stream, "g"), (ids) => ids.length === 0)
        )
        yield* Fiber.interrupt(last)
        expect([...handled.values()].filter((n) => n !== 1)).toEqual([])
        expect(yield* StreamAdmin.length(`${stream}.dead-letter`)).toBe(0)
      })
    )
  )

  it.effect("a stop cuts a blocked read short (CLIENT UNBLOCK) instead of waiting out its block time", () =>
    withServer(() =>
      Effect.gen(function* () {
        const stream = uniquePrefix("unblock")
        const fiber = yield* RedisStreamConsumer.run({
          stream,
          group: "g",
          consumer: "w1",
          block: "20 seconds",
          claim: false,
          handler: () => Effect.void
        }).pipe(Effect.forkChild)
        yield* eventually(
          "the group exists",
          Effect.map(StreamAdmin.groups(stream).pipe(Effect.orElseSucceed(() => [])), (g) => g.length === 1)
        )
        yield* Effect.sleep("300 millis")
        const before = Date.now()
        yield* Fiber.interrupt(fiber)
        expect(Date.now() - before).toBeLessThan(15_000) // the 20 s BLOCK was cut short
      })
    )
  )

  it.effect("ordered per key under concurrency: each row's changes are handled in stream order", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("ordered")
        yield* produce(url, stream, 600)
        const seen = new Map<string, Array<string>>()
        const running = new Set<string>()
        let overlapped = false
        let maxParallel = 0
        const fiber = yield* RedisStreamConsumer.run({
          stream,
          group: "g",
          consumer: "w1",
          concurrency: 8,
          orderedBy: "key",
          handler: (event, message) =>
            Effect.gen(function* () {
              const key = message.key!
              if (running.has(key)) overlapped = true
              running.add(key)
              maxParallel = Math.max(maxParallel, running.size)
              yield* Effect.sleep(Duration.millis(Math.floor(Math.random() * 3)))
              running.delete(key)
              const list = seen.get(key) ?? []
              list.push(event.position)
              seen.set(key, list)
            })
        }).pipe(Effect.forkChild)
        yield* eventually(
          "600 processed",
          Effect.sync(() => [...seen.values()].reduce((n, l) => n + l.length, 0) === 600)
        )
        yield* Fiber.interrupt(fiber)
        expect(overlapped).toBe(false)
        expect(maxParallel).toBeGreaterThan(1)
        const updatedRows = [...seen.values()].filter((l) => l.length > 1)
        expect(updatedRows.length).toBeGreaterThan(10)
        for (const positions of seen.values()) expect(positions).toEqual([...positions].sort())
      })
    )
  )

  it.effect("the message stream: chunks acknowledged with one XACK, entries not acknowledged come back", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("messages")
        yield* produce(url, stream, 50)
        const options = { stream, group: "g", consumer: "w1", count: 20 } as const
        // Take 30 messages and acknowledge 20 of them. What the stream emitted is pending until acknowledged (the
        // second chunk of 20, of which `take` kept 10, included). It reads ahead at most twice `count` beyond what it
        // emitted; what it read and never emitted is given back when it ends: still pending, with its delivery count
        // put back to 0.
        const first = yield* RedisStreamConsumer.messages(options).pipe(Stream.take(30), Stream.runCollect)
        expect(first.map((m) => m.delivery)).toEqual(Array(30).fill("new"))
        yield* RedisStreamConsumer.ack(first.slice(0, 20))
        const entries = yield* Effect.promise(() => readStream(url, stream))
        const left = entries.slice(20).map((e) => e.id)
        const pending = yield* StreamAdmin.pendingEntries(stream, "g", { count: 100 })
        const before = new Map(pending.map((e) => [e.id, e.deliveries]))
        expect(left.slice(0, 20).map((id) => before.get(id))).toEqual(Array(20).fill(1))
        expect(left.slice(20).map((id) => before.get(id) ?? 0)).toEqual(Array(10).fill(0))
        expect(pending.length).toBeLessThanOrEqual(30)
        // A new run re-reads the entries left pending (one more delivery each) and acknowledges them chunk by chunk;
        // entries never read come as new ones.
        const second = yield* RedisStreamConsumer.messages(options).pipe(
          Stream.take(30),
          Stream.mapArrayEffect((chunk) => Effect.as(RedisStreamConsumer.ack(chunk), chunk)),
          Stream.runCollect
        )
        expect(second.map((m) => [m.id, m.delivery, m.deliveries])).toEqual(
          left.map((id) => [id, before.has(id) ? "pending" : "new", (before.get(id) ?? 0) + 1])
        )
        expect((yield* pendingIds(stream, "g")).length).toBe(0)
        expect(new Set([...first, ...second].map((m) => m.event.id)).size).toBe(50)
      })
    )
  )

  it.effect("a chunk holding messages of two streams is acknowledged in both with one ack call", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const streams = [uniquePrefix("merged-a"), uniquePrefix("merged-b")]
        for (const stream of streams) yield* produce(url, stream, 25)
        const read = (stream: string) =>
          RedisStreamConsumer.messages({ stream, group: "g", consumer: "w1", count: 10 }).pipe(
            Stream.take(25),
            Stream.runCollect
          )
        const [a, b] = yield* Effect.all(streams.map(read), { concurrency: "unbounded" })
        // Interleaved, as a merge of the two streams hands them out.
        const chunk = a!.flatMap((m, i) => [m, b![i]!])
        for (const stream of streams) expect((yield* pendingIds(stream, "g")).length).toBe(25)
        yield* RedisStreamConsumer.ack(chunk)
        for (const stream of streams) expect(yield* pendingIds(stream, "g")).toEqual([])
      })
    )
  )

  it.effect("a plain XREAD subscription: from 0-0, from $, and resumed from an id", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("subscribe")
        yield* produce(url, stream, 5)
        const all = yield* RedisStreamConsumer.subscribe({ stream, from: "0-0" }).pipe(
          Stream.take(5),
          Stream.runCollect
        )
        expect(all.map((e) => e.event.position)).toEqual([1, 2, 3, 4, 5].map((n) => Position.fromSequence(n)))

        // From `$`: only what is added after the subscription started.
        const live = yield* RedisStreamConsumer.subscribe({ stream, from: "$", block: "100 millis" }).pipe(
          Stream.take(3),
          Stream.runCollect,
          Effect.forkChild
        )
        yield* Effect.sleep("300 millis")
        yield* produce(url, stream, 3, 5)
        const fresh = yield* Fiber.join(live)
        expect(fresh.map((e) => e.event.position)).toEqual([6, 7, 8].map((n) => Position.fromSequence(n)))

        // Resumed after the second entry seen.
        const resumed = yield* RedisStreamConsumer.subscribe({ stream, from: all[1]!.id }).pipe(
          Stream.take(6),
          Stream.runCollect
        )
        expect(resumed.map((e) => e.event.position)).toEqual([3, 4, 5, 6, 7, 8].map((n) => Position.fromSequence(n)))
      })
    )
  )

  it.effect(
    "a handler slower than the idle threshold keeps its entries: they are not claimed by another consumer",
    () =>
      withServer((url) =>
        Effect.gen(function* () {
          const stream = uniquePrefix("slow")
          yield* produce(url, stream, 6)
          const calls = new Map<string, number>()
          const consumer = (name: string) =>
            RedisStreamConsumer.run({
              stream,
              group: "g",
              consumer: name,
              // As many handlers as entries: whichever consumer reads an entry hands it to a handler at once, so
              // nothing waits read ahead (an entry waiting there longer than minIdle may rightly be taken over).
              concurrency: 6,
              // The handler takes 2.5 × minIdle; the heartbeat (every minIdle / 4) keeps its entries from looking
              // idle, with room for a stall of most of a second on a loaded machine.
              minIdle: "1 second",
              claimInterval: "100 millis",
              handler: (event) =>
                Effect.sync(() => calls.set(event.id, (calls.get(event.id) ?? 0) + 1)).pipe(
                  Effect.andThen(Effect.sleep("2500 millis"))
                )
            }).pipe(Effect.forkChild)
          const fibers = yield* Effect.all([consumer("a"), consumer("b")])
          yield* eventually(
            "all acknowledged",
            Effect.map(StreamAdmin.groups(stream), ([g]) => g?.lag === 0 && g.pending === 0)
          )
          yield* Fiber.interruptAll(fibers)
          expect(calls.size).toBe(6)
          expect([...calls.values()].every((n) => n === 1)).toBe(true)
          expect(yield* counterValue(Metrics.consumerClaimed, { stream, group: "g" })).toBe(0)
        })
      )
  )

  it.effect("the consumer rides out dropped connections: everything is processed once Redis is reachable again", () =>
    Effect.gen(function* () {
      const server = yield* RedisTestServer.RedisTestServer
      const stream = uniquePrefix("outage")
      yield* produce(server.url, stream, 2000)
      const proxy = yield* ChaosProxy.make({ target: server.url })
      const processed = new Map<string, number>()
      yield* Effect.gen(function* () {
        const fiber = yield* RedisStreamConsumer.run({
          stream,
          group: "g",
          consumer: "w1",
          count: 50,
          minIdle: "500 millis",
          claimInterval: "100 millis",
          handler: (event) =>
            Effect.sleep("1 millis").pipe(
              Effect.andThen(Effect.sync(() => processed.set(event.id, (processed.get(event.id) ?? 0) + 1)))
            )
        }).pipe(Effect.forkChild)
        yield* eventually(
          "some processed",
          Effect.sync(() => processed.size >= 300)
        )
        // Every connection is cut and new ones are refused for half a second.
        proxy.refuse()
        expect(proxy.resetAll()).toBeGreaterThanOrEqual(2)
        yield* Effect.sleep("500 millis")
        const during = processed.size
        expect(during).toBeLessThan(2000)
        proxy.heal()
        yield* eventually(
          "all 2000 processed",
          Effect.sync(() => processed.size === 2000),
          "20 seconds"
        )
        yield* eventually(
          "nothing pending",
          Effect.map(pendingIds(stream, "g"), (ids) => ids.length === 0),
          "20 seconds"
        )
        yield* Fiber.interrupt(fiber)
      }).pipe(Effect.provide(RedisConnection.layer({ url: proxy.url })))
      expect(processed.size).toBe(2000)
    })
  )

  it.effect("with a limit it handles that many, reads nothing beyond them, and dead letters do not count", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("limit")
        yield* Effect.promise(() => withClient(url, (c) => c.xadd(stream, "*", "event", "{not json", "id", "bad-1")))
        yield* produce(url, stream, 300)
        const handled = new Map<string, number>()
        // Returns by itself once 120 messages were handled; reads are smaller than `count` near the end.
        yield* RedisStreamConsumer.run({
          stream,
          group: "g",
          consumer: "w1",
          count: 50,
          limit: 120,
          handler: (event) => Effect.sync(() => handled.set(event.id, (handled.get(event.id) ?? 0) + 1))
        })
        expect(handled.size).toBe(120)
        expect([...handled.values()].filter((n) => n !== 1)).toEqual([])
        expect(yield* pendingIds(stream, "g")).toEqual([])
        expect(yield* StreamAdmin.length(`${stream}.dead-letter`)).toBe(1)
        // The undecodable entry and the 120 handled: nothing was read ahead of the limit.
        const [group] = yield* StreamAdmin.groups(stream)
        expect(group).toMatchObject({ name: "g", pending: 0, entriesRead: 121, lag: 180 })
      })
    )
  )

  it.effect("invalid options fail before anything is read, naming the option", () =>
    withServer(() =>
      Effect.gen(function* () {
        const error = yield* RedisStreamConsumer.messages({ stream: "s", group: "g", consumer: "", count: 0 }).pipe(
          Stream.runDrain,
          Effect.flip
        )
        expect(error).toMatchObject({ _tag: "ConfigError", component: "RedisStreamConsumer", path: ["consumer"] })
        const run = yield* RedisStreamConsumer.run({
          stream: "s",
          group: "g",
          consumer: "c",
          concurrency: 0,
          handler: () => Effect.void
        }).pipe(Effect.flip)
        expect(run).toMatchObject({ _tag: "ConfigError", component: "RedisStreamConsumer", path: ["concurrency"] })
      })
    )
  )
})
