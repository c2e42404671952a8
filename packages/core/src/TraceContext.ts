/**
 * W3C Trace Context (`traceparent`) for entries that cross Redis: the producing side writes the current span's
 * `traceparent` into the entry, and the consumer makes it the parent of its handler span, so one trace runs from the
 * change in the database to the handler that acted on it.
 *
 * The format is `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>` (https://www.w3.org/TR/trace-context/);
 * bit 0 of the flags is "sampled". A value that does not parse is not an error: an entry whose trace context is
 * damaged is still delivered, only without the parent (a debug log says why).
 *
 * @example
 * ```ts
 * // producing side
 * const fields = Option.match(yield* TraceContext.current, {
 *   onNone: () => base,
 *   onSome: (tp) => ({ ...base, [TraceContext.FIELD]: tp })
 * })
 * // consuming side
 * const parent = yield* TraceContext.fromTraceparent(entry.fields[TraceContext.FIELD])
 * ```
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"

/**
 * The entry field that carries the trace context.
 *
 * @since 0.1.0
 * @category constants
 */
export const FIELD = "traceparent"

/**
 * The length of a version-00 `traceparent` value, which {@link format} always makes: `00-` + 32 + `-` + 16 + `-` + 2.
 *
 * @since 0.1.0
 * @category constants
 */
export const LENGTH = 55

const HEX_TRACE = /^[0-9a-f]{32}$/
const HEX_SPAN = /^[0-9a-f]{16}$/
const HEX_BYTE = /^[0-9a-f]{2}$/
const ZERO_TRACE = "0".repeat(32)
const ZERO_SPAN = "0".repeat(16)

/**
 * The `traceparent` of a span (version 00). Trace ids shorter than 32 hex digits (a tracer with 64-bit ids) are
 * padded on the left, as the W3C spec asks.
 *
 * @since 0.1.0
 * @category formatting
 */
export const format = (span: { readonly traceId: string; readonly spanId: string; readonly sampled: boolean }) =>
  `00-${span.traceId.padStart(32, "0")}-${span.spanId.padStart(16, "0")}-${span.sampled ? "01" : "00"}`

/**
 * The `traceparent` of the current span, `None` outside any span (nothing to continue).
 *
 * @since 0.1.0
 * @category formatting
 */
export const current: Effect.Effect<Option.Option<string>> = Effect.map(
  Effect.option(Effect.currentParentSpan),
  Option.map(format)
)

/**
 * Why a `traceparent` value does not parse, or the span it names.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parse = (value: string): { readonly span: Tracer.ExternalSpan } | { readonly invalid: string } => {
  const parts = value.trim().split("-")
  if (parts.length < 4) return { invalid: "expected 4 dash-separated parts" }
  const [version, traceId, spanId, flags] = parts as [string, string, string, string]
  if (!HEX_BYTE.test(version) || version === "ff") return { invalid: `version ${JSON.stringify(version)}` }
  // Version 00 has exactly four parts; a later version may append more, which a 00 reader ignores.
  if (version === "00" && parts.length !== 4) return { invalid: "version 00 has exactly 4 parts" }
  if (!HEX_TRACE.test(traceId) || traceId === ZERO_TRACE) return { invalid: "trace id is not 32 lowercase hex digits" }
  if (!HEX_SPAN.test(spanId) || spanId === ZERO_SPAN) return { invalid: "parent id is not 16 lowercase hex digits" }
  if (!HEX_BYTE.test(flags)) return { invalid: "flags are not 2 hex digits" }
  return { span: Tracer.externalSpan({ traceId, spanId, sampled: (parseInt(flags, 16) & 1) === 1 }) }
}

/**
 * The span a `traceparent` value names, to use as a parent (`Effect.withParentSpan`, `withSpan`'s `parent`).
 * `None` when there is no value; a malformed value is `None` too, with a debug log, never an error.
 *
 * @since 0.1.0
 * @category parsing
 */
export const fromTraceparent = (value: string | undefined): Effect.Effect<Option.Option<Tracer.ExternalSpan>> => {
  if (value === undefined || value === "") return Effect.succeedNone
  const parsed = parse(value)
  if ("span" in parsed) return Effect.succeedSome(parsed.span)
  return Effect.as(
    Effect.logDebug(`ignoring malformed traceparent ${JSON.stringify(value.slice(0, 80))}: ${parsed.invalid}`),
    Option.none()
  )
}

// Events are plain data (their schema is what the envelope writes), so their trace context rides beside them.
const ofEvents = new WeakMap<object, string>()

/**
 * Gives an event the trace context it was produced in, for a source that has one per event (a span around the work
 * that produced the change): the sink writes it as the entry's `traceparent` instead of its batch write span's. The
 * value is checked here; one that does not parse is not attached (and `false` returned).
 *
 * @since 0.1.0
 * @category events
 */
export const attach = (event: object, context: string | Tracer.AnySpan): boolean => {
  const value = typeof context === "string" ? context : format(context)
  if (value.length !== LENGTH || "invalid" in parse(value)) return false
  ofEvents.set(event, value)
  return true
}

/**
 * The `traceparent` {@link attach} gave an event, if any.
 *
 * @since 0.1.0
 * @category events
 */
export const ofEvent = (event: object): string | undefined => ofEvents.get(event)
