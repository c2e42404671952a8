/**
 * Preparing entries: each event routed to its stream, given its key and encoded, on the producing fiber while the
 * previous batch is being written. An event that cannot be routed, keyed or encoded, or is too large for any batch,
 * becomes an entry of the dead-letter stream that carries the reason: bad data never stops the sink.
 */
import * as Result from "effect/Result"
import type * as CdcEvent from "@redflow/core/CdcEvent"
import * as Position from "@redflow/core/Position"
import * as TraceContext from "@redflow/core/TraceContext"
import { highWaterKey } from "../highWater.ts"
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
  constructor(
    stream: string,
    markKey: string,
    position: Position.Position,
    args: Array<string>,
    bytes: number,
    deadLetter: boolean,
    arrivedAt: number,
    channel: string | undefined
  ) {
    this.stream = stream
    this.markKey = markKey
    this.position = position
    this.args = args
    this.bytes = bytes
    this.deadLetter = deadLetter
    this.arrivedAt = arrivedAt
    this.channel = channel
  }
}

/** What an entry costs besides its event and key: its other fields (position, id, op, table) and their framing. */
export const ENTRY_OVERHEAD = 64

/** What the `traceparent` field adds to an entry with tracing on: its name and its value (always 55 characters). */
export const TRACE_BYTES = TraceContext.FIELD.length + TraceContext.LENGTH

/** Turns events into entries, in order; `now` is the arrival time. */
export type Prepare = (event: CdcEvent.CdcEvent, now: number) => Entry

/**
 * A preparer for one sink: it remembers the previous position (exactly-once needs increasing positions). `traced`
 * (a tracer is installed) gives every entry an eighth argument, the event's own traceparent ("" for the batch write
 * span's), and counts the field in its bytes; untraced, entries are what they were before tracing existed.
 */
export const make = (settings: SinkSettings, traced: boolean): Prepare => {
  const arity = traced ? 8 : 7
  const overhead = traced ? ENTRY_OVERHEAD + TRACE_BYTES : ENTRY_OVERHEAD
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
    if (body.length + reason.length + overhead > settings.maxBytes) {
      reason = `${reason} (body left out: ${body.length} bytes)`
      body = JSON.stringify({ id: event.id, position: event.position, op: event.op, table: event.source.table })
    }
    const args = [event.position, event.id, event.op, event.source.table, "", body, reason]
    if (traced) args.push(TraceContext.ofEvent(event) ?? "")
    const bytes = body.length + reason.length + overhead
    return new EntryImpl(
      settings.deadLetterStream,
      deadLetterMarkKey,
      event.position,
      args,
      bytes,
      true,
      now,
      undefined
    )
  }

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
    const bytes = encoded.length + key.length + overhead
    if (bytes > settings.maxBytes) {
      return deadLetter(
        event,
        `event is ${bytes} bytes encoded, more than batch.maxBytes (${settings.maxBytes}): no batch can carry it to ` +
          `stream "${stream}"; raise batch.maxBytes (and batch.maxBufferedBytes) or make the event smaller`,
        encoded,
        now
      )
    }
    const args = new Array<string>(arity)
    args[0] = event.position
    args[1] = event.id
    args[2] = event.op
    args[3] = event.source.table
    args[4] = key
    args[5] = encoded
    args[6] = ""
    if (traced) args[7] = TraceContext.ofEvent(event) ?? ""
    return new EntryImpl(stream, markKey, event.position, args, bytes, false, now, channelOf(event))
  }
}
