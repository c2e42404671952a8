/**
 * The ledger of one consumer: which entries it has in flight (handed to the application, not acknowledged yet) and
 * which it holds (read, their delivery counted by Redis, not handed out yet), and the operations that move entries
 * between those and out (acknowledge, give up with an error, dead-letter). One explicit record, {@link Ledger},
 * and named functions over it; the reader (`reader.ts`) fills it, the workers (`workers.ts`) drain it, and the
 * shutdown (`shutdown.ts`) gives back what it still holds.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as Metrics from "@redflow/core/Metrics"
import * as FailurePolicy from "../../FailurePolicy.ts"
import type { RedisError } from "../../RedisError.ts"
import type { Delivery, Message } from "../../RedisStreamConsumer.ts"
import type { ConsumerSettings } from "./settings.ts"
import { clip, type ConsumerStore, type LiveEntry } from "./store.ts"

/** One consumer's entries and the means to act on them. */
export interface Ledger {
  readonly settings: ConsumerSettings
  readonly store: ConsumerStore
  readonly policies: FailurePolicy.FailurePolicies
  readonly metric: {
    readonly delivered: Metric.Counter<number>
    readonly acked: Metric.Counter<number>
    readonly claimed: Metric.Counter<number>
    readonly deadLettered: Metric.Counter<number>
    readonly pending: Metric.Gauge<number>
  }
  /** Entries handed out and not yet acknowledged or given up, with when they were last touched (ms). */
  readonly inFlight: Map<string, number>
  /**
   * Entries read (their delivery counted by Redis) and not handed out yet: waiting to be decoded, or decoded and
   * waiting for the application. With the delivery count our read left, once known. What is here when the consumer
   * stops was never seen by a handler, so the shutdown gives its delivery back.
   */
  readonly held: Map<string, number | undefined>
  /**
   * The highest entry id this consumer knows the group delivered: the last entry of its own reads, or the group's
   * last-delivered id as the heartbeat last saw it (other consumers may have read further). Where a group destroyed
   * under the consumer is created again.
   */
  lastDelivered: { readonly id: string; readonly order: bigint } | undefined
}

export const make = (settings: ConsumerSettings, store: ConsumerStore): Ledger => {
  const attributes = { stream: settings.stream, group: settings.group }
  return {
    settings,
    store,
    policies: FailurePolicy.make(settings.policies, store.topology),
    metric: {
      delivered: Metric.withAttributes(Metrics.consumerDelivered, attributes),
      acked: Metric.withAttributes(Metrics.consumerAcked, attributes),
      claimed: Metric.withAttributes(Metrics.consumerClaimed, attributes),
      deadLettered: Metric.withAttributes(Metrics.consumerDeadLettered, attributes),
      pending: Metric.withAttributes(Metrics.consumerPending, attributes)
    },
    inFlight: new Map(),
    held: new Map(),
    lastDelivered: undefined
  }
}

/**
 * Retries by the failure policies; a wait ends early when `wake` completes (by default the command connection's
 * next reconnect: after an outage the consumer resumes when Redis is back, not when a backoff of seconds runs out).
 */
export const retrying = <A>(
  ledger: Ledger,
  effect: Effect.Effect<A, RedisError>,
  wake: () => Effect.Effect<void> = ledger.store.nextReconnect
): Effect.Effect<A, RedisError> =>
  FailurePolicy.retryWaking(effect, ledger.policies, wake, (error: RedisError, delay: Duration.Duration) =>
    Effect.logDebug(`retrying in ${Duration.format(delay)} after ${error._tag}: ${error.message}`)
  )

const ENTRY_ID = /^(\d{1,20})-(\d{1,20})$/

/** An entry id (`ms-seq`) as one number for ordering; `undefined` for anything else. */
export const idOrder = (id: string): bigint | undefined => {
  const match = ENTRY_ID.exec(id)
  return match === null ? undefined : (BigInt(match[1]!) << 64n) | BigInt(match[2]!)
}

export const noteDelivered = (ledger: Ledger, id: string | undefined): void => {
  const order = id === undefined ? undefined : idOrder(id)
  if (order !== undefined && (ledger.lastDelivered === undefined || order > ledger.lastDelivered.order)) {
    ledger.lastDelivered = { id: id!, order }
  }
}

/**
 * Records what a read returned, in the same uninterruptible step as the read: Redis has counted a delivery for
 * each entry, and an entry it returned must not go unrecorded. Entries already in flight here (a claim can return
 * them) are left as they are.
 */
export const recordRead = (
  ledger: Ledger,
  entries: ReadonlyArray<{ readonly id: string }>,
  deliveries: number | undefined
): void => {
  for (const entry of entries) if (!ledger.inFlight.has(entry.id)) ledger.held.set(entry.id, deliveries)
  // A read returns its entries in id order.
  if (entries.length > 0) noteDelivered(ledger, entries[entries.length - 1]!.id)
}

/** The entry reached the application (a handler, or the caller of `messages`): its delivery stands. */
export const handOut = (ledger: Ledger, id: string): void => {
  ledger.held.delete(id)
}

/** `XACK` by entry id; `redelivered` are those delivered more than once (their last error is dropped too). */
export const acknowledge = (
  ledger: Ledger,
  ids: ReadonlyArray<string>,
  redelivered: ReadonlyArray<string>
): Effect.Effect<void, RedisError> => {
  if (ids.length === 0) return Effect.void
  return retrying(ledger, ledger.store.ack(ids, redelivered)).pipe(
    Effect.flatMap((acked) => Metric.update(ledger.metric.acked, acked)),
    Effect.ensuring(
      Effect.sync(() => {
        for (const id of ids) ledger.inFlight.delete(id)
      })
    )
  )
}

/** {@link acknowledge} of messages. */
export const acknowledgeMessages = (
  ledger: Ledger,
  messages: ReadonlyArray<Message>
): Effect.Effect<void, RedisError> => {
  const ids: Array<string> = []
  const redelivered: Array<string> = []
  for (const m of messages) {
    ids.push(m.id)
    if (m.deliveries > 1) redelivered.push(m.id)
  }
  return acknowledge(ledger, ids, redelivered)
}

/** Leaves the entry pending with `reason` as its last error: it comes back once idle for `minIdle`. */
export const giveUp = (ledger: Ledger, id: string, reason: string): Effect.Effect<void, RedisError> =>
  retrying(ledger, ledger.store.recordError(id, reason)).pipe(
    Effect.ensuring(Effect.sync(() => ledger.inFlight.delete(id)))
  )

/**
 * The message's event is being processed by another copy right now (the idempotency store answered `Busy`): no
 * handler ran, so this delivery is given back (its count restored, its idle time reset) and the entry comes back
 * after `minIdle`, a duplicate by then, or processed if the other copy failed. It does not count towards
 * `maxDeliveries`: a copy read in the same round as its twin is not parked for being a copy (see docs/DESIGN.md,
 * "Copies of an event").
 */
export const deferBusy = (ledger: Ledger, message: Message): Effect.Effect<void, RedisError> =>
  retrying(ledger, ledger.store.giveBack([[message.id, message.deliveries]], 0)).pipe(
    Effect.asVoid,
    Effect.ensuring(Effect.sync(() => ledger.inFlight.delete(message.id)))
  )

/** Metadata fields of a dead-letter entry; an original field of the same name is kept as `original.<name>`. */
const DEAD_LETTER_FIELDS: ReadonlyArray<string> = [
  "error",
  "source_stream",
  "source_id",
  "group",
  "consumer",
  "deliveries"
]

/**
 * Copies an entry to the dead-letter stream with its metadata, then acknowledges it in the source. `pendingCount` is
 * the entry's delivery count as this consumer saw it pending (`deliveries`, the count reported, may be one less):
 * the copy is made only if the entry is still this consumer's with that count (`ConsumerStore.fence`), so that an
 * entry two consumers claimed in turn, the first slower than `minIdle`, is parked by one of them.
 */
export const deadLetter = (
  ledger: Ledger,
  entry: LiveEntry,
  deliveries: number,
  error: string,
  pendingCount: number = deliveries
) =>
  Effect.gen(function* () {
    const { settings } = ledger
    if (!(yield* retrying(ledger, ledger.store.fence(entry.id, pendingCount)))) {
      ledger.held.delete(entry.id)
      return yield* Effect.logDebug(
        `entry ${entry.id} was taken over or acknowledged by another consumer before it was parked: left to it`
      )
    }
    const flat: Array<string> = []
    for (const [name, value] of Object.entries(entry.fields)) {
      flat.push(DEAD_LETTER_FIELDS.includes(name) ? `original.${name}` : name, value)
    }
    flat.push(
      "error",
      clip(error),
      "source_stream",
      settings.stream,
      "source_id",
      entry.id,
      "group",
      settings.group,
      "consumer",
      settings.consumer,
      "deliveries",
      String(deliveries)
    )
    // XADD first, XACK after: a crash in between leaves the entry pending (it comes back), never lost.
    yield* retrying(ledger, ledger.store.addDeadLetter(flat))
    yield* retrying(ledger, ledger.store.ack([entry.id], [entry.id]))
    ledger.held.delete(entry.id)
    yield* Metric.update(ledger.metric.deadLettered, 1)
    yield* Effect.logWarning(`entry ${entry.id} moved to ${settings.deadLetterStream}: ${error}`).pipe(
      Effect.annotateLogs({ stream: settings.stream, group: settings.group, deliveries })
    )
  })

/** Keeps entries still being worked on from looking idle to `XAUTOCLAIM` (without counting a delivery). */
export const heartbeat = (ledger: Ledger) =>
  Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const due: Array<string> = []
    const every = ledger.settings.minIdleMs / 4
    for (const [id, touched] of ledger.inFlight) if (now - touched >= every) due.push(id)
    for (let i = 0; i < due.length; i += 1000) {
      const ids = due.slice(i, i + 1000)
      yield* retrying(ledger, ledger.store.touch(ids))
      for (const id of ids) if (ledger.inFlight.has(id)) ledger.inFlight.set(id, now)
    }
  })

/** The pending gauge, and the group's last-delivered id (see `lastDelivered`). */
export const updatePending = (ledger: Ledger) =>
  Effect.flatMap(retrying(ledger, ledger.store.groupInfo), (group) => {
    if (group === undefined) return Effect.void
    noteDelivered(ledger, group.lastDeliveredId)
    return Metric.update(ledger.metric.pending, group.pending)
  })

/** Where a message made by this module keeps its ledger (a symbol key: cheaper than a `WeakMap` entry). */
export const ledgerKey: unique symbol = Symbol.for("@redflow/redis/RedisStreamConsumer/ledger")

/**
 * A message of a consumer. Its data are its own fields; `ack` and `nack` are made from its ledger when they are
 * used, so a message costs one object, not one object and three closures (a consumer makes tens of thousands a
 * second, and they live until acknowledged).
 */
export class LedgerMessage implements Message {
  readonly [ledgerKey]: Ledger
  readonly stream: string
  readonly group: string
  readonly consumer: string
  readonly id: string
  readonly event: CdcEvent
  readonly fields: Readonly<Record<string, string>>
  readonly key: string | undefined
  readonly deliveries: number
  readonly delivery: Delivery
  constructor(
    ledger: Ledger,
    id: string,
    event: CdcEvent,
    fields: Readonly<Record<string, string>>,
    deliveries: number,
    delivery: Delivery
  ) {
    this[ledgerKey] = ledger
    this.stream = ledger.settings.stream
    this.group = ledger.settings.group
    this.consumer = ledger.settings.consumer
    this.id = id
    this.event = event
    this.fields = fields
    this.key = fields.key
    this.deliveries = deliveries
    this.delivery = delivery
  }
  get ack(): Effect.Effect<void, RedisError> {
    return Effect.suspend(() => acknowledgeMessages(this[ledgerKey], [this]))
  }
  get nack(): (reason: string) => Effect.Effect<void, RedisError> {
    return (reason) => giveUp(this[ledgerKey], this.id, reason)
  }
}

/** The ledger of a message made here, if it was. */
export const ledgerOf = (message: Message): Ledger | undefined =>
  (message as { readonly [ledgerKey]?: Ledger })[ledgerKey]
