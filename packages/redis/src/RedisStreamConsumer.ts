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
 * The plain `XREAD` subscription, without a group, is `RedisStreamSubscription` (re-exported here as
 * {@link subscribe}).
 *
 * The machinery lives in `internal/consumer/`: `settings` (options checked once), `store` (the Redis operations
 * behind an interface, with a memory implementation for `TestClock` tests), `ledger` (entries in flight and held),
 * `admission` (decoding and the dead-letter checks), `reader` (reading, claiming, admitting), `workers` (handlers
 * and the acker) and `shutdown` (the graceful stop and giving back).
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
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Stream from "effect/Stream"
import type * as Duration from "effect/Duration"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import type * as ConfigError from "@redflow/core/ConfigError"
import type * as Envelope from "@redflow/core/Envelope"
import type * as FailurePolicy from "./FailurePolicy.ts"
import type { IdempotencyStore } from "./Idempotency.ts"
import * as Ledger from "./internal/consumer/ledger.ts"
import * as Reader from "./internal/consumer/reader.ts"
import * as Settings from "./internal/consumer/settings.ts"
import * as Store from "./internal/consumer/store.ts"
import * as Workers from "./internal/consumer/workers.ts"
import type { RedisConnection } from "./RedisConnection.ts"
import type { RedisError } from "./RedisError.ts"

export {
  /**
   * A Redis error, or the `ConfigError` (component `RedisStreamConsumer`) of an option that cannot work.
   *
   * @since 0.1.0
   * @category errors
   */
  type ConsumerError
} from "./internal/consumer/settings.ts"

export {
  /**
   * The plain `XREAD` subscription; it lives in `RedisStreamSubscription`.
   *
   * @since 0.1.0
   * @category subscription
   */
  subscribe,
  /**
   * Options of {@link subscribe}; they live in `RedisStreamSubscription`.
   *
   * @since 0.1.0
   * @category subscription
   */
  type SubscribeOptions,
  /**
   * One entry of a plain subscription; it lives in `RedisStreamSubscription`.
   *
   * @since 0.1.0
   * @category subscription
   */
  type SubscriptionEntry
} from "./RedisStreamSubscription.ts"

/**
 * Options of {@link messages}: the stream, group and consumer, where a new group starts, the envelope, how entries
 * are read, claimed from idle consumers and dead-lettered.
 *
 * @since 0.1.0
 * @category options
 */
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

/**
 * Checks consumer options without connecting to Redis: fails with the `ConfigError` (component
 * `RedisStreamConsumer`, `path` the option's) that {@link messages} and {@link run} would fail with, for a command
 * line that reports bad flags before connecting. Given {@link RunOptions}, it checks those of `run` too.
 *
 * @since 0.1.0
 * @category options
 */
export const validateOptions = (
  options: Options | RunOptions<unknown, unknown>
): Effect.Effect<void, ConfigError.ConfigError> =>
  Effect.andThen(
    Settings.decode(options),
    "handler" in options ? Effect.asVoid(Settings.decodeRun(options)) : Effect.void
  )

/**
 * How a message reached this consumer.
 *
 * @since 0.1.0
 * @category models
 */
export type Delivery = "new" | "pending" | "claimed"

/**
 * One decoded entry of the group, delivered to this consumer and not yet acknowledged.
 *
 * @since 0.1.0
 * @category models
 */
export interface Message {
  readonly stream: string
  readonly group: string
  readonly consumer: string
  /** The entry id. */
  readonly id: string
  readonly event: CdcEvent
  /**
   * The entry's raw fields (`event`, `id`, `op`, `table`, `key`, and `traceparent` when the producer traced). For an
   * entry the sink wrote by reference (`largeEvents: "reference"`), `ref` names the key its body was read from, and
   * `event` is that body.
   */
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
 *
 * @since 0.1.0
 * @category constructors
 */
export const messages = (options: Options): Stream.Stream<Message, Settings.ConsumerError, RedisConnection> =>
  Stream.unwrap(
    Effect.gen(function* () {
      const settings = yield* Settings.decode(options)
      const store = yield* Store.makeRedis(settings)
      return yield* Reader.openMessages(Ledger.make(settings, store))
    })
  )

/**
 * Acknowledges messages with one `XACK` per stream and group (for acknowledging a whole chunk at once). A chunk
 * merged from several streams sends their `XACK`s together; if one fails, the others still complete, and the
 * first failure is the result (its messages stay pending and come back).
 *
 * @since 0.1.0
 * @category acknowledging
 */
export const ack = (messages: ReadonlyArray<Message>): Effect.Effect<void, RedisError> =>
  Effect.gen(function* () {
    const byLedger = new Map<Ledger.Ledger, Array<Message>>()
    for (const m of messages) {
      const ledger = Ledger.ledgerOf(m)
      if (ledger === undefined) {
        yield* m.ack
        continue
      }
      const list = byLedger.get(ledger)
      if (list === undefined) byLedger.set(ledger, [m])
      else list.push(m)
    }
    if (byLedger.size <= 1) {
      for (const [ledger, list] of byLedger) yield* Ledger.acknowledgeMessages(ledger, list)
      return
    }
    // A chunk merged from several streams: their XACKs go out together, one round trip rather than one per stream,
    // and each runs to its end (a failure of one does not cut another short); the first failure is reported.
    const results = yield* Effect.all(
      Array.from(byLedger, ([ledger, list]) => Ledger.acknowledgeMessages(ledger, list)),
      { concurrency: "unbounded", mode: "result" }
    )
    for (const result of results) if (Result.isFailure(result)) return yield* Effect.fail(result.failure)
  })

/**
 * Options of {@link run}: those of {@link messages}, plus the handler, its concurrency and ordering, how successes
 * are acknowledged, duplicate skipping, and the bound of a graceful shutdown.
 *
 * @since 0.1.0
 * @category options
 */
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

/**
 * Runs a consumer until interrupted (or until a failure policy gives up, or `limit` messages were handled): reads,
 * processes with `handler`, acknowledges after success. On interruption it stops reading, waits up to
 * `shutdownTimeout` for the handlers in flight, acknowledges those that finished, and leaves everything else pending
 * for the next start or another consumer. Entries read ahead that no handler took are given back with their delivery
 * count restored, so a stop does not push them towards the dead-letter stream.
 *
 * @since 0.1.0
 * @category running
 */
export const run = <E, R>(
  options: RunOptions<E, R>
): Effect.Effect<void, Settings.ConsumerError, R | RedisConnection> =>
  Effect.scoped(
    Effect.gen(function* () {
      const settings = yield* Settings.decode(options)
      // Every option is checked before a connection is opened.
      yield* Settings.decodeRun(options)
      const store = yield* Store.makeRedis(settings)
      return yield* Workers.run(settings, store, options)
    })
  )
