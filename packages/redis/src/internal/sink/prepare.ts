/**
 * Preparing entries: each event routed to its stream, given its key and encoded, on the producing fiber while the
 * previous batch is being written. An event that cannot be routed, keyed or encoded, or is too large for any batch,
 * becomes an entry of the dead-letter stream that carries the reason: bad data never stops the sink.
 */
import * as Result from "effect/Result"
import type * as CdcEvent from "@redflow/core/CdcEvent"
import * as Position from "@redflow/core/Position"
import * as TraceContext from "@redflow/core/TraceContext"
import { bodyKey, highWaterKey } from "../highWater.ts"
import type { SinkSettings } from "./options.ts"

/** One event, ready to be written. */
export interface Entry {
  readonly stream: string
  /** The stream's high-water key (same hash slot). */
  readonly markKey: string
  readonly position: Position.Position
  /**
   * The script's per-entry arguments (position, id, op, table, key, event, error, and with tracing on the event's
   * own traceparent; see `internal/scripts.ts`).
   * Emptied once copied into a write's call, so the encoded event is not held longer than the write needs it.
   */
  readonly args: Array<string>
  readonly bytes: number
  readonly deadLetter: boolean
  readonly arrivedAt: number
  /** The `publish` channel of its notice; `undefined` without `publish`, for a dead letter, or when it renders none. */
  readonly channel: string | undefined
  /** With `largeEvents: "reference"`, the key the event's body is stored under (the entry then carries it in `ref`). */
  readonly ref: string | undefined
}

/**
 * An entry made by a constructor, with its arguments in an array filled by index, rather than from object and array
 * literals: V8 pretenures a literal's allocation site once its objects live long (entries wait in the queue), and the
 * encoded events they reference then outlive the young generation too (bench/RESULTS.md). Entries made this way die
 * young.
 */
class EntryImpl implements Entry {
  readonly stream: string
  readonly markKey: string
  readonly position: Position.Position
  readonly args: Array<string>
  readonly bytes: number
  readonly deadLetter: boolean
  readonly arrivedAt: number
  readonly channel: string | undefined
  readonly ref: string | undefined
  constructor(
    stream: string,
    markKey: string,
    position: Position.Position,
    args: Array<string>,
    bytes: number,
    deadLetter: boolean,
    arrivedAt: number,
    channel: string | undefined,
    ref: string | undefined
  ) {
    this.stream = stream
    this.markKey = markKey
    this.position = position
    this.args = args
    this.bytes = bytes
    this.deadLetter = deadLetter
    this.arrivedAt = arrivedAt
    this.channel = channel
    this.ref = ref
  }
}

/** What an entry costs besides its event and key: its other fields (position, id, op, table) and their framing. */
export const ENTRY_OVERHEAD = 64

/** What the `traceparent` field adds to an entry with tracing on: its name and its value (always 55 characters). */
export const TRACE_BYTES = TraceContext.FIELD.length + TraceContext.LENGTH

/** Turns events into entries, in order; `now` is the arrival time. */
export type Prepare = (event: CdcEvent.CdcEvent, now: number) => Entry

/** The field of an entry written by reference: the key holding the event's body. */
export const REF_FIELD = "ref"

/**
 * A preparer for one sink: it remembers the previous position (exactly-once needs increasing positions). `traced`
 * (a tracer is installed) gives every entry one more argument, the event's own traceparent ("" for the batch write
 * span's), and counts the field in its bytes; untraced, entries are what they were before tracing existed. With
 * `largeEvents: "reference"` every entry has one more again: the key its body is stored under, "" when inline.
 */
export const make = (settings: SinkSettings, traced: boolean): Prepare => {
  const references = settings.largeEvents === "reference"
  const traceAt = 7
  const refAt = traced ? 8 : 7
  const arity = 7 + (traced ? 1 : 0) + (references ? 1 : 0)
  const overhead = traced ? ENTRY_OVERHEAD + TRACE_BYTES : ENTRY_OVERHEAD
  /** The per-entry arguments after the first seven. */
  const extra = (args: Array<string>, event: CdcEvent.CdcEvent, ref: string) => {
    if (traced) args[traceAt] = TraceContext.ofEvent(event) ?? ""
    if (references) args[refAt] = ref
  }
  let previous: Position.Position | undefined
  // Stream names repeat: find each one's high-water key once.
  const markKeys = new Map<string, string | undefined>()
  const markKeyOf = (stream: string) => {
    if (markKeys.has(stream)) return markKeys.get(stream)
    const key = highWaterKey(stream)
    markKeys.set(stream, key)
    return key
  }
  const deadLetterMarkKey = highWaterKey(settings.deadLetterStream)!
  const publish = settings.publish
  const fixedChannel = publish !== undefined && publish.tables.size === 0 && publish.default.isConstant
  const channelOf = (event: CdcEvent.CdcEvent): string | undefined => {
    if (publish === undefined) return undefined
    if (fixedChannel) return publish.default.template
    const channel = publish.render(event)
    return Result.isSuccess(channel) ? channel.success : undefined
  }

  const deadLetter = (event: CdcEvent.CdcEvent, why: string, encoded: string | undefined, now: number): Entry => {
    let reason = why
    let body = encoded
    if (body === undefined) {
      try {
        body = JSON.stringify(event)
      } catch {
        body = JSON.stringify({ id: event.id, position: event.position })
      }
    }
    // A dead-letter entry must fit a batch too: an event too large to write is named, not copied.
    if (Buffer.byteLength(body) + Buffer.byteLength(reason) + overhead > settings.maxBytes) {
      reason = `${reason} (body left out: ${Buffer.byteLength(body)} bytes)`
      body = JSON.stringify({ id: event.id, position: event.position, op: event.op, table: event.source.table })
    }
    const args = [event.position, event.id, event.op, event.source.table, "", body, reason]
    extra(args, event, "")
    const bytes = Buffer.byteLength(body) + Buffer.byteLength(reason) + overhead
    return new EntryImpl(
      settings.deadLetterStream,
      deadLetterMarkKey,
      event.position,
      args,
      bytes,
      true,
      now,
      undefined,
      undefined
    )
  }

  const tooLargeForAnyBatch = (event: CdcEvent.CdcEvent, bytes: number, stream: string, encoded: string, now: number) =>
    deadLetter(
      event,
      `event is ${bytes} bytes encoded, more than batch.maxBytes (${settings.maxBytes}): no batch can carry it to ` +
        `stream "${stream}"; raise batch.maxBytes (and batch.maxBufferedBytes) or make the event smaller`,
      encoded,
      now
    )

  return (event, now) => {
    if (
      settings.guarantee === "exactly-once" &&
      previous !== undefined &&
      !Position.isAfter(event.position, previous)
    ) {
      return deadLetter(
        event,
        `position ${event.position} is not after the previous event's ${previous}; exactly-once needs increasing positions`,
        undefined,
        now
      )
    }
    previous = event.position
    let encoded: string
    try {
      encoded = settings.envelope.encode(event)
    } catch (e) {
      return deadLetter(event, `cannot encode the event: ${(e as Error)?.message ?? e}`, undefined, now)
    }
    const routed = settings.route.render(event)
    if (Result.isFailure(routed)) return deadLetter(event, routed.failure.message, encoded, now)
    const stream = routed.success
    let key = ""
    // An event without a row image (a truncate) has no key to give: it is written without one. A row whose key
    // cannot be resolved is a routing problem and goes to the dead-letter stream.
    if (settings.key !== undefined && (event.after !== null || event.before !== null)) {
      const k = settings.key.render(event)
      if (Result.isFailure(k)) return deadLetter(event, k.failure.message, encoded, now)
      key = k.success
    }
    const markKey = markKeyOf(stream)
    if (markKey === undefined) {
      return deadLetter(
        event,
        `stream name "${stream}" has "}" without a hash tag; the sink cannot place its high-water mark in the stream's slot`,
        encoded,
        now
      )
    }
    // UTF-8 bytes, as written: what batch.maxBytes and batch.maxBufferedBytes count.
    const encodedBytes = Buffer.byteLength(encoded)
    let bytes = encodedBytes + Buffer.byteLength(key) + overhead
    // Larger than any batch first: such an event is named, not copied, whatever `largeEvents` says.
    if (bytes > settings.maxBytes) return tooLargeForAnyBatch(event, bytes, stream, encoded, now)
    let ref = ""
    if (encodedBytes > settings.maxEventBytes) {
      if (!references) {
        return deadLetter(
          event,
          `event is ${encodedBytes} bytes encoded, more than maxEventBytes (${settings.maxEventBytes}): not ` +
            `written to stream "${stream}"; raise maxEventBytes (at most batch.maxBytes), or set ` +
            `largeEvents: "reference" to store its body under a key of its own`,
          encoded,
          now
        )
      }
      // The body goes with the batch (to its SET), so it counts in full; the entry adds the `ref` field.
      ref = bodyKey(stream, event.id)!
      bytes += REF_FIELD.length + ref.length
      if (bytes > settings.maxBytes) return tooLargeForAnyBatch(event, bytes, stream, encoded, now)
    }
    const args = new Array<string>(arity)
    args[0] = event.position
    args[1] = event.id
    args[2] = event.op
    args[3] = event.source.table
    args[4] = key
    args[5] = encoded
    args[6] = ""
    if (arity > 7) extra(args, event, ref)
    return new EntryImpl(
      stream,
      markKey,
      event.position,
      args,
      bytes,
      false,
      now,
      channelOf(event),
      ref === "" ? undefined : ref
    )
  }
}
