/**
 * Traces end to end, against a spawned Redis: the sink's `redflow.sink.write` and `redflow.sink.checkpoint` spans,
 * the `traceparent` each entry carries (its batch write span's, or its event's own), and the consumer's
 * `redflow.consume.read` and `redflow.consume.handle` spans continuing those traces. Tracing off (the native tracer),
 * entries carry no `traceparent` and their byte accounting is what it was.
 */
import { expect, layer } from "@effect/vitest"
import { Effect, Option, Schedule, Stream, Tracer } from "effect"
import type * as CdcEvent from "@redflow/core/CdcEvent"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as TraceContext from "@redflow/core/TraceContext"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisConnection from "../../src/RedisConnection.ts"
import * as RedisStreamConsumer from "../../src/RedisStreamConsumer.ts"
import * as RedisStreamSink from "../../src/RedisStreamSink.ts"
import { collecting, readStream, sinkLayers, uniquePrefix, withClient } from "../support.ts"

const COUNT = 12
const events = (): Array<CdcEvent.CdcEvent> =>
  Array.from({ length: COUNT }, (_, i) => SyntheticSource.eventAt(i + 1, { tables: ["orders"] }))

const attrs = (span: Tracer.NativeSpan) => Object.fromEntries(span.attributes)
const parentId = (span: Tracer.NativeSpan) => Option.getOrThrow(span.parent).spanId

layer(RedisTestServer.layer(), { excludeTestServices: true })("traces from the sink through Redis", (it) => {
  it.effect("write and checkpoint spans, a traceparent per entry, the consumer's read and handler spans", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const stream = uniquePrefix("trace.sink")
      const pipeline = uniquePrefix("p")
      const { spans, tracer } = collecting()

      // One event comes with a trace context of its own (a source that has one per event).
      const own = yield* Effect.map(Effect.currentSpan, TraceContext.format).pipe(
        Effect.withSpan("source.change"),
        Effect.withTracer(tracer)
      )
      const input = events()
      expect(TraceContext.attach(input[4]!, own)).toBe(true)
      expect(TraceContext.attach(input[5]!, "00-garbage-01")).toBe(false)

      // batch.maxEvents 8: writes of 2 events, several batches and checkpoints
      const summary = yield* Stream.fromIterable(input).pipe(
        Stream.run(RedisStreamSink.make({ stream, pipeline, batch: { maxEvents: 8 } })),
        Effect.withSpan("app.produce"),
        Effect.withTracer(tracer),
        Effect.provide(sinkLayers(url))
      )
      expect(summary.written).toBe(COUNT)
      const app = spans.find((s) => s.name === "app.produce")!

      const writes = spans.filter((s) => s.name === "redflow.sink.write")
      expect(writes.length).toBeGreaterThan(1)
      for (const w of writes) {
        expect(w.kind).toBe("producer")
        expect(w.traceId).toBe(app.traceId)
        expect(parentId(w)).toBe(app.spanId)
        expect(w.status._tag).toBe("Ended")
        expect(attrs(w)).toMatchObject({
          "messaging.system": "redis",
          "redflow.pipeline": pipeline,
          "redflow.streams": [stream],
          "redflow.stream": stream,
          "redflow.attempts": 1,
          "redflow.retries": 0,
          "redflow.dead_lettered": 0
        })
        expect(attrs(w)["redflow.bytes"]).toBeGreaterThan(0)
      }
      expect(writes.reduce((n, w) => n + (attrs(w)["redflow.entries"] as number), 0)).toBe(COUNT)
      expect(writes.reduce((n, w) => n + (attrs(w)["redflow.bytes"] as number), 0)).toBe(summary.bytes)

      const checkpoints = spans.filter((s) => s.name === "redflow.sink.checkpoint")
      expect(checkpoints.length).toBeGreaterThan(0)
      for (const c of checkpoints) {
        expect(parentId(c)).toBe(app.spanId)
        expect(attrs(c)["redflow.pipeline"]).toBe(pipeline)
        // each checkpoint links the writes it covers, and covers as many entries as they carried
        const linked = c.links.map((l) => writes.find((w) => w.spanId === l.span.spanId)!)
        expect(linked.every((w) => w !== undefined)).toBe(true)
        expect(attrs(c)["redflow.batches"]).toBe(linked.length)
        expect(attrs(c)["redflow.entries"]).toBe(
          linked.reduce((n, w) => n + (attrs(w)["redflow.entries"] as number), 0)
        )
      }
      expect(checkpoints.reduce((n, c) => n + c.links.length, 0)).toBe(writes.length)
      expect(attrs(checkpoints[checkpoints.length - 1]!)["redflow.position"]).toBe(Option.getOrThrow(summary.position))

      // In Redis: every entry carries a traceparent, its write span's, or for the event that has one, its own.
      const entries = yield* Effect.promise(() => readStream(url, stream))
      expect(entries.length).toBe(COUNT)
      const byWrite = new Map<string, number>()
      for (const [i, entry] of entries.entries()) {
        const value = entry.fields.traceparent!
        expect(value.length + "traceparent".length).toBe(66)
        if (i === 4) {
          expect(value).toBe(own)
          continue
        }
        const parsed = TraceContext.parse(value)
        expect("span" in parsed).toBe(true)
        const spanId = (parsed as { span: Tracer.ExternalSpan }).span.spanId
        const write = writes.find((w) => w.spanId === spanId)
        expect(value).toBe(`00-${app.traceId}-${write!.spanId}-01`)
        byWrite.set(spanId, (byWrite.get(spanId) ?? 0) + 1)
      }
      // the event with its own context is the one entry its write span does not name
      for (const w of writes) {
        const carried = byWrite.get(w.spanId) ?? 0
        const entriesOf = attrs(w)["redflow.entries"] as number
        expect(carried === entriesOf || carried === entriesOf - 1).toBe(true)
      }

      // The consumer, traced with the same tracer: each handler span continues its entry's trace.
      const handledIn = new Map<string, string>()
      yield* RedisStreamConsumer.run({
        stream,
        group: "g",
        consumer: "c1",
        limit: COUNT,
        handler: (_event, message) =>
          Effect.map(Effect.currentSpan, (span) => void handledIn.set(message.id, span.spanId))
      }).pipe(Effect.withSpan("app.consume"), Effect.withTracer(tracer), Effect.provide(RedisConnection.layer({ url })))
      const consume = spans.find((s) => s.name === "app.consume")!

      const handlers = spans.filter((s) => s.name === "redflow.consume.handle")
      expect(handlers.length).toBe(COUNT)
      for (const entry of entries) {
        const handler = handlers.find((h) => h.attributes.get("redflow.entry.id") === entry.id)!
        const producer = (TraceContext.parse(entry.fields.traceparent!) as { span: Tracer.ExternalSpan }).span
        expect(handler.traceId).toBe(producer.traceId)
        expect(parentId(handler)).toBe(producer.spanId)
        expect(handledIn.get(entry.id)).toBe(handler.spanId)
      }
      // the handler of the event with its own context continues the source's trace, not the sink's
      const ownHandler = handlers.find((h) => h.attributes.get("redflow.entry.id") === entries[4]!.id)!
      expect(ownHandler.traceId).not.toBe(app.traceId)

      const reads = spans.filter((s) => s.name === "redflow.consume.read")
      expect(reads.length).toBeGreaterThan(0)
      for (const r of reads) {
        expect(parentId(r)).toBe(consume.spanId)
        expect(attrs(r)).toMatchObject({
          "messaging.system": "redis",
          "redflow.stream": stream,
          "redflow.group": "g",
          "redflow.consumer": "c1"
        })
        expect(r.links.length).toBe(attrs(r)["redflow.entries"])
      }
      // every entry was read once, and its read links its producing span
      const links = reads.flatMap((r) => r.links)
      expect(links.map((l) => l.attributes["redflow.entry.id"]).sort()).toEqual(entries.map((e) => e.id).sort())
      for (const l of links) {
        const entry = entries.find((e) => e.id === l.attributes["redflow.entry.id"])!
        expect(TraceContext.format(l.span)).toBe(entry.fields.traceparent)
      }
    })
  )

  it.effect("a write refused for real (OOM) and retried: its span counts the attempts and retries", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const stream = uniquePrefix("trace.retry")
      const { spans, tracer } = collecting()
      const config = (value: string) =>
        Effect.promise(() => withClient(url, (c) => c.config("SET", "maxmemory", value)))
      // The first half is written (the sink has read the stream's mark); then the server is over maxmemory for a
      // moment, so the next write is refused and retried.
      const input = events()
      const written = Effect.promise(() => withClient(url, (c) => c.xlen(stream)))
      const source = Stream.concat(
        Stream.fromIterable(input.slice(0, 6)),
        Stream.fromEffect(
          Effect.gen(function* () {
            while ((yield* written) < 6) yield* Effect.sleep("20 millis")
            yield* config("1")
            yield* Effect.forkDetach(Effect.andThen(Effect.sleep("700 millis"), config("0")))
          })
        ).pipe(Stream.flatMap(() => Stream.fromIterable(input.slice(6))))
      )
      const summary = yield* source.pipe(
        Stream.run(
          RedisStreamSink.make({
            stream,
            pipeline: uniquePrefix("p"),
            policies: { RedisOutOfMemory: Schedule.spaced("100 millis") }
          })
        ),
        Effect.withSpan("app.produce"),
        Effect.withTracer(tracer),
        Effect.provide(sinkLayers(url))
      )
      expect(summary.written).toBe(COUNT)
      const writes = spans.filter((s) => s.name === "redflow.sink.write")
      expect(writes.length).toBe(2)
      const [first, second] = writes as [Tracer.NativeSpan, Tracer.NativeSpan]
      expect(attrs(first)).toMatchObject({ "redflow.entries": 6, "redflow.attempts": 1, "redflow.retries": 0 })
      expect(attrs(second)["redflow.entries"]).toBe(6)
      expect(attrs(second)["redflow.attempts"]).toBeGreaterThan(1)
      expect(attrs(second)["redflow.retries"]).toBe((attrs(second)["redflow.attempts"] as number) - 1)
      expect(second.status._tag).toBe("Ended")
      // written once, whatever the tries
      expect((yield* Effect.promise(() => readStream(url, stream))).length).toBe(COUNT)
    })
  )

  it.effect("tracing off: no traceparent field, and 66 bytes less per entry in the byte accounting", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const off = uniquePrefix("trace.off")
      const on = uniquePrefix("trace.on")
      const input = events()
      TraceContext.attach(input[0]!, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
      const sinkOff = yield* Stream.fromIterable(input).pipe(
        Stream.run(RedisStreamSink.make({ stream: off, pipeline: uniquePrefix("p") })),
        Effect.provide(sinkLayers(url))
      )
      const { tracer } = collecting()
      const sinkOn = yield* Stream.fromIterable(input).pipe(
        Stream.run(RedisStreamSink.make({ stream: on, pipeline: uniquePrefix("p") })),
        Effect.withTracer(tracer),
        Effect.provide(sinkLayers(url))
      )
      const entriesOff = yield* Effect.promise(() => readStream(url, off))
      expect(entriesOff.length).toBe(COUNT)
      for (const entry of entriesOff) expect(Object.keys(entry.fields).sort()).toEqual(["event", "id", "op", "table"])
      const entriesOn = yield* Effect.promise(() => readStream(url, on))
      for (const entry of entriesOn) {
        expect(Object.keys(entry.fields).sort()).toEqual(["event", "id", "op", "table", "traceparent"])
      }
      expect(entriesOn[0]!.fields.traceparent).toBe("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
      expect(sinkOn.bytes - sinkOff.bytes).toBe(COUNT * 66)
    })
  )
})
