import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Tracer } from "effect"
import * as TraceContext from "../src/TraceContext.ts"

const EXAMPLE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

describe("TraceContext", () => {
  it("parses the W3C example: trace id, parent id, sampled flag", () => {
    const parsed = TraceContext.parse(EXAMPLE)
    expect(parsed).toEqual({
      span: Tracer.externalSpan({
        traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
        spanId: "00f067aa0ba902b7",
        sampled: true
      })
    })
    const unsampled = TraceContext.parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
    expect("span" in unsampled && unsampled.span.sampled).toBe(false)
  })

  it("refuses what W3C Trace Context refuses; a later version's extra parts are ignored", () => {
    const invalid = [
      "",
      "garbage",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
      "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      `${EXAMPLE}-extra`
    ]
    for (const value of invalid) expect(TraceContext.parse(value)).toHaveProperty("invalid")
    expect(TraceContext.parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future")).toHaveProperty("span")
  })

  it.effect("current: the traceparent of the current span, None outside any span", () =>
    Effect.gen(function* () {
      expect(yield* TraceContext.current).toEqual(Option.none())
      const [value, span] = yield* Effect.all([TraceContext.current, Effect.currentSpan]).pipe(
        Effect.withSpan("produce")
      )
      expect(value).toEqual(Option.some(`00-${span.traceId}-${span.spanId}-01`))
    })
  )

  it.effect("fromTraceparent: a span usable as parent; malformed or missing values are None, not errors", () =>
    Effect.gen(function* () {
      const parent = Option.getOrThrow(yield* TraceContext.fromTraceparent(EXAMPLE))
      const child = yield* Effect.currentSpan.pipe(Effect.withSpan("handle", { parent }))
      expect(child.traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736")
      expect(Option.getOrThrow(child.parent).spanId).toBe("00f067aa0ba902b7")
      expect(yield* TraceContext.fromTraceparent("not-a-traceparent")).toEqual(Option.none())
      expect(yield* TraceContext.fromTraceparent(undefined)).toEqual(Option.none())
    })
  )

  it("format pads 64-bit trace ids on the left", () => {
    expect(TraceContext.format({ traceId: "a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", sampled: false })).toBe(
      "00-0000000000000000a3ce929d0e0e4736-00f067aa0ba902b7-00"
    )
  })
})
