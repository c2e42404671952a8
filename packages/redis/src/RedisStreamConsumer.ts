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
 * interruption that stops reading, lets the handlers in flight finish within a bound, and acknowledges them.
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
import {
  Cause,
  Clock,
  Duration,
  Effect,
  Exit,
  Fiber,
  FiberSet,
  Metric,
  Option,
  Predicate,
  Queue,
  Result,
  Schedule,
  Schema,
  Scope,
  Stream
} from "effect"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as Envelope from "@redflow/core/Envelope"
import * as Metrics from "@redflow/core/Metrics"
import * as FailurePolicy from "./FailurePolicy.ts"
import { EventInProgress, type IdempotencyStore } from "./Idempotency.ts"
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
  /** Most entries per read. Default 100. */
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
        deadLetterStream: nonEmpty("deadLetterStream", options.deadLetterStream ?? `${stream}.dead-letter`),
        recoverPending: options.recoverPending ?? true,
        policies: options.policies ?? {},
        errorsKey: `redflow:consumer-errors:${stream}:${group}`
      }
    },
    catch: (e) => (e instanceof ConsumerConfigError ? e : configError("options", String(e)))
  })

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

interface Core {
  readonly config: Config
  readonly ackIds: (messages: ReadonlyArray<Message>) => Effect.Effect<void, RedisError>
}

const cores = new WeakMap<Message, Core>()

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

  const retrying = <A>(effect: Effect.Effect<A, RedisError, RedisConnection>): Effect.Effect<A, RedisError> =>
    effect.pipe(
      Effect.retry(
        FailurePolicy.schedule(policies, (error, delay) =>
          Effect.logDebug(`retrying in ${Duration.format(delay)} after ${error._tag}: ${error.message}`)
        )
      ),
      Effect.provideService(RedisConnection, redis)
    )

  const ensureGroup = retrying(
    StreamAdmin.createGroup(config.stream, config.group, { start: config.startId, mkStream: true })
  )

  const ackIds = (messages: ReadonlyArray<Message>): Effect.Effect<void, RedisError> => {
    if (messages.length === 0) return Effect.void
    const ids = messages.map((m) => m.id)
    const redelivered = messages.filter((m) => m.deliveries > 1).map((m) => m.id)
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

  const core: Core = { config, ackIds }

  const lastError = (id: string) =>
    retrying(
      StreamAdmin.command("HGET", config.errorsKey, [config.errorsKey, id], (reply) =>
        Predicate.isString(reply) ? reply : undefined
      )
    )

  /** Copies an entry to the dead-letter stream with its metadata, then acknowledges it in the source. */
  const deadLetter = (
    raw: Raw & { readonly fields: Readonly<Record<string, string>> },
    deliveries: number,
    error: string
  ) =>
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
        (id) => StreamAdmin.pendingEntries(config.stream, config.group, { start: id, end: id, count: 1 }),
        { concurrency: "unbounded" }
      )
    ).pipe(
      Effect.map((replies) => {
        const out = new Map<string, number>()
        for (const reply of replies) for (const p of reply) out.set(p.id, p.deliveries)
        return out
      })
    )

  /**
   * Turns what a read returned into messages: entries already in flight here are skipped (a claim can return
   * them), entries deleted from the stream are acknowledged (there is nothing left to process), entries past
   * `maxDeliveries` or that do not decode go to the dead-letter stream.
   */
  const admit = (raws: ReadonlyArray<Raw>, delivery: Delivery) =>
    Effect.gen(function* () {
      const fresh = raws.filter((r) => !inFlight.has(r.id))
      if (fresh.length === 0) return [] as Array<Message>
      const gone = fresh.filter((r) => r.fields === undefined).map((r) => r.id)
      if (gone.length > 0) {
        yield* retrying(StreamAdmin.ack(config.stream, config.group, gone))
        yield* Effect.logWarning(`acknowledged ${gone.length} pending entries deleted from the stream`).pipe(
          Effect.annotateLogs({ stream: config.stream, group: config.group, ids: gone.join(",") })
        )
      }
      const live = fresh.filter((r): r is Raw & { fields: Readonly<Record<string, string>> } => r.fields !== undefined)
      const counts = delivery === "new" ? undefined : yield* deliveriesOf(live.map((r) => r.id))
      const now = yield* Clock.currentTimeMillis
      const out: Array<Message> = []
      for (const raw of live) {
        const deliveries = counts?.get(raw.id) ?? 1
        if (deliveries > config.maxDeliveries) {
          const error = (yield* lastError(raw.id)) ?? "not acknowledged (handler failed, timed out or crashed)"
          yield* deadLetter(raw, deliveries - 1, error)
          continue
        }
        const text = raw.fields.event
        const decoded =
          text === undefined
            ? Result.fail("the entry has no event field")
            : Result.mapError(config.envelope.decodeResult(text), (e) => e.message)
        if (Result.isFailure(decoded)) {
          yield* deadLetter(raw, deliveries, decoded.failure)
          continue
        }
        inFlight.set(raw.id, now)
        const id = raw.id
        const message: Message = {
          stream: config.stream,
          group: config.group,
          consumer: config.consumer,
          id,
          event: decoded.success,
          fields: raw.fields,
          key: raw.fields.key,
          deliveries,
          delivery,
          ack: Effect.suspend(() => ackIds([message])),
          nack: (reason) => nack(id, reason)
        }
        cores.set(message, core)
        out.push(message)
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

  const updatePending = Effect.flatMap(retrying(StreamAdmin.pending(config.stream, config.group)), (summary) =>
    Metric.update(metric.pending, summary.count)
  )

  /** One pass of `XAUTOCLAIM` over the pending list (bounded), then the pending gauge. */
  const claimPass = (offer: (messages: ReadonlyArray<Message>) => Effect.Effect<void>) =>
    Effect.gen(function* () {
      let cursor = "0-0"
      for (let round = 0; round < 10; round++) {
        const result = yield* retrying(
          StreamAdmin.autoClaim(config.stream, config.group, config.consumer, config.minIdleMs, {
            start: cursor,
            count: config.count
          })
        )
        cursor = result.next
        if (result.entries.length > 0) {
          yield* Metric.update(metric.claimed, result.entries.length)
          yield* Effect.logInfo(`claimed ${result.entries.length} idle entries`).pipe(
            Effect.annotateLogs({ stream: config.stream, group: config.group, consumer: config.consumer })
          )
          const messages = yield* admit(result.entries, "claimed")
          if (messages.length > 0) yield* offer(messages)
        }
        if (cursor === "0-0") break
      }
      yield* updatePending
    })

  return { core, ensureGroup, admit, heartbeat, claimPass, updatePending, retrying }
})

const isNoGroup = (error: RedisError) => error._tag === "RedisCommandError" && error.code === "NOGROUP"

/** A consumer's reading machinery in the current scope: a pull of messages, and a way to stop reading. */
const open = Effect.fnUntraced(function* (config: Config) {
  const redis = yield* RedisConnection
  const scope = yield* Scope.Scope
  const machine = yield* makeCore(config)
  yield* machine.ensureGroup
  // A blocked XREADGROUP must not hold up acks and claims: it gets its own connection, with a command timeout above
  // the block time.
  const reader = yield* redis.dedicated({
    commandTimeout: Duration.millis(config.blockMs + redis.resolved.commandTimeoutMs)
  })
  // Closing it while a read blocks would wait out the block time (QUIT queues behind the read): drop it instead.
  yield* Effect.addFinalizer(() => Effect.sync(() => reader.client.disconnect()))
  const queue = yield* Queue.bounded<Message, ConsumerError | Cause.Done>(config.count)
  const offer = (messages: ReadonlyArray<Message>) => Effect.asVoid(Queue.offerAll(queue, messages))

  const read = (id: string, block: boolean) =>
    StreamAdmin.readGroup(config.stream, config.group, config.consumer, id, {
      count: config.count,
      ...(block ? { block: config.blockMs } : {})
    }).pipe(
      Effect.provideService(RedisConnection, reader),
      // The group (or the stream) was deleted under us: create it again and go on.
      Effect.catchIf(isNoGroup, () => Effect.as(machine.ensureGroup, [])),
      machine.retrying
    )

  const readLoop = Effect.gen(function* () {
    if (config.recoverPending) {
      let cursor = "0"
      for (;;) {
        const raws = yield* read(cursor, false)
        if (raws.length === 0) break
        cursor = raws[raws.length - 1]!.id
        const messages = yield* machine.admit(raws, "pending")
        if (messages.length > 0) yield* offer(messages)
      }
    }
    for (;;) {
      const raws = yield* read(">", true)
      if (raws.length === 0) continue
      const messages = yield* machine.admit(raws, "new")
      if (messages.length > 0) yield* offer(messages)
    }
  })

  const failQueue = (cause: Cause.Cause<ConsumerError>) => Queue.failCause(queue, cause)
  const readerFiber = yield* readLoop.pipe(Effect.catchCause(failQueue), Effect.forkIn(scope))
  const claimerFiber = config.claim
    ? yield* machine.claimPass(offer).pipe(
        Effect.catch((error) =>
          Effect.logWarning(`claiming idle entries failed: ${error._tag}: ${error.message}`).pipe(
            Effect.annotateLogs({ stream: config.stream, group: config.group })
          )
        ),
        Effect.repeat(Schedule.spaced(Duration.millis(config.claimIntervalMs))),
        Effect.forkIn(scope)
      )
    : undefined
  // Without claiming, the heartbeat also keeps the pending gauge current.
  yield* (config.claim ? machine.heartbeat : Effect.andThen(machine.heartbeat, machine.updatePending)).pipe(
    Effect.catch((error) => Effect.logWarning(`heartbeat failed: ${error._tag}: ${error.message}`)),
    Effect.repeat(Schedule.spaced(Duration.millis(Math.max(1, config.minIdleMs / 4)))),
    Effect.forkIn(scope)
  )

  /** Stops reading new entries (and claiming); entries already handed out keep their heartbeat. */
  const stopReading = Effect.gen(function* () {
    yield* Fiber.interrupt(readerFiber)
    if (claimerFiber !== undefined) yield* Fiber.interrupt(claimerFiber)
    // Drop a blocked read at once rather than waiting out its block time.
    reader.client.disconnect()
  })

  return { pull: Queue.takeAll(queue), stopReading, machine }
})

/**
 * The messages of one consumer of a group: its own pending entries first, then new ones, plus idle entries taken
 * over from other consumers. Acknowledge each message (`message.ack`) or each chunk ({@link ack}) after processing
 * it; what is not acknowledged stays pending and comes back.
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
      const { pull } = yield* open(config)
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
      const core = cores.get(m)
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
 * Runs a consumer until interrupted (or until a failure policy gives up): reads, processes with `handler`,
 * acknowledges after success. On interruption it stops reading, waits up to `shutdownTimeout` for the handlers in
 * flight, acknowledges those that finished, and leaves everything else pending for the next start or another
 * consumer.
 */
export const run = <E, R>(options: RunOptions<E, R>): Effect.Effect<never, ConsumerError, R | RedisConnection> =>
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
      const scope = yield* Scope.Scope
      const annotate = Effect.annotateLogs({ stream: config.stream, group: config.group, consumer: config.consumer })

      // Handlers run in this set, outside the fibers that take messages: interrupting those (to stop) leaves the
      // handlers running until the shutdown bound.
      const jobs = yield* FiberSet.make<void, never>()
      const { pull, stopReading, machine } = yield* open(config)

      const batched = (options.ack ?? "batch") === "batch"
      const ackQueue = yield* Queue.unbounded<Message, Cause.Done>()
      const acker = yield* Effect.gen(function* () {
        for (;;) {
          const taken = yield* Queue.takeBetween(ackQueue, 1, 5000)
          yield* machine.core
            .ackIds(taken)
            .pipe(Effect.catch((error) => Effect.logWarning(`XACK failed, entries stay pending: ${error.message}`)))
        }
      }).pipe(
        Effect.catchCause(() => Effect.void),
        Effect.forkIn(scope)
      )
      const acknowledge = (message: Message) =>
        batched ? Queue.offer(ackQueue, message).pipe(Effect.asVoid) : message.ack

      const idempotency = options.idempotency
      const handle = (message: Message): Effect.Effect<void, never, R> =>
        Effect.gen(function* () {
          let token: string | undefined
          if (idempotency !== undefined) {
            const acquired = yield* machine.retrying(idempotency.acquire(message.event.id))
            if (acquired._tag === "Processed") {
              yield* Effect.logDebug(`skipping duplicate event ${message.event.id} (entry ${message.id})`)
              return yield* acknowledge(message)
            }
            if (acquired._tag === "Busy") {
              // Another copy is being processed right now: this one comes back later, as a duplicate by then.
              return yield* message.nack(new EventInProgress({ eventId: message.event.id }).message)
            }
            token = acquired.token
          }
          const release = (t: string) => Effect.ignore(idempotency!.release(message.event.id, t))
          const exit = yield* Effect.exit(
            options
              .handler(message.event, message)
              .pipe(Effect.onInterrupt(() => (token === undefined ? Effect.void : release(token))))
          )
          if (Exit.isSuccess(exit)) {
            if (token !== undefined) yield* machine.retrying(idempotency!.complete(message.event.id, token))
            return yield* acknowledge(message)
          }
          if (token !== undefined) yield* release(token)
          if (Cause.hasInterruptsOnly(exit.cause)) return
          const reason = Cause.pretty(exit.cause)
          yield* Effect.logWarning(`handler failed for entry ${message.id} (delivery ${message.deliveries})`, reason)
          yield* message.nack(reason.split("\n")[0] ?? reason)
        }).pipe(
          Effect.catch((error) =>
            Effect.logWarning(`entry ${message.id} stays pending: ${error._tag}: ${error.message}`)
          ),
          annotate
        )

      const keyOf = options.orderedBy === undefined ? undefined : orderKey(options.orderedBy)
      // Ordered: one lane per worker, a key always on the same lane. Unordered: one queue shared by all workers.
      const lanes = yield* Effect.forEach(Array.from({ length: keyOf === undefined ? 1 : concurrency }), () =>
        Queue.bounded<Message>(keyOf === undefined ? concurrency : 1)
      )
      const worker = (lane: Queue.Queue<Message>) =>
        Effect.forever(
          Effect.gen(function* () {
            const message = yield* Queue.take(lane)
            const job = yield* FiberSet.run(jobs, handle(message))
            yield* Fiber.await(job)
          })
        )
      const workers = yield* Effect.forEach(Array.from({ length: concurrency }), (_, i) =>
        Effect.forkIn(worker(lanes[keyOf === undefined ? 0 : i]!), scope)
      )
      const dispatcher = yield* Effect.gen(function* () {
        for (;;) {
          const chunk = yield* pull
          for (const message of chunk) {
            yield* Queue.offer(lanes[keyOf === undefined ? 0 : laneOf(keyOf(message), concurrency)]!, message)
          }
        }
      }).pipe(Effect.forkIn(scope))

      yield* Effect.addFinalizer(() =>
        Effect.gen(function* () {
          const started = yield* Clock.currentTimeMillis
          yield* stopReading
          yield* Fiber.interruptAll([dispatcher, ...workers])
          const running = yield* FiberSet.size(jobs)
          if (running > 0) yield* Effect.logInfo(`shutting down: waiting for ${running} handlers`)
          yield* FiberSet.awaitEmpty(jobs).pipe(
            Effect.timeoutOrElse({
              duration: Duration.millis(shutdownMs),
              orElse: () =>
                Effect.gen(function* () {
                  const left = yield* FiberSet.size(jobs)
                  yield* Effect.logWarning(`shutdown timeout: ${left} handlers interrupted, their entries stay pending`)
                  yield* FiberSet.clear(jobs)
                })
            })
          )
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

      const exit = yield* Fiber.await(dispatcher)
      return yield* Exit.isFailure(exit)
        ? Effect.failCause(exit.cause as Cause.Cause<ConsumerError>)
        : Effect.die(new Error("the consumer stream ended"))
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
