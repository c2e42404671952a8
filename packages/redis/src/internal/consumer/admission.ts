/**
 * Admission: turning what a read returned into messages. Entries already in flight here are skipped (a claim can
 * return them), entries deleted from the stream are acknowledged (there is nothing left to process), entries past
 * `maxDeliveries` or that do not decode go to the dead-letter stream. An entry the sink wrote by reference (a `ref`
 * field instead of `event`, `largeEvents: "reference"`) gets its body read back (one `MGET` per read); one whose body
 * is gone (its TTL passed) goes to the dead-letter stream too, never to the handler as an empty event. Also the
 * re-creation of a group destroyed under the running consumer.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Result from "effect/Result"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import type { RedisError } from "../../RedisError.ts"
import type { Delivery, Message } from "../../RedisStreamConsumer.ts"
import { isReference, REF_FIELD } from "../references.ts"
import * as Ledger from "./ledger.ts"
import { annotations } from "./settings.ts"
import type { LiveEntry, ReadEntry } from "./store.ts"

/** The entry's event, or why it has none (a string, the dead-letter entry's error). */
const eventOf = (ledger: Ledger.Ledger, fields: Readonly<Record<string, string>>): CdcEvent | string => {
  const text = fields.event
  if (text === undefined) return "the entry has no event field"
  const decoded = ledger.settings.envelope.decodeResult(text)
  return Result.isSuccess(decoded) ? decoded.success : decoded.failure.message
}

/** Admits what one read returned, in its order (see the module's description). */
export const admit = (
  ledger: Ledger.Ledger,
  entries: ReadonlyArray<ReadEntry>,
  delivery: Delivery
): Effect.Effect<Array<Message>, RedisError> =>
  delivery === "new"
    ? Effect.flatMap(Clock.currentTimeMillis, (now) => admitNew(ledger, entries, now))
    : admitChecked(ledger, entries, delivery)

/**
 * New entries, the hot path: on their first delivery, so unless one does not decode, admitting them needs no
 * Redis call. One in flight here already or deleted (only possible when the group was created again under us) takes
 * the checked path.
 */
const admitNew = (
  ledger: Ledger.Ledger,
  entries: ReadonlyArray<ReadEntry>,
  now: number
): Effect.Effect<Array<Message>, RedisError> => {
  // A read with entries written by reference takes the checked path whole: their bodies are read back first, and the
  // messages keep the stream's order.
  for (const entry of entries) {
    if (entry.fields !== undefined && isReference(entry.fields)) return admitChecked(ledger, entries, "new")
  }
  const out: Array<Message> = []
  let undecodable: Array<readonly [LiveEntry, string]> | undefined
  let unusual: Array<ReadEntry> | undefined
  for (const entry of entries) {
    if (entry.fields === undefined || ledger.inFlight.has(entry.id)) {
      if (unusual === undefined) unusual = []
      unusual.push(entry)
      continue
    }
    const event = eventOf(ledger, entry.fields)
    if (typeof event === "string") {
      if (undecodable === undefined) undecodable = []
      undecodable.push([entry as LiveEntry, event])
      continue
    }
    // `recordRead` already recorded its delivery count, 1.
    ledger.inFlight.set(entry.id, now)
    out.push(new Ledger.LedgerMessage(ledger, entry.id, event, entry.fields, 1, "new"))
  }
  const delivered = out.length > 0 ? Metric.update(ledger.metric.delivered, out.length) : Effect.void
  if (undecodable === undefined && unusual === undefined) return Effect.as(delivered, out)
  return Effect.gen(function* () {
    for (const [entry, error] of undecodable ?? []) yield* Ledger.deadLetter(ledger, entry, 1, error)
    yield* delivered
    if (unusual !== undefined) out.push(...(yield* admitChecked(ledger, unusual, "new")))
    return out
  })
}

const admitChecked = (ledger: Ledger.Ledger, entries: ReadonlyArray<ReadEntry>, delivery: Delivery) =>
  Effect.gen(function* () {
    const { settings, store } = ledger
    const fresh = entries.filter((r) => !ledger.inFlight.has(r.id))
    if (fresh.length === 0) return [] as Array<Message>
    const gone = fresh.filter((r) => r.fields === undefined).map((r) => r.id)
    if (gone.length > 0) {
      yield* Ledger.retrying(ledger, store.ack(gone, []))
      for (const id of gone) ledger.held.delete(id)
      yield* Effect.logWarning(`acknowledged ${gone.length} pending entries deleted from the stream`).pipe(
        Effect.annotateLogs({ stream: settings.stream, group: settings.group, ids: gone.join(",") })
      )
    }
    const live = fresh.filter((r): r is LiveEntry => r.fields !== undefined)
    const counts =
      delivery === "new" ? undefined : yield* Ledger.retrying(ledger, store.deliveries(live.map((r) => r.id)))
    const bodies = yield* referencedBodies(ledger, live)
    const now = yield* Clock.currentTimeMillis
    const out: Array<Message> = []
    for (const entry of live) {
      const deliveries = counts === undefined ? 1 : counts.get(entry.id)
      if (deliveries === undefined) {
        // No longer pending to this consumer: another one acknowledged it (parked it, say) or took it over between
        // the read and now (this consumer was slower than `minIdle`). Handing it out would be one delivery too many.
        ledger.held.delete(entry.id)
        yield* Effect.logDebug(`entry ${entry.id} is no longer pending to this consumer: skipped`)
        continue
      }
      if (deliveries > settings.maxDeliveries) {
        const error =
          (yield* Ledger.retrying(ledger, store.lastError(entry.id))) ??
          "not acknowledged (handler failed, timed out or crashed)"
        yield* Ledger.deadLetter(ledger, entry, deliveries - 1, error, deliveries)
        continue
      }
      let fields = entry.fields
      if (bodies !== undefined && isReference(fields)) {
        const body = bodies.get(entry.id)
        if (body === undefined) {
          yield* Ledger.deadLetter(
            ledger,
            entry,
            deliveries,
            `the event's body under ${fields[REF_FIELD]} is gone (its TTL, the sink's largeEventTtl, passed before ` +
              `the entry was consumed): the entry has no event`
          )
          continue
        }
        fields = { ...fields, event: body }
      }
      const event = eventOf(ledger, fields)
      if (typeof event === "string") {
        yield* Ledger.deadLetter(ledger, entry, deliveries, event)
        continue
      }
      ledger.inFlight.set(entry.id, now)
      ledger.held.set(entry.id, deliveries)
      out.push(new Ledger.LedgerMessage(ledger, entry.id, event, fields, deliveries, delivery))
    }
    if (out.length > 0) yield* Metric.update(ledger.metric.delivered, out.length)
    return out
  })

/** The bodies of the entries written by reference, by entry id (absent: gone); `undefined` when there are none. */
const referencedBodies = (ledger: Ledger.Ledger, entries: ReadonlyArray<LiveEntry>) =>
  Effect.gen(function* () {
    const refs = entries.filter((e) => isReference(e.fields))
    if (refs.length === 0) return undefined
    const bodies = yield* Ledger.retrying(ledger, ledger.store.bodies(refs.map((e) => e.fields[REF_FIELD]!)))
    const out = new Map<string, string>()
    refs.forEach((e, i) => {
      const body = bodies[i]
      if (body !== undefined) out.set(e.id, body)
    })
    return out
  })

/**
 * The group is gone under the running consumer: a read failed with `NOGROUP` (the group destroyed, or the stream
 * deleted, maybe written again since), or with `UNBLOCKED` (`streamDeleted`: the stream was deleted, renamed or
 * flushed while the read waited). Creates the group again without delivering anew what it had delivered:
 *
 * - the stream deleted, empty, or holding only entries after the last one the group delivered (a stream written
 *   again: entry ids grow with time): from the start, as nothing in it was delivered;
 * - otherwise (the same stream, its group destroyed) at the last entry this consumer knows the group delivered.
 *   What the destroyed group had pending is not delivered again: Redis dropped that list with the group.
 *
 * Either way it says so at warning level. A group some other consumer created again first is left as it is.
 */
export const recreateGroup = (ledger: Ledger.Ledger, streamDeleted: boolean) =>
  Effect.gen(function* () {
    const { settings } = ledger
    const known = ledger.lastDelivered
    const first = streamDeleted ? undefined : yield* Ledger.retrying(ledger, ledger.store.firstEntryId)
    const firstOrder = first === undefined ? undefined : Ledger.idOrder(first)
    const fresh =
      streamDeleted ||
      first === undefined ||
      (known !== undefined && firstOrder !== undefined && firstOrder > known.order)
    const start = fresh ? "0" : (known?.id ?? settings.startId)
    const created = yield* Ledger.retrying(ledger, ledger.store.createGroup(start))
    if (!created) {
      return yield* Effect.logInfo(
        `group ${settings.group} of ${settings.stream} was created again by another consumer`
      )
    }
    if (fresh) ledger.lastDelivered = undefined
    yield* Effect.logWarning(
      streamDeleted
        ? `stream ${settings.stream} no longer exists (deleted, renamed or flushed while this consumer waited) and ` +
            `group ${settings.group} went with it: created both again (XGROUP CREATE ${settings.stream} ` +
            `${settings.group} 0 MKSTREAM); what the stream holds from now on is consumed`
        : fresh
          ? `group ${settings.group} of stream ${settings.stream} no longer exists, and the stream holds no entry the ` +
            `group delivered (it was deleted and written again, or emptied): created the group again from the start`
          : known !== undefined
            ? `group ${settings.group} of stream ${settings.stream} no longer exists (destroyed, XGROUP DESTROY): ` +
              `created it again at ${known.id}, the last entry this consumer knows the group delivered, so none up ` +
              `to it is delivered again; entries the destroyed group had pending (delivered, not acknowledged) are ` +
              `not redelivered`
            : `group ${settings.group} of stream ${settings.stream} no longer exists (destroyed, XGROUP DESTROY): ` +
              `created it again at ${start} (startId), as this consumer knows of no entry the group delivered`
    )
  }).pipe(Effect.annotateLogs(annotations(ledger.settings)))
