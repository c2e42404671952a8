/**
 * Consuming CDC events from Redis Streams with consumer groups, as Effect streams.
 *
 * {@link messages} is the building block: a `Stream` of decoded {@link Message}s for one consumer of a group. It
 * creates the group (`XGROUP CREATE … MKSTREAM`), first re-reads the consumer's own pending entries (a restart
 * picks up where the crash left off), then reads new ones with `XREADGROUP BLOCK` on a dedicated connection. In the
 * background it takes over entries other consumers left idle for too long (`XAUTOCLAIM`) and keeps the entries it
 * is still working on from looking idle (`XCLAIM … JUSTID`), so a slow handler is not mistaken for a crashed one.
 *
 * Nothing is acknowledged for you: each message carries `ack` (and `nack`), and {@link ack} acknowledges a whole
 * chunk with one `XACK`. An entry that cannot be decoded, or that was delivered `maxDeliveries` times without being
 * acknowledged, is copied to a dead-letter stream with its metadata and acknowledged in the source: bad data never
 * stops the consumer and is never dropped.
 *
 * {@link run} is the application loop on top: a handler, concurrency (optionally ordered per key), acknowledgement
 * after the handler succeeded (per message or batched), duplicate skipping by event id, and a graceful shutdown on
 * interruption that stops reading, lets the handlers in flight finish within a bound, and acknowledges them; what
 * was read ahead and never handled is given back with its delivery count restored, so stopping a consumer does not
 * push healthy entries towards the dead-letter stream.
 *
 * {@link subscribe} is the plain `XREAD` subscription, without a group.
 *
 * @example
 * ```ts
 * const program = RedisStreamConsumer.run({
 *   stream: "orders.events",
 *   group: "mygroup",
 *   consumer: "worker1",
 *   concurrency: 8,
 *   orderedBy: "key",
 *   handler: (event) => Effect.log(`order ${event.op}`, event.after)
 * })
 * ```
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Latch from "effect/Latch"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Queue from "effect/Queue"
import * as Result from "effect/Result"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as Envelope from "@redflow/core/Envelope"
import * as Metrics from "@redflow/core/Metrics"
import * as FailurePolicy from "./FailurePolicy.ts"
import { EventInProgress, hold, type IdempotencyStore, ReservationLost } from "./Idempotency.ts"
import { RedisConnection } from "./RedisConnection.ts"
import type { RedisError } from "./RedisError.ts"
import * as StreamAdmin from "./StreamAdmin.ts"

// ---------------------------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------------------------

export interface Options {
  readonly stream: string
  readonly group: string
  /** This consumer's name in the group. Keep it stable across restarts: its pending entries are re-read on start. */
  readonly consumer: string
  /**
   * Where a group created by this consumer starts: `0` (the whole stream, the default, so events written before
   * the first consumer started are not skipped), `$` (only new entries), or an entry id.
   */
  readonly startId?: string
  /** Envelope of the `event` field. Default `native`. */
  readonly envelope?: Envelope.Format
  /**
   * Most entries per read. At most twice this many are read ahead of the application (read, not handed out yet):
   * the next read is under way while the application works through the last. Default 100.
   */
  readonly count?: number
  /** How long one `XREADGROUP` blocks waiting for entries. Default 2 seconds. */
  readonly block?: Duration.Input
  /** Entries pending (delivered, not acknowledged) this long are taken over by `XAUTOCLAIM`. Default 30 seconds. */
  readonly minIdle?: Duration.Input
  /** How often to look for idle entries. Default half of `minIdle`. */
  readonly claimInterval?: Duration.Input
  /** Whether to take over idle entries of other consumers at all. Default true. */
  readonly claim?: boolean
  /** An entry delivered this many times without being acknowledged goes to the dead-letter stream. Default 5. */
  readonly maxDeliveries?: number
  /** Where dead entries go. Default `<stream>.dead-letter`. */
  readonly deadLetterStream?: string
  /** Re-read this consumer's own pending entries before new ones. Default true. */
  readonly recoverPending?: boolean
  /** Overrides of the failure-policy table for Redis calls (reads, acks, claims). */
  readonly policies?: Partial<FailurePolicy.FailurePolicies>
}

/** Options that cannot work, found before anything is read. */
export class ConsumerConfigError extends Schema.TaggedError<ConsumerConfigError>()("ConsumerConfigError", {
  field: Schema.String,
  message: Schema.String
}) {}

export type ConsumerError = RedisError | ConsumerConfigError

interface Config {
  readonly stream: string
  readonly group: string
  readonly consumer: string
  readonly startId: string
  readonly envelope: Envelope.Envelope
  readonly count: number
  readonly blockMs: number
  readonly minIdleMs: number
  readonly claimIntervalMs: number
  readonly claim: boolean
  readonly maxDeliveries: number
  readonly deadLetterStream: string
  readonly recoverPending: boolean
  readonly policies: Partial<FailurePolicy.FailurePolicies>
  /** Hash of the last handler error per pending entry id, for the dead-letter entry. */
  readonly errorsKey: string
}

const configError = (field: string, message: string) => new ConsumerConfigError({ field, message })

const positiveInt = (field: string, value: number | undefined, fallback: number): number => {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || value <= 0) throw configError(field, `${field} must be a positive integer`)
  return value
}

const durationMs = (field: string, value: Duration.Input | undefined, fallback: number): number => {
  if (value === undefined) return fallback
  const d = Duration.fromInput(value)
  if (Option.isNone(d) || !Duration.isFinite(d.value) || Duration.toMillis(d.value) <= 0) {
    throw configError(field, `${field} must be a positive finite duration such as "5 seconds", got ${String(value)}`)
  }
  return Math.max(1, Math.round(Duration.toMillis(d.value)))
}

const nonEmpty = (field: string, value: string | undefined): string => {
  if (typeof value !== "string" || value === "") throw configError(field, `${field} must be a non-empty string`)
  return value
}

const START_ID = /^(\$|0|\d+(-\d+)?)$/

const validate = (options: Options): Effect.Effect<Config, ConsumerConfigError> =>
  Effect.try({
    try: (): Config => {
      const stream = nonEmpty("stream", options.stream)
      const group = nonEmpty("group", options.group)
      const consumer = nonEmpty("consumer", options.consumer)
      const startId = options.startId ?? "0"
      if (!START_ID.test(startId)) throw configError("startId", `startId must be "$", "0" or an entry id`)
      const format = options.envelope ?? "native"
      if (!Envelope.formats.includes(format)) {
        throw configError("envelope", `envelope must be one of ${Envelope.formats.join(", ")}`)
      }
      const minIdleMs = durationMs("minIdle", options.minIdle, 30_000)
      const deadLetterStream = nonEmpty("deadLetterStream", options.deadLetterStream ?? `${stream}.dead-letter`)
      if (deadLetterStream === stream) {
        // An entry dead-lettered into the stream it came from is read again, fails again and is copied again: one bad
        // entry would become an endless flood of copies.
        throw configError(
          "deadLetterStream",
          `deadLetterStream must not be the stream it consumes (${JSON.stringify(stream)}): a dead-lettered entry ` +
            `would be read and dead-lettered again for ever; leave it unset for ${JSON.stringify(`${stream}.dead-letter`)} ` +
            `or name another stream`
        )
      }
      return {
        stream,
        group,
        consumer,
        startId,
        envelope: Envelope.make(format),
        count: positiveInt("count", options.count, 100),
        blockMs: durationMs("block", options.block, 2_000),
        minIdleMs,
        claimIntervalMs: durationMs("claimInterval", options.claimInterval, Math.max(1, Math.round(minIdleMs / 2))),
        claim: options.claim ?? true,
        maxDeliveries: positiveInt("maxDeliveries", options.maxDeliveries, 5),
        deadLetterStream,
        recoverPending: options.recoverPending ?? true,
        policies: options.policies ?? {},
        errorsKey: `redflow:consumer-errors:${stream}:${group}`
      }
    },
    catch: (e) => (e instanceof ConsumerConfigError ? e : configError("options", String(e)))
  })

/**
 * Checks consumer options without connecting to Redis: fails with the {@link ConsumerConfigError} that
 * {@link messages} and {@link run} would fail with (for a command line that reports bad flags before connecting).
 */
export const validateOptions = (options: Options): Effect.Effect<void, ConsumerConfigError> =>
  Effect.asVoid(validate(options))

// ---------------------------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------------------------

/** How a message reached this consumer. */
export type Delivery = "new" | "pending" | "claimed"

/** One decoded entry of the group, delivered to this consumer and not yet acknowledged. */
export interface Message {
  readonly stream: string
  readonly group: string
  readonly consumer: string
  /** The entry id. */
  readonly id: string
  readonly event: CdcEvent
  /** The entry's raw fields (`event`, `id`, `op`, `table`, `key`). */
  readonly fields: Readonly<Record<string, string>>
  /** The entry's `key` field, when the sink wrote one. */
  readonly key: string | undefined
  /** Times the entry was delivered, this delivery included. */
  readonly deliveries: number
  readonly delivery: Delivery
  /** `XACK`: the entry is done. */
  readonly ack: Effect.Effect<void, RedisError>
  /**
   * Gives the entry back: it stays pending, `reason` is kept as its last error, and it is delivered again (to any
   * consumer) once idle for `minIdle`, until `maxDeliveries` sends it to the dead-letter stream.
   */
  readonly nack: (reason: string) => Effect.Effect<void, RedisError>
}

/** What was read, before the dead-letter checks. */
interface Raw {
  readonly id: string
  readonly fields: Readonly<Record<string, string>> | undefined
}

/** An entry that still exists in the stream. */
type LiveRaw = Raw & { readonly fields: Readonly<Record<string, string>> }

interface Core {
  readonly config: Config
  readonly ackIds: (messages: ReadonlyArray<Message>) => Effect.Effect<void, RedisError>
  /** `ackIds` by entry id; `redelivered` are those delivered more than once (their last error is dropped too). */
  readonly ackEntries: (
    ids: ReadonlyArray<string>,
    redelivered: ReadonlyArray<string>
  ) => Effect.Effect<void, RedisError>
  readonly nack: (id: string, reason: string) => Effect.Effect<void, RedisError>
}

/** Where a message made by this module keeps its consumer's core (a symbol key: cheaper than a `WeakMap` entry). */
const coreKey: unique symbol = Symbol.for("@redflow/redis/RedisStreamConsumer/core")
interface WithCore {
  readonly [coreKey]?: Core
}

/**
 * A message made by this module. Its data are its own fields; `ack` and `nack` are made from its consumer's core
 * when they are used, so a message costs one object, not one object and three closures (a consumer makes tens of
 * thousands a second, and they live until acknowledged).
 */
class CoreMessage implements Message, WithCore {
  readonly [coreKey]: Core
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
    core: Core,
    id: string,
    event: CdcEvent,
    fields: Readonly<Record<string, string>>,
    deliveries: number,
    delivery: Delivery
  ) {
    this[coreKey] = core
    this.stream = core.config.stream
    this.group = core.config.group
    this.consumer = core.config.consumer
    this.id = id
    this.event = event
    this.fields = fields
    this.key = fields.key
    this.deliveries = deliveries
    this.delivery = delivery
  }
  get ack(): Effect.Effect<void, RedisError> {
    return Effect.suspend(() => this[coreKey].ackIds([this]))
  }
  get nack(): (reason: string) => Effect.Effect<void, RedisError> {
    return (reason) => this[coreKey].nack(this.id, reason)
  }
}

/**
 * Gives back entries this consumer read but never handed out: each one still pending to this consumer with the
 * delivery count our read left (so not acknowledged, taken over or re-read since) gets that count minus one, and an
 * idle time of `minIdle`. Setting the count rather than decrementing it makes a retried call harmless.
 *
 * KEYS: 1 the stream. ARGV: group, consumer, idle ms, then pairs of entry id and its delivery count after our read.
 * Returns how many were given back.
 */
const GIVE_BACK = `local released = 0
for i = 4, #ARGV, 2 do
  local p = redis.call("XPENDING", KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])[1]
  if p and p[4] == tonumber(ARGV[i + 1]) then
    redis.call("XCLAIM", KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], "IDLE", ARGV[3], "RETRYCOUNT", p[4] - 1, "JUSTID")
    released = released + 1
  end
end
return released`

/** Metadata fields of a dead-letter entry; an original field of the same name is kept as `original.<name>`. */
const DEAD_LETTER_FIELDS = ["error", "source_stream", "source_id", "group", "consumer", "deliveries"] as const

const MAX_ERROR_LENGTH = 4096
const ERRORS_TTL_MS = 7 * 24 * 3600 * 1000

const makeCore = Effect.fnUntraced(function* (config: Config) {
  const redis = yield* RedisConnection
  const policies = FailurePolicy.make(config.policies, redis.topology)
  const attributes = { stream: config.stream, group: config.group }
  const metric = {
    delivered: Metric.withAttributes(Metrics.consumerDelivered, attributes),
    acked: Metric.withAttributes(Metrics.consumerAcked, attributes),
    claimed: Metric.withAttributes(Metrics.consumerClaimed, attributes),
    deadLettered: Metric.withAttributes(Metrics.consumerDeadLettered, attributes),
    pending: Metric.withAttributes(Metrics.consumerPending, attributes)
  }
  /** Entries handed out and not yet acknowledged or given back, with when they were last touched (ms). */
  const inFlight = new Map<string, number>()
  /**
   * Entries read (their delivery counted by Redis) and not handed out yet: waiting to be decoded, or decoded and
   * waiting for the application. With the delivery count our read left, once known. What is here when the consumer
   * stops was never seen by a handler, so {@link giveBack} puts its delivery count back.
   */
  const held = new Map<string, number | undefined>()

  /**
   * Retries by the failure policies; a wait ends early when `wake` completes (by default the connection's next
   * reconnect: after an outage the consumer resumes when Redis is back, not when a backoff of seconds runs out).
   */
  const retrying = <A>(
    effect: Effect.Effect<A, RedisError, RedisConnection>,
    wake: () => Effect.Effect<void> = redis.nextReconnect
  ): Effect.Effect<A, RedisError> =>
    FailurePolicy.retryWaking(Effect.provideService(effect, RedisConnection, redis), policies, wake, (error, delay) =>
      Effect.logDebug(`retrying in ${Duration.format(delay)} after ${error._tag}: ${error.message}`)
    )

  const ensureGroup = retrying(
    StreamAdmin.createGroup(config.stream, config.group, { start: config.startId, mkStream: true })
  )

  /**
   * The highest entry id this consumer knows the group delivered: the last entry of its own reads, or the group's
   * last-delivered id as the heartbeat last saw it (other consumers may have read further). Where a group destroyed
   * under the consumer is created again.
   */
  let lastDelivered: { readonly id: string; readonly order: bigint } | undefined
  const noteDelivered = (id: string | undefined) => {
    const order = id === undefined ? undefined : idOrder(id)
    if (order !== undefined && (lastDelivered === undefined || order > lastDelivered.order)) {
      lastDelivered = { id: id!, order }
    }
  }

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
  const recreateGroup = (streamDeleted: boolean) =>
    Effect.gen(function* () {
      const known = lastDelivered
      const first = streamDeleted ? undefined : (yield* retrying(StreamAdmin.range(config.stream, { count: 1 })))[0]
      const firstOrder = first === undefined ? undefined : idOrder(first.id)
      const fresh =
        streamDeleted ||
        first === undefined ||
        (known !== undefined && firstOrder !== undefined && firstOrder > known.order)
      const start = fresh ? "0" : (known?.id ?? config.startId)
      const created = yield* retrying(StreamAdmin.createGroup(config.stream, config.group, { start, mkStream: true }))
      if (!created) {
        return yield* Effect.logInfo(`group ${config.group} of ${config.stream} was created again by another consumer`)
      }
      if (fresh) lastDelivered = undefined
      yield* Effect.logWarning(
        streamDeleted
          ? `stream ${config.stream} no longer exists (deleted, renamed or flushed while this consumer waited) and ` +
              `group ${config.group} went with it: created both again (XGROUP CREATE ${config.stream} ` +
              `${config.group} 0 MKSTREAM); what the stream holds from now on is consumed`
          : fresh
            ? `group ${config.group} of stream ${config.stream} no longer exists, and the stream holds no entry the ` +
              `group delivered (it was deleted and written again, or emptied): created the group again from the start`
            : known !== undefined
              ? `group ${config.group} of stream ${config.stream} no longer exists (destroyed, XGROUP DESTROY): ` +
                `created it again at ${known.id}, the last entry this consumer knows the group delivered, so none up ` +
                `to it is delivered again; entries the destroyed group had pending (delivered, not acknowledged) are ` +
                `not redelivered`
              : `group ${config.group} of stream ${config.stream} no longer exists (destroyed, XGROUP DESTROY): ` +
                `created it again at ${start} (startId), as this consumer knows of no entry the group delivered`
      )
    }).pipe(Effect.annotateLogs({ stream: config.stream, group: config.group, consumer: config.consumer }))

  const ackIds = (messages: ReadonlyArray<Message>): Effect.Effect<void, RedisError> => {
    const ids: Array<string> = []
    const redelivered: Array<string> = []
    for (const m of messages) {
      ids.push(m.id)
      if (m.deliveries > 1) redelivered.push(m.id)
    }
    return ackEntries(ids, redelivered)
  }

  const ackEntries = (
    ids: ReadonlyArray<string>,
    redelivered: ReadonlyArray<string>
  ): Effect.Effect<void, RedisError> => {
    if (ids.length === 0) return Effect.void
    return retrying(
      Effect.all(
        [
          StreamAdmin.ack(config.stream, config.group, ids),
          redelivered.length > 0
            ? StreamAdmin.command("HDEL", config.errorsKey, [config.errorsKey, ...redelivered], () => 0)
            : Effect.succeed(0)
        ],
        { concurrency: "unbounded" }
      )
    ).pipe(
      Effect.flatMap(([acked]) => Metric.update(metric.acked, acked)),
      Effect.ensuring(
        Effect.sync(() => {
          for (const id of ids) inFlight.delete(id)
        })
      )
    )
  }

  const nack = (id: string, reason: string): Effect.Effect<void, RedisError> =>
    retrying(
      Effect.all(
        [
          StreamAdmin.command(
            "HSET",
            config.errorsKey,
            [config.errorsKey, id, reason.slice(0, MAX_ERROR_LENGTH)],
            () => 0
          ),
          StreamAdmin.command("PEXPIRE", config.errorsKey, [config.errorsKey, ERRORS_TTL_MS], () => 0)
        ],
        { concurrency: "unbounded" }
      )
    ).pipe(Effect.asVoid, Effect.ensuring(Effect.sync(() => inFlight.delete(id))))

  const core: Core = { config, ackIds, ackEntries, nack }

  const lastError = (id: string) =>
    retrying(
      StreamAdmin.command("HGET", config.errorsKey, [config.errorsKey, id], (reply) =>
        Predicate.isString(reply) ? reply : undefined
      )
    )

  /** Copies an entry to the dead-letter stream with its metadata, then acknowledges it in the source. */
  const deadLetter = (raw: LiveRaw, deliveries: number, error: string) =>
    Effect.gen(function* () {
      const flat: Array<string> = []
      for (const [name, value] of Object.entries(raw.fields)) {
        flat.push((DEAD_LETTER_FIELDS as ReadonlyArray<string>).includes(name) ? `original.${name}` : name, value)
      }
      flat.push(
        "error",
        error.slice(0, MAX_ERROR_LENGTH),
        "source_stream",
        config.stream,
        "source_id",
        raw.id,
        "group",
        config.group,
        "consumer",
        config.consumer,
        "deliveries",
        String(deliveries)
      )
      // XADD first, XACK after: a crash in between leaves the entry pending (it comes back), never lost.
      yield* retrying(
        StreamAdmin.command("XADD", config.deadLetterStream, [config.deadLetterStream, "*", ...flat], String)
      )
      yield* retrying(
        Effect.all(
          [
            StreamAdmin.ack(config.stream, config.group, [raw.id]),
            StreamAdmin.command("HDEL", config.errorsKey, [config.errorsKey, raw.id], () => 0)
          ],
          { concurrency: "unbounded" }
        )
      )
      yield* Metric.update(metric.deadLettered, 1)
      yield* Effect.logWarning(`entry ${raw.id} moved to ${config.deadLetterStream}: ${error}`).pipe(
        Effect.annotateLogs({ stream: config.stream, group: config.group, deliveries })
      )
    })

  /** Delivery counts of entries just re-read or claimed (one `XPENDING id id 1` each, sent together). */
  const deliveriesOf = (ids: ReadonlyArray<string>) =>
    retrying(
      Effect.forEach(
        ids,
        (id) =>
          StreamAdmin.pendingEntries(config.stream, config.group, { start: id, end: id, count: 1 }).pipe(
            // The group is gone (the read loop creates it again): the entry's delivery count went with it.
            Effect.catchIf(isNoGroup, () => Effect.succeed([]))
          ),
        { concurrency: "unbounded" }
      )
    ).pipe(
      Effect.map((replies) => {
        const out = new Map<string, number>()
        for (const reply of replies) for (const p of reply) out.set(p.id, p.deliveries)
        return out
      })
    )

  /** The entry's event, or why it has none (a string, the dead-letter entry's error). */
  const eventOf = (fields: Readonly<Record<string, string>>): CdcEvent | string => {
    const text = fields.event
    if (text === undefined) return "the entry has no event field"
    const decoded = config.envelope.decodeResult(text)
    return Result.isSuccess(decoded) ? decoded.success : decoded.failure.message
  }

  /**
   * Turns what a read returned into messages: entries already in flight here are skipped (a claim can return
   * them), entries deleted from the stream are acknowledged (there is nothing left to process), entries past
   * `maxDeliveries` or that do not decode go to the dead-letter stream.
   */
  const admit = (raws: ReadonlyArray<Raw>, delivery: Delivery): Effect.Effect<Array<Message>, RedisError> =>
    delivery === "new"
      ? Effect.flatMap(Clock.currentTimeMillis, (now) => admitNew(raws, now))
      : admitChecked(raws, delivery)

  /**
   * New entries, the hot path: on their first delivery, so unless one does not decode, admitting them needs no
   * Redis call. One in flight here already or deleted (only possible when the group was created again under us) takes
   * the checked path.
   */
  const admitNew = (raws: ReadonlyArray<Raw>, now: number): Effect.Effect<Array<Message>, RedisError> => {
    const out: Array<Message> = []
    let undecodable: Array<readonly [LiveRaw, string]> | undefined
    let unusual: Array<Raw> | undefined
    for (const raw of raws) {
      if (raw.fields === undefined || inFlight.has(raw.id)) {
        if (unusual === undefined) unusual = []
        unusual.push(raw)
        continue
      }
      const event = eventOf(raw.fields)
      if (typeof event === "string") {
        if (undecodable === undefined) undecodable = []
        undecodable.push([raw as LiveRaw, event])
        continue
      }
      // `hold` already recorded its delivery count, 1.
      inFlight.set(raw.id, now)
      out.push(new CoreMessage(core, raw.id, event, raw.fields, 1, "new"))
    }
    const delivered = out.length > 0 ? Metric.update(metric.delivered, out.length) : Effect.void
    if (undecodable === undefined && unusual === undefined) return Effect.as(delivered, out)
    return Effect.gen(function* () {
      for (const [raw, error] of undecodable ?? []) {
        yield* deadLetter(raw, 1, error)
        held.delete(raw.id)
      }
      yield* delivered
      if (unusual !== undefined) out.push(...(yield* admitChecked(unusual, "new")))
      return out
    })
  }

  const admitChecked = (raws: ReadonlyArray<Raw>, delivery: Delivery) =>
    Effect.gen(function* () {
      const fresh = raws.filter((r) => !inFlight.has(r.id))
      if (fresh.length === 0) return [] as Array<Message>
      const gone = fresh.filter((r) => r.fields === undefined).map((r) => r.id)
      if (gone.length > 0) {
        yield* retrying(StreamAdmin.ack(config.stream, config.group, gone))
        for (const id of gone) held.delete(id)
        yield* Effect.logWarning(`acknowledged ${gone.length} pending entries deleted from the stream`).pipe(
          Effect.annotateLogs({ stream: config.stream, group: config.group, ids: gone.join(",") })
        )
      }
      const live = fresh.filter((r): r is LiveRaw => r.fields !== undefined)
      const counts = delivery === "new" ? undefined : yield* deliveriesOf(live.map((r) => r.id))
      const now = yield* Clock.currentTimeMillis
      const out: Array<Message> = []
      for (const raw of live) {
        const deliveries = counts?.get(raw.id) ?? 1
        if (deliveries > config.maxDeliveries) {
          const error = (yield* lastError(raw.id)) ?? "not acknowledged (handler failed, timed out or crashed)"
          yield* deadLetter(raw, deliveries - 1, error)
          held.delete(raw.id)
          continue
        }
        const event = eventOf(raw.fields)
        if (typeof event === "string") {
          yield* deadLetter(raw, deliveries, event)
          held.delete(raw.id)
          continue
        }
        inFlight.set(raw.id, now)
        held.set(raw.id, deliveries)
        out.push(new CoreMessage(core, raw.id, event, raw.fields, deliveries, delivery))
      }
      if (out.length > 0) yield* Metric.update(metric.delivered, out.length)
      return out
    })

  /** Keeps entries still being worked on from looking idle to `XAUTOCLAIM` (without counting a delivery). */
  const heartbeat = Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const due: Array<string> = []
    const every = config.minIdleMs / 4
    for (const [id, touched] of inFlight) if (now - touched >= every) due.push(id)
    for (let i = 0; i < due.length; i += 1000) {
      const ids = due.slice(i, i + 1000)
      yield* retrying(StreamAdmin.claimIds(config.stream, config.group, config.consumer, 0, ids))
      for (const id of ids) if (inFlight.has(id)) inFlight.set(id, now)
    }
  })

  /** The pending gauge, and the group's last-delivered id (see `lastDelivered`), from `XINFO GROUPS`. */
  const updatePending = Effect.flatMap(retrying(StreamAdmin.groups(config.stream)), (groups) => {
    const group = groups.find((g) => g.name === config.group)
    if (group === undefined) return Effect.void
    noteDelivered(group.lastDeliveredId)
    return Metric.update(metric.pending, group.pending)
  })

  /**
   * Records what a read returned, in the same uninterruptible step as the read: Redis has counted a delivery for
   * each entry, and an entry it returned must not go unrecorded. Entries already in flight here (a claim can return
   * them) are left as they are.
   */
  const hold = (raws: ReadonlyArray<Raw>, deliveries: number | undefined) => {
    for (const raw of raws) if (!inFlight.has(raw.id)) held.set(raw.id, deliveries)
    // A read returns its entries in id order.
    if (raws.length > 0) noteDelivered(raws[raws.length - 1]!.id)
  }

  /** The messages reached the application (a handler, or the caller of `messages`): their delivery stands. */
  const handOut = (messages: ReadonlyArray<Message>) => {
    for (const m of messages) held.delete(m.id)
  }

  /**
   * On a graceful stop, after reading has stopped: puts back the delivery count of every entry read and never
   * handed out, so that being read ahead does not bring an entry closer to the dead-letter stream.
   *
   * Redis cannot take a delivery back (no command returns an entry to the group's never-delivered part), and
   * acknowledging would lose the entry, so the entries stay pending to this consumer, with the count they had
   * before our read. Their idle time is set to `minIdle`: a consumer of the group that is still running takes them
   * over at its next claim pass (counting that delivery, as it should) rather than `minIdle` later, and this
   * consumer re-reads them first on its next start.
   *
   * A crash (SIGKILL, power loss) runs none of this: what was read ahead keeps the one delivery our read counted.
   * Reading ahead is bounded (see `open`), and a run reads an entry no handler has seen at most once (its own
   * pending entries once on start, new ones once; claims only take entries idle past `minIdle`, which the heartbeat
   * keeps ours from being). So a crash adds at most one delivery to such an entry: one never delivered, or given
   * back by a graceful stop, is re-read with 2 deliveries at most, and with `maxDeliveries` ≥ 2 a single crash sends
   * no healthy entry to the dead-letter stream.
   */
  const giveBack = Effect.gen(function* () {
    if (held.size === 0) return
    const entries = [...held]
    held.clear()
    for (const [id] of entries) inFlight.delete(id)
    // Read but not decoded when reading stopped: the count our read left is the one pending now.
    const unknown = entries.filter(([, n]) => n === undefined).map(([id]) => id)
    const counts = unknown.length > 0 ? yield* deliveriesOf(unknown) : new Map<string, number>()
    const args: Array<string | number> = []
    for (const [id, n] of entries) {
      const deliveries = n ?? counts.get(id)
      if (deliveries !== undefined) args.push(id, deliveries)
    }
    let released = 0
    for (let i = 0; i < args.length; i += 2000) {
      released += yield* retrying(
        StreamAdmin.command(
          "EVAL",
          config.stream,
          [GIVE_BACK, 1, config.stream, config.group, config.consumer, config.minIdleMs, ...args.slice(i, i + 2000)],
          (reply) => (typeof reply === "number" ? reply : 0)
        )
      )
    }
    yield* Effect.logDebug(`gave back ${released} entries read ahead and never handed out`)
  }).pipe(
    Effect.catch((error) =>
      Effect.logWarning(
        `could not give back entries read ahead (they keep one delivery too many): ${error._tag}: ${error.message}`
      )
    ),
    Effect.annotateLogs({ stream: config.stream, group: config.group, consumer: config.consumer })
  )

  return {
    core,
    ensureGroup,
    recreateGroup,
    admit,
    heartbeat,
    updatePending,
    retrying,
    held,
    hold,
    handOut,
    giveBack,
    metric
  }
})

const isNoGroup = (error: RedisError) => error._tag === "RedisCommandError" && error.code === "NOGROUP"

/** A blocked read cut short because its stream was deleted, renamed or flushed (Redis ≥ 7.0). */
const isStreamDeleted = (error: RedisError) =>
  error._tag === "RedisCommandError" &&
  error.code === "UNBLOCKED" &&
  /^UNBLOCKED the stream key no longer exists/.test(error.message)

const ENTRY_ID = /^(\d{1,20})-(\d{1,20})$/

/** An entry id (`ms-seq`) as one number for ordering; `undefined` for anything else. */
const idOrder = (id: string): bigint | undefined => {
  const match = ENTRY_ID.exec(id)
  return match === null ? undefined : (BigInt(match[1]!) << 64n) | BigInt(match[2]!)
}

/** How long a graceful stop may take to give back what was read ahead, when the caller sets no bound. */
const GIVE_BACK_TIMEOUT_MS = 10_000

/**
 * A consumer's reading machinery in the current scope: messages to take, and a graceful stop.
 *
 * One fiber reads: its own pending entries first, then new ones, and every `claimInterval` a claim pass. Another
 * admits what was read, in order (decoding, the dead-letter checks, see `admit`), so the next read is under way
 * while the last one is decoded. Reading ahead is bounded: entries read and not handed out yet never exceed twice
 * `count` (a read asks for `count`, and only once no more than `count` are read ahead), so at most `2 × count`
 * entries plus what the handlers hold are delivered to this consumer and unfinished at any time. With `limit`, no
 * more than `limit` messages are ever admitted, so a consumer that stops after `limit` messages has read nothing
 * beyond them.
 *
 * Closing the scope (or `stop`) stops reading without losing a read: each Redis command of the reader runs
 * uninterruptibly together with recording what it returned, a blocked `XREADGROUP` is cut short with
 * `CLIENT UNBLOCK … TIMEOUT`, then the entries read and never handed out are given back (`giveBack`).
 */
const open = Effect.fnUntraced(function* (config: Config, limit?: number) {
  const redis = yield* RedisConnection
  const scope = yield* Scope.Scope
  const machine = yield* makeCore(config)
  yield* machine.ensureGroup
  // A blocked XREADGROUP must not hold up acks and claims: it gets its own connection, with a command timeout above
  // the block time.
  const reader = yield* redis.dedicated({
    commandTimeout: Duration.millis(config.blockMs + redis.resolved.commandTimeoutMs),
    blocking: true
  })
  // Bounded by the room logic below, not by the queue.
  const queue = yield* Queue.unbounded<Message, ConsumerError | Cause.Done>()
  /** Opened when handing out (or admitting) messages made room for a read: the reader waits on it. */
  const room = yield* Latch.make(false)
  /**
   * What the reader read, in order, for the admitter: the reader goes on reading while the last read is decoded.
   * Bounded by the room logic too: every entry here is held.
   */
  const reads = yield* Queue.unbounded<readonly [ReadonlyArray<Raw>, Delivery]>()
  let admitted = 0
  /** Entries read and not admitted yet: with `limit`, they may all become messages. */
  let admitting = 0

  /**
   * Entries a read may ask for now: `count` (or all that `limit` leaves), once no more than `count` are read ahead.
   * Reads are as large as the application asked for, and the next one is under way while it works through the last.
   */
  const roomNow = (): number => {
    const n = limit === undefined ? config.count : Math.min(config.count, limit - admitted - admitting)
    return n > 0 && machine.held.size <= config.count ? n : 0
  }
  const awaitRoom = Effect.gen(function* () {
    for (;;) {
      room.closeUnsafe()
      const n = roomNow()
      if (n > 0) return n
      yield* room.await
    }
  })

  /** Hands what a read returned to the admitter. */
  const deliver = (raws: ReadonlyArray<Raw>, delivery: Delivery) =>
    Effect.sync(() => {
      admitting += raws.length
      Queue.offerUnsafe(reads, [raws, delivery])
    })

  /** Decodes and checks what was read (see `admit`), in the order it was read, and queues the messages. */
  const admitLoop = Effect.gen(function* () {
    for (;;) {
      const [raws, delivery] = yield* Queue.take(reads)
      const messages = yield* machine.admit(raws, delivery)
      admitting -= raws.length
      admitted += messages.length
      if (messages.length > 0) yield* Queue.offerAll(queue, messages)
      // Entries not admitted (dead-lettered, gone) leave room, and with `limit`, admitting settles what is left.
      if (roomNow() > 0) room.openUnsafe()
    }
  })

  // CLIENT UNBLOCK needs the reader connection's id, known per connection (a reconnect gets a new one). A cluster
  // client cannot aim it at the node the read blocks on: there a stop waits for the read's `block` time instead.
  let unblockable = redis.topology !== "cluster"
  let readerId: number | undefined
  let blockedIn: number | undefined
  if (unblockable) reader.client.on("close", () => (readerId = undefined))
  const knowReaderId = Effect.suspend(() =>
    !unblockable || readerId !== undefined
      ? Effect.void
      : StreamAdmin.command("CLIENT", config.stream, ["ID"], (reply) =>
          typeof reply === "number" ? reply : undefined
        ).pipe(
          Effect.provideService(RedisConnection, reader),
          Effect.match({
            // Refused (an ACL without CLIENT): a stop waits for the read's block time instead.
            onFailure: (error) => {
              unblockable = error._tag !== "RedisCommandError"
            },
            onSuccess: (id) => {
              readerId = id
            }
          })
        )
  )

  const read = (id: string, count: number, block: number | undefined) =>
    Effect.gen(function* () {
      if (block !== undefined) yield* knowReaderId
      blockedIn = block === undefined ? undefined : readerId
      return yield* StreamAdmin.readGroup(config.stream, config.group, config.consumer, id, {
        count,
        ...(block !== undefined ? { block } : {})
      }).pipe(
        Effect.provideService(RedisConnection, reader),
        Effect.tap((raws) => Effect.sync(() => machine.hold(raws, id === ">" ? 1 : undefined))),
        Effect.uninterruptible,
        Effect.ensuring(Effect.sync(() => (blockedIn = undefined)))
      )
    }).pipe(
      // The group (or the stream) was deleted under us: create it again (see `recreateGroup`) and go on.
      Effect.catchIf(
        (error) => isNoGroup(error) || isStreamDeleted(error),
        (error) => Effect.as(machine.recreateGroup(isStreamDeleted(error)), [])
      ),
      // Reads wait for the reader connection's own reconnect.
      (reading) => machine.retrying(reading, reader.nextReconnect)
    )

  /** One pass of `XAUTOCLAIM` over the pending list (bounded): idle entries of any consumer of the group. */
  const claimPass = Effect.gen(function* () {
    let cursor = "0-0"
    for (let round = 0; round < 10; round++) {
      const count = yield* awaitRoom
      const result = yield* machine.retrying(
        StreamAdmin.autoClaim(config.stream, config.group, config.consumer, config.minIdleMs, {
          start: cursor,
          count
        }).pipe(
          Effect.tap((r) => Effect.sync(() => machine.hold(r.entries, undefined))),
          Effect.uninterruptible
        )
      )
      cursor = result.next
      if (result.entries.length > 0) {
        yield* Metric.update(machine.metric.claimed, result.entries.length)
        yield* Effect.logInfo(`claimed ${result.entries.length} idle entries`)
        yield* deliver(result.entries, "claimed")
      }
      if (cursor === "0-0") break
    }
  }).pipe(
    Effect.catch((error) => Effect.logWarning(`claiming idle entries failed: ${error._tag}: ${error.message}`)),
    Effect.annotateLogs({ stream: config.stream, group: config.group, consumer: config.consumer })
  )

  const readLoop = Effect.gen(function* () {
    if (config.recoverPending) {
      let cursor = "0"
      for (;;) {
        const raws = yield* read(cursor, yield* awaitRoom, undefined)
        if (raws.length === 0) break
        cursor = raws[raws.length - 1]!.id
        yield* deliver(raws, "pending")
      }
    }
    // Claims run between reads, within the same room: a busy consumer does not take over more than it can handle.
    let nextClaim = config.claim ? yield* Clock.currentTimeMillis : Number.POSITIVE_INFINITY
    for (;;) {
      const count = yield* awaitRoom
      const now = yield* Clock.currentTimeMillis
      if (now >= nextClaim) {
        yield* claimPass
        nextClaim = (yield* Clock.currentTimeMillis) + config.claimIntervalMs
        continue
      }
      // Blocks no longer than until the next claim pass is due.
      const raws = yield* read(">", count, Math.max(1, Math.min(config.blockMs, nextClaim - now)))
      if (raws.length > 0) yield* deliver(raws, "new")
    }
  })

  /** What stopped reading, for `run` (the `messages` stream has it from the queue). */
  const failure = yield* Deferred.make<never, ConsumerError>()
  const failQueue = (cause: Cause.Cause<ConsumerError>) =>
    Effect.andThen(Deferred.failCause(failure, cause), Queue.failCause(queue, cause))
  const readerFiber = yield* readLoop.pipe(Effect.catchCause(failQueue), Effect.forkIn(scope))
  const admitterFiber = yield* admitLoop.pipe(Effect.catchCause(failQueue), Effect.forkIn(scope))
  yield* machine.heartbeat.pipe(
    Effect.andThen(machine.updatePending),
    Effect.catch((error) => Effect.logWarning(`heartbeat failed: ${error._tag}: ${error.message}`)),
    Effect.repeat(Schedule.spaced(Duration.millis(Math.max(1, config.minIdleMs / 4)))),
    Effect.forkIn(scope)
  )

  const unblock = Effect.suspend(() =>
    blockedIn === undefined
      ? Effect.void
      : StreamAdmin.command("CLIENT", config.stream, ["UNBLOCK", blockedIn, "TIMEOUT"], () => 0).pipe(
          Effect.provideService(RedisConnection, redis)
        )
  ).pipe(Effect.ignore)

  /**
   * Stops reading, without losing a read: interrupting the reader waits for the Redis command it is in (and the
   * recording of what that returned). A blocked read is cut short: `CLIENT UNBLOCK … TIMEOUT` makes it return as if
   * its block time had run out, with whatever it had; sent again until the reader is done, in case the read had not
   * reached Redis yet.
   */
  const stopReading = Effect.raceFirst(
    Fiber.interrupt(readerFiber),
    Effect.forever(Effect.andThen(unblock, Effect.sleep("20 millis")))
  ).pipe(
    // What was read and not admitted yet stays held, and is given back.
    Effect.andThen(Fiber.interrupt(admitterFiber))
  )

  /**
   * A graceful stop: reading stops, and what was read and never handed out is given back, within `timeoutMs`. Past
   * it (Redis unreachable, or a read that could not be unblocked), the reader's connection is dropped: what is not
   * given back by then keeps the delivery its read counted, as after a crash.
   */
  const stop = (timeoutMs: number) =>
    Effect.andThen(stopReading, machine.giveBack).pipe(
      Effect.timeoutOrElse({
        duration: Duration.millis(timeoutMs),
        orElse: () =>
          Effect.sync(() => reader.client.disconnect()).pipe(
            Effect.andThen(Effect.logWarning("stopping: entries read ahead were not all given back in time")),
            Effect.annotateLogs({ stream: config.stream, group: config.group, consumer: config.consumer })
          )
      })
    )
  yield* Effect.addFinalizer(() => stop(GIVE_BACK_TIMEOUT_MS))

  /** Messages read, not yet handed out: mark them with `handOut` once they reach the application. */
  const take = Queue.takeAll(queue)
  const takeOne = Queue.take(queue)
  /** No more messages for those taking them; what is still queued stays read ahead (and is given back on `stop`). */
  const end = () => Queue.endUnsafe(queue)
  // The reader is woken only once there is room for a read, not for every message handed out.
  const handOutAll = (messages: ReadonlyArray<Message>) => {
    machine.handOut(messages)
    if (roomNow() > 0) room.openUnsafe()
  }
  const handOut = (message: Message) => {
    machine.held.delete(message.id)
    if (roomNow() > 0) room.openUnsafe()
  }

  return { take, takeOne, end, failed: Deferred.await(failure), handOut, handOutAll, stop, machine }
})

/**
 * The messages of one consumer of a group: its own pending entries first, then new ones, plus idle entries taken
 * over from other consumers. Acknowledge each message (`message.ack`) or each chunk ({@link ack}) after processing
 * it; what is not acknowledged stays pending and comes back.
 *
 * The stream reads ahead at most twice `count` entries beyond what it has emitted. When it ends, entries read ahead
 * and not emitted are given back with their delivery count restored (see `giveBack`); what was emitted counts as
 * delivered, acknowledged or not.
 *
 * @example
 * ```ts
 * RedisStreamConsumer.messages({ stream: "orders.events", group: "mygroup", consumer: "worker1" }).pipe(
 *   Stream.mapArrayEffect((chunk) =>
 *     Effect.forEach(chunk, (m) => process(m.event)).pipe(Effect.andThen(RedisStreamConsumer.ack(chunk)), Effect.as(chunk))
 *   ),
 *   Stream.runDrain
 * )
 * ```
 */
export const messages = (options: Options): Stream.Stream<Message, ConsumerError, RedisConnection> =>
  Stream.unwrap(
    Effect.gen(function* () {
      const config = yield* validate(options)
      const { take, handOutAll } = yield* open(config)
      // What the pull returns has reached the application; what is still queued when the stream ends is given back.
      const pull = Effect.map(take, (chunk) => {
        handOutAll(chunk)
        return chunk
      })
      return Stream.fromPull(Effect.succeed(pull))
    })
  )

/**
 * Acknowledges messages with one `XACK` per stream and group (for acknowledging a whole chunk at once).
 */
export const ack = (messages: ReadonlyArray<Message>): Effect.Effect<void, RedisError> =>
  Effect.gen(function* () {
    const byCore = new Map<Core, Array<Message>>()
    for (const m of messages) {
      const core = (m as WithCore)[coreKey]
      if (core === undefined) {
        yield* m.ack
        continue
      }
      const list = byCore.get(core)
      if (list === undefined) byCore.set(core, [m])
      else list.push(m)
    }
    for (const [core, list] of byCore) yield* core.ackIds(list)
  })

// ---------------------------------------------------------------------------------------------------------------
// The application loop
// ---------------------------------------------------------------------------------------------------------------

export interface RunOptions<E, R> extends Options {
  /** Processes one event. The entry is acknowledged only after it succeeds; a failure gives the entry back. */
  readonly handler: (event: CdcEvent, message: Message) => Effect.Effect<unknown, E, R>
  /** Handlers running at once. Default 1. */
  readonly concurrency?: number
  /**
   * Keep the order of events that share a key: `"key"` uses the entry's `key` field (written by the sink's `key`
   * option), falling back to the table; or a function of the message. Without it, events run in any order.
   */
  readonly orderedBy?: "key" | ((message: Message) => string)
  /**
   * `"batch"` (default): successes are acknowledged together, one `XACK` for everything finished while the
   * previous `XACK` was in flight (no added latency); `"each"`: one `XACK` per message, before the next is taken.
   */
  readonly ack?: "batch" | "each"
  /**
   * Skip events already processed (by event id), see `Idempotency`: a duplicate is acknowledged without running
   * the handler; a copy being processed elsewhere at that moment is given back and comes back later.
   */
  readonly idempotency?: IdempotencyStore
  /**
   * On interruption: how long handlers in flight may take to finish (and be acknowledged). Those still running
   * then are interrupted and stay pending. Default 10 seconds.
   */
  readonly shutdownTimeout?: Duration.Input
  /**
   * Handle this many messages, then stop as on interruption and return (for a batch job, or `consume --count`).
   * Only as many entries as are still to be handled are read, so none is left read ahead. A message counts when it
   * reaches its handler (or is skipped as a duplicate); entries sent to the dead-letter stream do not. Default: run
   * until interrupted.
   */
  readonly limit?: number
}

/** FNV-1a: a stable lane for a key. */
const laneOf = (key: string, lanes: number): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return (h >>> 0) % lanes
}

const orderKey = (orderedBy: "key" | ((message: Message) => string)) =>
  orderedBy === "key"
    ? (m: Message) => m.key ?? `${m.event.source.db}.${m.event.source.schema ?? ""}.${m.event.source.table}`
    : orderedBy

/**
 * Runs a consumer until interrupted (or until a failure policy gives up, or `limit` messages were handled): reads,
 * processes with `handler`, acknowledges after success. On interruption it stops reading, waits up to
 * `shutdownTimeout` for the handlers in flight, acknowledges those that finished, and leaves everything else pending
 * for the next start or another consumer. Entries read ahead that no handler took are given back with their delivery
 * count restored, so a stop does not push them towards the dead-letter stream.
 */
export const run = <E, R>(options: RunOptions<E, R>): Effect.Effect<void, ConsumerError, R | RedisConnection> =>
  Effect.scoped(
    Effect.gen(function* () {
      const config = yield* validate(options)
      const concurrency = yield* Effect.try({
        try: () => positiveInt("concurrency", options.concurrency, 1),
        catch: (e) => e as ConsumerConfigError
      })
      const shutdownMs = yield* Effect.try({
        try: () => durationMs("shutdownTimeout", options.shutdownTimeout, 10_000),
        catch: (e) => e as ConsumerConfigError
      })
      const limit = yield* Effect.try({
        try: () => (options.limit === undefined ? undefined : positiveInt("limit", options.limit, 1)),
        catch: (e) => e as ConsumerConfigError
      })
      const scope = yield* Scope.Scope
      const annotate = Effect.annotateLogs({ stream: config.stream, group: config.group, consumer: config.consumer })

      const reading = yield* open(config, limit)
      const machine = reading.machine

      const batched = (options.ack ?? "batch") === "batch"
      // Ids, not messages: a handled message (and its event) is garbage at once, not after the XACK that follows.
      const ackQueue = yield* Queue.unbounded<string, Cause.Done>()
      /** Ids in the ack queue of entries delivered more than once (their last error goes with the XACK). */
      const redeliveredIds = new Set<string>()
      const acker = yield* Effect.gen(function* () {
        for (;;) {
          const ids = yield* Queue.takeBetween(ackQueue, 1, 5000)
          const redelivered = redeliveredIds.size === 0 ? [] : ids.filter((id) => redeliveredIds.delete(id))
          yield* machine.core
            .ackEntries(ids, redelivered)
            .pipe(Effect.catch((error) => Effect.logWarning(`XACK failed, entries stay pending: ${error.message}`)))
        }
      }).pipe(
        Effect.catchCause(() => Effect.void),
        Effect.forkIn(scope)
      )
      const stillPending = (message: Message) => (error: RedisError) =>
        Effect.logWarning(`entry ${message.id} stays pending: ${error._tag}: ${error.message}`)
      // Batched: the acker takes everything that finished while its previous XACK was in flight.
      const queueAck = (message: Message): void => {
        if (message.deliveries > 1) redeliveredIds.add(message.id)
        Queue.offerUnsafe(ackQueue, message.id)
      }
      const acknowledge = (message: Message): Effect.Effect<void> => {
        if (!batched) return Effect.catch(message.ack, stillPending(message))
        queueAck(message)
        return Effect.void
      }

      const failed = (message: Message, cause: Cause.Cause<unknown>): Effect.Effect<void> => {
        if (Cause.hasInterruptsOnly(cause)) return Effect.void
        const reason = Cause.pretty(cause)
        return Effect.logWarning(
          `handler failed for entry ${message.id} (delivery ${message.deliveries})`,
          reason
        ).pipe(Effect.andThen(message.nack(reason.split("\n")[0] ?? reason)), Effect.catch(stillPending(message)))
      }

      const idempotency = options.idempotency
      /** The handler's effect. A handler that throws rather than failing is a defect, as in `Effect.suspend`. */
      const handlerOf = (message: Message): Effect.Effect<unknown, E, R> => {
        try {
          return options.handler(message.event, message)
        } catch (defect) {
          return Effect.die(defect)
        }
      }
      const handleOnce = (store: IdempotencyStore) => (message: Message) =>
        Effect.gen(function* () {
          const acquired = yield* machine.retrying(store.acquire(message.event.id))
          if (acquired._tag === "Processed") {
            yield* Effect.logDebug(`skipping duplicate event ${message.event.id} (entry ${message.id})`)
            return yield* acknowledge(message)
          }
          if (acquired._tag === "Busy") {
            // Another copy is being processed right now: this one comes back later, as a duplicate by then.
            return yield* message.nack(new EventInProgress({ eventId: message.event.id }).message)
          }
          const token = acquired.token
          const release = Effect.ignore(store.release(message.event.id, token))
          // The reservation is renewed while the handler runs, so a handler slower than the lease keeps its event.
          const exit = yield* Effect.exit(
            hold(
              store,
              message.event.id,
              token,
              Effect.suspend(() => options.handler(message.event, message))
            ).pipe(Effect.onInterrupt(() => release))
          )
          if (Exit.isSuccess(exit)) {
            yield* machine.retrying(store.complete(message.event.id, token))
            return yield* acknowledge(message)
          }
          yield* release
          const error = Cause.findErrorOption(exit.cause)
          if (Option.isSome(error) && error.value instanceof ReservationLost) {
            // Another consumer has the event now (this one could not renew in time): not a failure of the handler.
            return yield* message.nack(error.value.message)
          }
          yield* failed(message, exit.cause as Cause.Cause<E>)
        }).pipe(
          Effect.catch(stillPending(message)),
          Effect.catchCause((cause) =>
            Cause.hasInterruptsOnly(cause)
              ? Effect.failCause(cause)
              : Effect.logWarning(`entry ${message.id} stays pending after a defect`, Cause.pretty(cause))
          )
        )
      const handleIdempotent = idempotency === undefined ? undefined : handleOnce(idempotency)

      const keyOf = options.orderedBy === undefined ? undefined : orderKey(options.orderedBy)
      // Ordered: one lane per worker, fed by a dispatcher, a key always on the same lane, a lane's messages handled in
      // turn. Unordered: the workers take from the reader's queue themselves (one fiber less between a read and its
      // handlers), each taking one message at a time (a single worker takes all that waits). Lanes are not bounded:
      // what is read ahead is (see `open`).
      const lanes =
        keyOf === undefined
          ? []
          : yield* Effect.forEach(Array.from({ length: concurrency }), () => Queue.unbounded<Message, Cause.Done>())
      const takeOne: Effect.Effect<ReadonlyArray<Message>, ConsumerError | Cause.Done> = Effect.map(
        reading.takeOne,
        (message) => [message]
      )
      const source = (i: number): Effect.Effect<ReadonlyArray<Message>, ConsumerError | Cause.Done> =>
        keyOf !== undefined ? Queue.takeAll(lanes[i]!) : concurrency > 1 ? takeOne : reading.take
      let stopping = false
      let handed = 0
      let running = 0
      const limitReached = yield* Deferred.make<void>()
      // Once stopping, no handler starts: a message taken and not started stays read ahead (given back on stop).
      // Checking, handing out and starting happen in one synchronous step, so a stop cannot fall between.
      const worker = (take: Effect.Effect<ReadonlyArray<Message>, ConsumerError | Cause.Done>) =>
        Effect.gen(function* () {
          for (;;) {
            const chunk = yield* take
            for (const message of chunk) {
              if (stopping) return
              reading.handOut(message)
              handed++
              running++
              if (handleIdempotent !== undefined) {
                yield* handleIdempotent(message)
              } else {
                // The common case, inline: no effect per message but the handler's and its exit.
                const exit = yield* Effect.exit(handlerOf(message))
                if (Exit.isFailure(exit)) yield* failed(message, exit.cause)
                else if (batched) queueAck(message)
                else yield* acknowledge(message)
              }
              if (--running === 0 && handed === limit) Deferred.doneUnsafe(limitReached, Exit.void)
            }
          }
        }).pipe(
          // Ended (stopping), or reading failed: `run` fails with that below.
          Effect.catch(() => Effect.void),
          annotate
        )
      const workers = yield* Effect.forEach(Array.from({ length: concurrency }), (_, i) =>
        Effect.forkIn(worker(source(i)), scope)
      )
      const dispatcher =
        keyOf === undefined
          ? undefined
          : yield* Effect.gen(function* () {
              for (;;) {
                const chunk = yield* reading.take
                for (const message of chunk) Queue.offerUnsafe(lanes[laneOf(keyOf(message), concurrency)]!, message)
              }
            }).pipe(
              Effect.catch(() => Effect.void), // reading failed: `run` fails with that below
              Effect.forkIn(scope)
            )

      yield* Effect.addFinalizer(() =>
        Effect.gen(function* () {
          const started = yield* Clock.currentTimeMillis
          // No handler starts from here on. Reading stops and what is still queued for the handlers is given back
          // while the handlers in flight finish (their entries and those are not the same).
          stopping = true
          if (dispatcher !== undefined) yield* Fiber.interrupt(dispatcher)
          for (const lane of lanes) Queue.endUnsafe(lane)
          if (keyOf === undefined) reading.end()
          if (running > 0) yield* Effect.logInfo(`shutting down: waiting for ${running} handlers`)
          const handlersDone = Fiber.awaitAll(workers).pipe(
            Effect.timeoutOrElse({
              duration: Duration.millis(shutdownMs),
              orElse: () =>
                Effect.gen(function* () {
                  yield* Effect.logWarning(
                    `shutdown timeout: ${running} handlers interrupted, their entries stay pending`
                  )
                  yield* Fiber.interruptAll(workers)
                })
            })
          )
          yield* Effect.all([reading.stop(shutdownMs), handlersDone], { concurrency: "unbounded", discard: true })
          yield* Queue.end(ackQueue)
          const elapsed = (yield* Clock.currentTimeMillis) - started
          yield* Fiber.await(acker).pipe(
            Effect.timeoutOrElse({
              duration: Duration.millis(Math.max(1000, shutdownMs - elapsed)),
              orElse: () => Effect.logWarning("shutdown timeout: the last acknowledgements did not complete")
            })
          )
        }).pipe(annotate)
      )

      const failedReading = reading.failed
      if (limit === undefined) return yield* failedReading
      // With a limit: done once the last message's handler finished; the finalizer acknowledges what is left.
      yield* Effect.raceFirst(failedReading, Deferred.await(limitReached))
    })
  )

// ---------------------------------------------------------------------------------------------------------------
// Plain subscription
// ---------------------------------------------------------------------------------------------------------------

export interface SubscribeOptions {
  readonly stream: string
  /** `$` (only entries added from now on, the default), `0-0` (the whole stream), or an id (entries after it). */
  readonly from?: string
  readonly envelope?: Envelope.Format
  /** Most entries per read. Default 100. */
  readonly count?: number
  /** How long one `XREAD` blocks. Default 2 seconds. */
  readonly block?: Duration.Input
  readonly policies?: Partial<FailurePolicy.FailurePolicies>
}

/** One entry of a plain subscription. Pass its `id` as `from` to resume after it. */
export interface SubscriptionEntry {
  readonly stream: string
  readonly id: string
  readonly event: CdcEvent
  readonly fields: Readonly<Record<string, string>>
}

/**
 * A plain `XREAD` subscription (no group, no acknowledgement): every entry after `from`, then new ones as they
 * arrive. `$` is resolved to the stream's last id at the start, so nothing added between two reads is missed, and
 * the stream resumes from the last id it emitted after a Redis error. Entries that do not decode are skipped with a
 * warning (a subscription has no dead-letter stream: use a group for that).
 */
export const subscribe = (
  options: SubscribeOptions
): Stream.Stream<SubscriptionEntry, ConsumerError, RedisConnection> =>
  Stream.unwrap(
    Effect.gen(function* () {
      const stream = yield* Effect.try({
        try: () => nonEmpty("stream", options.stream),
        catch: (e) => e as ConsumerConfigError
      })
      const from = options.from ?? "$"
      if (!START_ID.test(from) && from !== "0-0") {
        return yield* configError("from", `from must be "$", "0-0" or an entry id, got ${JSON.stringify(from)}`)
      }
      const format = options.envelope ?? "native"
      const envelope = Envelope.make(format)
      const count = yield* Effect.try({
        try: () => positiveInt("count", options.count, 100),
        catch: (e) => e as ConsumerConfigError
      })
      const blockMs = yield* Effect.try({
        try: () => durationMs("block", options.block, 2_000),
        catch: (e) => e as ConsumerConfigError
      })
      const redis = yield* RedisConnection
      const policies = FailurePolicy.make(options.policies ?? {}, redis.topology)
      const reader = yield* redis.dedicated({
        commandTimeout: Duration.millis(blockMs + redis.resolved.commandTimeoutMs)
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => reader.client.disconnect()))
      const retrying = <A>(effect: Effect.Effect<A, RedisError, RedisConnection>) =>
        effect.pipe(Effect.retry(FailurePolicy.schedule(policies)), Effect.provideService(RedisConnection, reader))
      let cursor = from === "$" ? Option.getOrElse(yield* retrying(StreamAdmin.lastId(stream)), () => "0-0") : from
      const pull = Effect.gen(function* () {
        for (;;) {
          const raws = yield* retrying(StreamAdmin.read(stream, cursor, { count, block: blockMs }))
          if (raws.length === 0) continue
          cursor = raws[raws.length - 1]!.id
          const out: Array<SubscriptionEntry> = []
          for (const raw of raws) {
            const fields = raw.fields ?? {}
            const decoded =
              fields.event === undefined
                ? Result.fail("the entry has no event field")
                : Result.mapError(envelope.decodeResult(fields.event), (e) => e.message)
            if (Result.isFailure(decoded)) {
              yield* Effect.logWarning(`skipping entry ${raw.id} of ${stream}: ${decoded.failure}`)
              continue
            }
            out.push({ stream, id: raw.id, event: decoded.success, fields })
          }
          if (out.length > 0) return out as unknown as readonly [SubscriptionEntry, ...Array<SubscriptionEntry>]
        }
      })
      return Stream.fromPull(Effect.succeed(pull))
    })
  )
