/**
 * Oversized events, against a spawned Redis: an event larger than `maxEventBytes` goes to the dead-letter stream with
 * its size and the reason (by default), or with `largeEvents: "reference"` its body is stored under a key in the
 * stream's slot, in the same script call as its entry, and `RedisStreamConsumer` hands the full event to the handler;
 * a body whose TTL passed sends the entry to the consumer's dead-letter stream. The byte accounting counts the body.
 */
import { expect, layer } from "@effect/vitest"
import { Effect, Schedule, Stream, Tracer } from "effect"
import calculateSlot from "cluster-key-slot"
import type * as CdcEvent from "@redflow/core/CdcEvent"
import * as ConfigError from "@redflow/core/ConfigError"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisConnection from "../../src/RedisConnection.ts"
import * as RedisStreamConsumer from "../../src/RedisStreamConsumer.ts"
import * as RedisStreamSink from "../../src/RedisStreamSink.ts"
import * as RedisStreamSubscription from "../../src/RedisStreamSubscription.ts"
import { readStream, sinkLayers, uniquePrefix, withClient } from "../support.ts"

const MAX_EVENT = 4096

/** 8 events of a few hundred bytes, with large ones (about 20 KiB encoded) at `large`. */
const events = (large: ReadonlyArray<number>): Array<CdcEvent.CdcEvent> =>
  Array.from({ length: 8 }, (_, i) =>
    SyntheticSource.eventAt(i + 1, { tables: ["orders"], ...(large.includes(i) ? { payloadBytes: 20_000 } : {}) })
  )

const write = (url: string, input: ReadonlyArray<CdcEvent.CdcEvent>, options: RedisStreamSink.Options) =>
  Stream.fromIterable(input).pipe(Stream.run(RedisStreamSink.make(options)), Effect.provide(sinkLayers(url)))

const consumeAll = (url: string, stream: string, limit: number) =>
  Effect.gen(function* () {
    const handled: Array<RedisStreamConsumer.Message> = []
    yield* RedisStreamConsumer.run({
      stream,
      group: "g",
      consumer: "c1",
      limit,
      handler: (_event, message) => Effect.sync(() => void handled.push(message))
    }).pipe(Effect.provide(RedisConnection.layer({ url })))
    return handled
  })

layer(RedisTestServer.layer(), { excludeTestServices: true })("events larger than maxEventBytes", (it) => {
  it.effect("by default: dead-lettered with its size and the reason; the others written, in order", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const stream = uniquePrefix("large.dl")
      const deadLetterStream = uniquePrefix("large.dl.dead")
      const input = events([3])
      const encoded = JSON.stringify(input[3])
      expect(encoded.length).toBeGreaterThan(MAX_EVENT)
      const summary = yield* write(url, input, {
        stream,
        deadLetterStream,
        pipeline: uniquePrefix("p"),
        maxEventBytes: MAX_EVENT
      })
      expect(summary.deadLettered).toBe(1)
      const entries = yield* Effect.promise(() => readStream(url, stream))
      expect(entries.map((e) => e.fields.id)).toEqual(input.filter((_, i) => i !== 3).map((e) => e.id))
      const dead = yield* Effect.promise(() => readStream(url, deadLetterStream))
      expect(dead.length).toBe(1)
      expect(dead[0]!.fields.id).toBe(input[3]!.id)
      expect(dead[0]!.fields.error).toContain(
        `event is ${encoded.length} bytes encoded, more than maxEventBytes (4096)`
      )
      expect(dead[0]!.fields.error).toContain('largeEvents: "reference"')
      // it fits a batch, so its body is kept: nothing is lost
      expect(dead[0]!.fields.event).toBe(encoded)
    })
  )

  it.effect("maxEventBytes above batch.maxBytes is a configuration error naming the option", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const error = yield* Effect.flip(
        write(url, events([]), { stream: uniquePrefix("large.cfg"), batch: { maxBytes: 8192 }, maxEventBytes: 9000 })
      )
      expect(error).toBeInstanceOf(ConfigError.ConfigError)
      expect((error as ConfigError.ConfigError).path).toEqual(["maxEventBytes"])
      expect(error.message).toContain("must be at most batch.maxBytes (8192), got 9000")
    })
  )

  it.effect(
    "by reference: the body under a key in the stream's slot with its TTL, the consumer gets the full event",
    () =>
      Effect.gen(function* () {
        const { url } = yield* RedisTestServer.RedisTestServer
        const stream = uniquePrefix("large.ref")
        const input = events([2, 5])
        const summary = yield* write(url, input, {
          stream,
          pipeline: uniquePrefix("p"),
          maxEventBytes: MAX_EVENT,
          largeEvents: "reference",
          largeEventTtl: "1 hour"
        })
        expect(summary.deadLettered).toBe(0)
        expect(summary.written).toBe(8)
        const entries = yield* Effect.promise(() => readStream(url, stream))
        expect(entries.map((e) => e.fields.id)).toEqual(input.map((e) => e.id))
        for (const [i, entry] of entries.entries()) {
          if (i !== 2 && i !== 5) {
            expect(entry.fields.event).toBe(JSON.stringify(input[i]))
            expect(entry.fields.ref).toBeUndefined()
            continue
          }
          expect(entry.fields.event).toBeUndefined()
          const ref = entry.fields.ref!
          expect(ref).toBe(`{${stream}}:redflow:body:${input[i]!.id}`)
          expect(calculateSlot(ref)).toBe(calculateSlot(stream))
          const [body, ttl] = yield* Effect.promise(() =>
            withClient(url, async (c) => [await c.get(ref), await c.pttl(ref)] as const)
          )
          expect(body).toBe(JSON.stringify(input[i]))
          expect(ttl).toBeGreaterThan(0)
          expect(ttl).toBeLessThanOrEqual(3_600_000)
        }

        const handled = yield* consumeAll(url, stream, 8)
        expect(handled.map((m) => m.event)).toEqual(input)
        const big = handled.find((m) => m.id === entries[2]!.id)!
        expect(big.fields.event).toBe(JSON.stringify(input[2]))
        expect(big.fields.ref).toBe(entries[2]!.fields.ref)
      })
  )

  it.effect(
    "by reference, read by a plain subscription: every event whole, in order; a body gone is skipped, never half-read",
    () =>
      Effect.gen(function* () {
        const { url } = yield* RedisTestServer.RedisTestServer
        const stream = uniquePrefix("large.sub")
        const input = events([1, 6])
        yield* write(url, input, {
          stream,
          pipeline: uniquePrefix("p"),
          maxEventBytes: MAX_EVENT,
          largeEvents: "reference",
          largeEventTtl: "1 hour"
        })
        const read = (count: number) =>
          RedisStreamSubscription.subscribe({ stream, from: "0-0", count: 3 }).pipe(
            Stream.take(count),
            Stream.runCollect,
            Effect.provide(RedisConnection.layer({ url }))
          )
        const all = yield* read(8)
        expect(all.map((e) => e.event)).toEqual(input)
        expect(all[1]!.fields.ref).toBeDefined()
        expect(all[1]!.fields.event).toBeUndefined()

        // The body of event 6 gone (its TTL passed, or deleted): the other seven are read, that one is not.
        yield* Effect.promise(() => withClient(url, (c) => c.del(all[6]!.fields.ref!)))
        const after = yield* read(7)
        expect(after.map((e) => e.event.id)).toEqual(input.filter((_, i) => i !== 6).map((e) => e.id))
      })
  )

  it.effect(
    "by reference: a body whose TTL passed sends its entry to the dead-letter stream, never to the handler",
    () =>
      Effect.gen(function* () {
        const { url } = yield* RedisTestServer.RedisTestServer
        const stream = uniquePrefix("large.ttl")
        const input = events([4])
        yield* write(url, input, {
          stream,
          pipeline: uniquePrefix("p"),
          maxEventBytes: MAX_EVENT,
          largeEvents: "reference",
          largeEventTtl: "200 millis"
        })
        const entries = yield* Effect.promise(() => readStream(url, stream))
        const ref = entries[4]!.fields.ref!
        // Redis expires the key itself: wait until it reports it gone.
        yield* Effect.promise(() =>
          withClient(url, async (c) => {
            while ((await c.exists(ref)) === 1) await new Promise((r) => setTimeout(r, 50))
          })
        )
        const handled = yield* consumeAll(url, stream, 7)
        expect(handled.map((m) => m.event.id)).toEqual(input.filter((_, i) => i !== 4).map((e) => e.id))
        const dead = yield* Effect.promise(() => readStream(url, `${stream}.dead-letter`))
        expect(dead.length).toBe(1)
        expect(dead[0]!.fields.source_id).toBe(entries[4]!.id)
        expect(dead[0]!.fields.error).toContain(`the event's body under ${ref} is gone`)
        // handled or parked: nothing stays pending
        const pending = yield* Effect.promise(() => withClient(url, (c) => c.xpending(stream, "g")))
        expect((pending as Array<unknown>)[0]).toBe(0)
      })
  )

  it.effect("by reference, all or nothing: an XADD that fails after the body's SET leaves no body behind", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const stream = uniquePrefix("large.atomic")
      const input = events([0])
      // The first event goes by reference; the stream key holds a string, so its XADD fails (WRONGTYPE).
      yield* Effect.promise(() => withClient(url, (c) => c.set(stream, "not a stream")))
      const error = yield* Effect.flip(
        write(url, input, {
          stream,
          pipeline: uniquePrefix("p"),
          maxEventBytes: MAX_EVENT,
          largeEvents: "reference",
          policies: { RedisCommandError: Schedule.recurs(0) }
        })
      )
      expect(error._tag).toBe("RedisCommandError")
      expect(error.message).toContain("WRONGTYPE")
      expect(error.message).toContain(`(XADD on ${stream}; 0 entries of this call removed again, nothing written)`)
      const ref = `{${stream}}:redflow:body:${input[0]!.id}`
      expect(yield* Effect.promise(() => withClient(url, (c) => c.exists(ref)))).toBe(0)
      expect(yield* Effect.promise(() => withClient(url, (c) => c.get(stream)))).toBe("not a stream")
    })
  )

  it.effect("by reference with a key template and tracing on: the entry carries ref, key and traceparent", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const stream = uniquePrefix("large.traced")
      const input = events([1])
      const tracer = Tracer.make({ span: (options) => new Tracer.NativeSpan(options) })
      yield* write(url, input, {
        stream,
        key: "${key.id}",
        pipeline: uniquePrefix("p"),
        maxEventBytes: MAX_EVENT,
        largeEvents: "reference"
      }).pipe(Effect.withTracer(tracer))
      const entries = yield* Effect.promise(() => readStream(url, stream))
      expect(Object.keys(entries[1]!.fields).sort()).toEqual(["id", "key", "op", "ref", "table", "traceparent"])
      expect(Object.keys(entries[0]!.fields).sort()).toEqual(["event", "id", "key", "op", "table", "traceparent"])
      expect(entries[1]!.fields.key).toBe(String((input[1]!.after ?? input[1]!.before)!.id))
      const handled = yield* consumeAll(url, stream, 8)
      expect(handled.map((m) => m.event)).toEqual(input)
    })
  )

  it.effect("the byte accounting counts a referenced body in full; a small byte bound still carries them all", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const input = events([1, 2, 3, 6])
      const inline = uniquePrefix("large.bytes.inline")
      const byRef = uniquePrefix("large.bytes.ref")
      const inlineSummary = yield* write(url, input, { stream: inline, pipeline: uniquePrefix("p") })
      const refSummary = yield* write(url, input, {
        stream: byRef,
        pipeline: uniquePrefix("p"),
        maxEventBytes: MAX_EVENT,
        largeEvents: "reference"
      })
      // the same events, plus each reference's field: "ref" and its key
      const refs = (yield* Effect.promise(() => readStream(url, byRef))).flatMap((e) =>
        e.fields.ref === undefined ? [] : [e.fields.ref]
      )
      expect(refs.length).toBe(4)
      expect(refSummary.bytes - inlineSummary.bytes).toBe(refs.reduce((n, r) => n + "ref".length + r.length, 0))

      // Bounds of a few large events: the bodies wait for room like inline events, and all arrive.
      const many = Array.from({ length: 40 }, (_, i) =>
        SyntheticSource.eventAt(i + 1, { tables: ["orders"], payloadBytes: 12_000 })
      )
      const bounded = uniquePrefix("large.bounded")
      const batches = yield* Stream.fromIterable(many).pipe(
        RedisStreamSink.deliver({
          stream: bounded,
          pipeline: uniquePrefix("p"),
          batch: { maxBytes: 32 * 1024, maxBufferedBytes: 32 * 1024 },
          maxEventBytes: MAX_EVENT,
          largeEvents: "reference"
        }),
        Stream.runCollect,
        Effect.provide(sinkLayers(url))
      )
      expect(batches.reduce((n, b) => n + b.events, 0)).toBe(40)
      expect(batches.reduce((n, b) => n + b.deadLettered, 0)).toBe(0)
      // every batch, bodies included, within batch.maxBytes
      for (const b of batches) expect(b.bytes).toBeLessThanOrEqual(32 * 1024)
      const handled = yield* consumeAll(url, bounded, 40)
      expect(handled.map((m) => m.event)).toEqual(many)
    })
  )
})
