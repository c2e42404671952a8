/**
 * RedisStreamConsumer when its stream or its group disappears under it: the stream deleted (DEL, UNLINK, RENAME,
 * FLUSHDB) while the consumer waits in `XREADGROUP BLOCK`, with and without a producer writing, and the group
 * destroyed (`XGROUP DESTROY`) under a consumer that has handled part of the stream. Each test runs its own
 * `redis-server` (FLUSHDB must not reach anyone else's keys).
 */
import { expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Logger, Stream } from "effect"
import * as Envelope from "@redflow/core/Envelope"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisConnection from "../src/RedisConnection.ts"
import * as RedisStreamConsumer from "../src/RedisStreamConsumer.ts"
import * as StreamAdmin from "../src/StreamAdmin.ts"
import { readStream, uniquePrefix, withClient } from "./support.ts"

/**
 * Writes synthetic order events `after + 1 … after + count` to `stream` the way the sink does (`XADD * event … id …
 * key …`, native envelope), in batches of `batch`, `pause` between batches.
 */
const produce = (
  url: string,
  stream: string,
  count: number,
  after = 0,
  pace?: { batch: number; pause: Duration.Input }
) =>
  Effect.gen(function* () {
    const batch = pace?.batch ?? 500
    for (let n = after + 1; n <= after + count; n += batch) {
      const last = Math.min(after + count, n + batch - 1)
      yield* Effect.promise(() =>
        withClient(url, async (c) => {
          const pipeline = c.pipeline()
          for (let i = n; i <= last; i++) {
            const event = SyntheticSource.eventAt(i, { tables: ["orders"] })
            pipeline.xadd(
              stream,
              "*",
              "event",
              Envelope.native.encode(event),
              "id",
              event.id,
              "op",
              event.op,
              "table",
              event.source.table,
              "key",
              String(i)
            )
          }
          await pipeline.exec()
        })
      )
      if (pace !== undefined) yield* Effect.sleep(pace.pause)
    }
  })

/** Polls `check` every 20 ms (real time) until it holds; dies after `timeout` (generous: the machine is shared). */
const eventually = <E, R>(label: string, check: Effect.Effect<boolean, E, R>, timeout: Duration.Input = "30 seconds") =>
  Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(Duration.fromInputUnsafe(timeout))
    while (!(yield* check)) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for: ${label}`))
      yield* Effect.sleep("20 millis")
    }
  })

/** Warnings the consumer logged, as text. */
const warningLog = () => {
  const warnings: Array<string> = []
  const logger = Logger.make((options) => {
    if (options.logLevel !== "Warn") return
    const parts = Array.isArray(options.message) ? options.message : [options.message]
    warnings.push(parts.map((p) => (typeof p === "string" ? p : JSON.stringify(p))).join(" "))
  })
  return { warnings, layer: Logger.layer([logger]) }
}

/** Whether a client is blocked in `XREADGROUP` on the server (the consumer is waiting for entries). */
const blockedInRead = (url: string) =>
  Effect.promise(() =>
    withClient(url, async (c) => {
      const list = (await c.call("CLIENT", "LIST")) as string
      return list.split("\n").some((line) => /\bflags=\S*b/.test(line) && /\bcmd=xreadgroup\b/.test(line))
    })
  )

/** A consumer handling `stream` in the background, counting how often it handled each event id. */
const startConsumer = (stream: string, layer: ReturnType<typeof warningLog>["layer"]) =>
  Effect.gen(function* () {
    const handled = new Map<string, number>()
    const fiber = yield* RedisStreamConsumer.run({
      stream,
      group: "g",
      consumer: "w1",
      count: 50,
      handler: (event) => Effect.sync(() => handled.set(event.id, (handled.get(event.id) ?? 0) + 1))
    }).pipe(Effect.provide(layer), Effect.forkChild)
    return { handled, fiber }
  })

const eventIds = (url: string, stream: string) =>
  Effect.map(
    Effect.promise(() => readStream(url, stream)),
    (entries) => entries.map((e) => e.fields.id!)
  )

const withSpawnedServer = <A, E>(f: (url: string) => Effect.Effect<A, E, RedisConnection.RedisConnection>) =>
  Effect.gen(function* () {
    const { url } = yield* RedisTestServer.spawn()
    return yield* f(url).pipe(Effect.provide(RedisConnection.layer({ url })))
  })

const DELETIONS = {
  DEL: (stream: string) => ["DEL", stream],
  UNLINK: (stream: string) => ["UNLINK", stream],
  RENAME: (stream: string) => ["RENAME", stream, `${stream}.renamed`],
  FLUSHDB: () => ["FLUSHDB"]
} as const

for (const [name, command] of Object.entries(DELETIONS)) {
  it.live(
    `${name} of the stream while the consumer waits: it creates stream and group again, warns, and consumes new entries`,
    () =>
      withSpawnedServer((url) =>
        Effect.gen(function* () {
          const stream = uniquePrefix(`deleted-${name}`)
          yield* produce(url, stream, 100)
          const log = warningLog()
          const { handled, fiber } = yield* startConsumer(stream, log.layer)
          yield* eventually(
            "the first 100 handled",
            Effect.sync(() => handled.size === 100)
          )
          yield* eventually("the consumer waits in XREADGROUP BLOCK", blockedInRead(url))

          const [cmd, ...args] = command(stream)
          yield* Effect.promise(() => withClient(url, (c) => c.call(cmd!, ...args)))
          yield* eventually(
            "a warning that the stream is gone, or the consumer stopped",
            Effect.sync(
              () =>
                fiber.pollUnsafe() !== undefined ||
                log.warnings.some((w) => w.includes(stream) && w.includes("no longer exists"))
            )
          )
          // Still running, not failed.
          expect(fiber.pollUnsafe()).toBeUndefined()
          yield* produce(url, stream, 100, 100)
          yield* eventually(
            "the 100 new events handled",
            Effect.sync(() => handled.size === 200)
          )
          // Still running, not failed.
          expect(fiber.pollUnsafe()).toBeUndefined()
          yield* eventually(
            "all acknowledged",
            Effect.map(StreamAdmin.groups(stream), ([g]) => g?.pending === 0 && g.lag === 0)
          )
          yield* Fiber.interrupt(fiber)
          expect([...handled.values()].filter((n) => n !== 1)).toEqual([])
          expect((yield* eventIds(url, stream)).every((id) => handled.has(id))).toBe(true)
        })
      ),
    60_000
  )
}

it.live(
  "the stream deleted again and again while a producer writes: the consumer survives and handles what the stream holds",
  () =>
    withSpawnedServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("deleted-while-writing")
        const log = warningLog()
        const { handled, fiber } = yield* startConsumer(stream, log.layer)
        const producer = yield* produce(url, stream, 3000, 0, { batch: 10, pause: "20 millis" }).pipe(Effect.forkChild)
        for (const [name, command] of Object.entries(DELETIONS)) {
          const before = handled.size
          yield* eventually(
            `some events handled before the ${name}`,
            Effect.sync(() => handled.size >= before + 50)
          )
          const [cmd, ...args] = command(stream)
          yield* Effect.promise(() => withClient(url, (c) => c.call(cmd!, ...args)))
        }
        yield* Fiber.join(producer)
        // Everything the stream holds once the producer is done (what was written after the last deletion) is
        // handled, once, and acknowledged.
        const remaining = yield* eventIds(url, stream)
        expect(remaining.length).toBeGreaterThan(0)
        yield* eventually(
          "every event left in the stream handled",
          Effect.sync(() => remaining.every((id) => handled.has(id)))
        )
        yield* eventually(
          "all acknowledged",
          Effect.map(StreamAdmin.groups(stream), ([g]) => g?.pending === 0 && g.lag === 0)
        )
        expect(fiber.pollUnsafe()).toBeUndefined()
        yield* Fiber.interrupt(fiber)
        expect([...handled.values()].filter((n) => n !== 1)).toEqual([])
        expect(log.warnings.filter((w) => w.includes("no longer exists")).length).toBeGreaterThanOrEqual(1)
      })
    ),
  90_000
)

it.live(
  "XGROUP DESTROY under a running consumer: the group comes back where it was, handled entries are not handled again",
  () =>
    withSpawnedServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("destroyed")
        yield* produce(url, stream, 1000)
        const log = warningLog()
        const { handled, fiber } = yield* startConsumer(stream, log.layer)
        yield* eventually(
          "the first 1000 handled",
          Effect.sync(() => handled.size === 1000)
        )
        yield* eventually("the consumer waits in XREADGROUP BLOCK", blockedInRead(url))
        const [before] = yield* StreamAdmin.groups(stream)

        expect(yield* StreamAdmin.destroyGroup(stream, "g")).toBe(true)
        yield* eventually(
          "the group exists again",
          Effect.map(StreamAdmin.groups(stream), (groups) => groups.some((g) => g.name === "g"))
        )
        const [after] = yield* StreamAdmin.groups(stream)
        expect(after!.lastDeliveredId).toBe(before!.lastDeliveredId)
        expect(log.warnings.some((w) => w.includes("destroyed") && w.includes(before!.lastDeliveredId))).toBe(true)

        yield* produce(url, stream, 200, 1000)
        yield* eventually(
          "the 200 new events handled",
          Effect.sync(() => handled.size === 1200)
        )
        yield* eventually(
          "all acknowledged",
          Effect.map(StreamAdmin.groups(stream), ([g]) => g?.pending === 0 && g.lag === 0)
        )
        expect(fiber.pollUnsafe()).toBeUndefined()
        yield* Fiber.interrupt(fiber)
        // None of the 1000 handled before the group was destroyed was handled again.
        expect([...handled.values()].filter((n) => n !== 1)).toEqual([])
      })
    ),
  60_000
)

it.live(
  "XGROUP DESTROY between reads, the consumer busy: it learns of it from its next read and does not replay",
  () =>
    withSpawnedServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("destroyed-busy")
        yield* produce(url, stream, 3000)
        const log = warningLog()
        const handled = new Map<string, number>()
        const fiber = yield* RedisStreamConsumer.run({
          stream,
          group: "g",
          consumer: "w1",
          count: 20,
          handler: (event) =>
            Effect.sync(() => handled.set(event.id, (handled.get(event.id) ?? 0) + 1)).pipe(
              Effect.andThen(Effect.sleep("1 millis"))
            )
        }).pipe(Effect.provide(log.layer), Effect.forkChild)
        yield* eventually(
          "some handled",
          Effect.sync(() => handled.size >= 300)
        )
        expect(yield* StreamAdmin.destroyGroup(stream, "g")).toBe(true)
        yield* eventually(
          "all 3000 handled",
          Effect.sync(() => handled.size === 3000),
          "60 seconds"
        )
        yield* eventually(
          "the group caught up",
          Effect.map(StreamAdmin.groups(stream), ([g]) => g?.lag === 0)
        )
        expect(fiber.pollUnsafe()).toBeUndefined()
        yield* Fiber.interrupt(fiber)
        expect([...handled.values()].filter((n) => n !== 1)).toEqual([])
        expect(log.warnings.some((w) => w.includes("destroyed"))).toBe(true)
      })
    ),
  90_000
)

it.live("a dead-letter stream equal to the stream it consumes is refused before anything is read", () =>
  withSpawnedServer((url) =>
    Effect.gen(function* () {
      const stream = uniquePrefix("dlq-loop")
      yield* Effect.promise(() => withClient(url, (c) => c.xadd(stream, "*", "event", "{not json", "id", "bad-1")))
      const options = { stream, group: "g", consumer: "w1", deadLetterStream: stream }
      const fiber = yield* RedisStreamConsumer.run({ ...options, handler: () => Effect.void }).pipe(
        Effect.flip,
        Effect.forkChild
      )
      // Stopped at once, or (the defect) dead-lettering the bad entry into its own stream, again and again.
      yield* eventually(
        "the consumer stopped, or the stream grew",
        Effect.map(StreamAdmin.length(stream), (n) => n > 1 || fiber.pollUnsafe() !== undefined)
      )
      expect(yield* StreamAdmin.length(stream)).toBe(1)
      const error = yield* Fiber.join(fiber)
      expect(error).toMatchObject({ _tag: "ConfigError", component: "RedisStreamConsumer", path: ["deadLetterStream"] })
      expect(error.message).toContain(JSON.stringify(stream))
      const messages = yield* RedisStreamConsumer.messages(options).pipe(Stream.runDrain, Effect.flip)
      expect(messages).toMatchObject({
        _tag: "ConfigError",
        component: "RedisStreamConsumer",
        path: ["deadLetterStream"]
      })
      // Nothing was read or written: no group, the one bad entry still the only one.
      expect(yield* StreamAdmin.length(stream)).toBe(1)
      expect(yield* StreamAdmin.groups(stream)).toEqual([])
    })
  )
)
