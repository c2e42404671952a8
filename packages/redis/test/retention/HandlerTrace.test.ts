/**
 * Traces across Redis: a producer span's `traceparent`, carried in the entry (XADDed by hand here, as a producer
 * other than the sink would write it; the sink's own are in SinkTrace.test.ts), is the parent of the consumer's
 * `redflow.consume.handle` span; a malformed one is ignored and the entry still
 * handled; under the native tracer (tracing off) the handler runs in no span.
 */
import { expect, layer } from "@effect/vitest"
import { Effect, Option, Stream } from "effect"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as TraceContext from "@redflow/core/TraceContext"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisConnection from "../../src/RedisConnection.ts"
import * as RedisStreamConsumer from "../../src/RedisStreamConsumer.ts"
import * as RedisStreamSink from "../../src/RedisStreamSink.ts"
import { collecting, readStream, sinkLayers, uniquePrefix, withClient } from "../support.ts"

/** Writes `count` events with the sink to a scratch stream, then copies them to `stream` with extra fields each. */
const produce = (url: string, stream: string, extra: ReadonlyArray<Record<string, string>>) =>
  Effect.gen(function* () {
    const scratch = `${stream}.scratch`
    yield* SyntheticSource.make({ count: extra.length, tables: ["orders"] }).pipe(
      Stream.run(RedisStreamSink.make({ stream: scratch })),
      Effect.provide(sinkLayers(url))
    )
    const entries = yield* Effect.promise(() => readStream(url, scratch))
    yield* Effect.promise(() =>
      withClient(url, async (c) => {
        for (const [i, entry] of entries.entries()) {
          const fields = { ...entry.fields, ...extra[i] }
          await c.xadd(stream, "*", ...Object.entries(fields).flat())
        }
      })
    )
  })

layer(RedisTestServer.layer(), { excludeTestServices: true })("the handler span continues the entry's trace", (it) => {
  it.effect("parent = the producer's span; a malformed traceparent is ignored, the entry still handled", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const stream = uniquePrefix("trace")
      const { spans, tracer } = collecting()

      // The producing side: its span's traceparent, as the sink will write it.
      const producer = yield* Effect.gen(function* () {
        const span = yield* Effect.currentSpan
        const traceparent = Option.getOrThrow(yield* TraceContext.current)
        return { traceId: span.traceId, spanId: span.spanId, traceparent }
      }).pipe(Effect.withSpan("producer.write"), Effect.withTracer(tracer))
      expect(producer.traceparent).toBe(`00-${producer.traceId}-${producer.spanId}-01`)

      yield* produce(url, stream, [{ traceparent: producer.traceparent }, { traceparent: "00-garbage-01" }, {}])

      const seen: Array<{ id: string; traceId: string }> = []
      yield* RedisStreamConsumer.run({
        stream,
        group: "g",
        consumer: "c1",
        limit: 3,
        handler: (_event, message) =>
          Effect.map(Effect.currentSpan, (span) => {
            seen.push({ id: message.id, traceId: span.traceId })
          })
      }).pipe(Effect.withTracer(tracer), Effect.provide(RedisConnection.layer({ url })))

      const handled = spans.filter((s) => s.name === "redflow.consume.handle")
      expect(handled.length).toBe(3)
      const ids = (yield* Effect.promise(() => readStream(url, stream))).map((e) => e.id)
      const [first, second, third] = ids.map((id) => handled.find((s) => s.attributes.get("redflow.entry.id") === id)!)

      // across Redis: same trace, the producer's span as parent
      expect(first!.traceId).toBe(producer.traceId)
      expect(Option.getOrThrow(first!.parent).spanId).toBe(producer.spanId)
      expect(first!.kind).toBe("consumer")
      expect(Object.fromEntries(first!.attributes)).toMatchObject({
        "redflow.stream": stream,
        "redflow.group": "g",
        "redflow.entry.id": ids[0],
        "redflow.deliveries": 1
      })
      // the handler itself runs inside that span
      expect(seen.find((s) => s.id === ids[0])?.traceId).toBe(producer.traceId)

      // malformed and missing: a span of another trace, the entry handled and acknowledged all the same
      expect(second!.traceId).not.toBe(producer.traceId)
      expect(third!.traceId).not.toBe(producer.traceId)
      expect(seen.map((s) => s.id).sort()).toEqual([...ids].sort())
      const pending = yield* Effect.promise(() => withClient(url, (c) => c.xpending(stream, "g")))
      expect((pending as Array<unknown>)[0]).toBe(0)
    })
  )

  it.effect("tracing off (the native tracer): the handler runs in no span", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const stream = uniquePrefix("trace.off")
      yield* produce(url, stream, [{ traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" }])
      const inSpan: Array<boolean> = []
      yield* RedisStreamConsumer.run({
        stream,
        group: "g",
        consumer: "c1",
        limit: 1,
        handler: () => Effect.map(Effect.option(Effect.currentSpan), (span) => void inSpan.push(Option.isSome(span)))
      }).pipe(Effect.provide(RedisConnection.layer({ url })))
      expect(inSpan).toEqual([false])
    })
  )
})
