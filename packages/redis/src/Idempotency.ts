/**
 * Idempotent consumers, keyed on the event `id` (docs/GUARANTEES.md, "Duplicates in consumers").
 *
 * The sink's ids are deterministic (source identity + position), so a replayed or redelivered event carries the id
 * it had the first time. A store remembers, per event id, whether it was processed; {@link once} runs the
 * processing only for an id not processed yet:
 *
 * 1. `acquire`: `SET <prefix><id> <token> NX PX <lease>` reserves the id for this processing. If the key exists,
 *    its value tells: `1` means processed (a duplicate: skip it), a token means another copy is being processed
 *    right now (busy: try again later, see {@link EventInProgress}).
 * 2. the processing runs, and the reservation is renewed every third of the lease while it does (see {@link hold}):
 *    a handler slower than the lease keeps its event to itself;
 * 3. `complete`: `SET <prefix><id> 1 PX <ttl>` marks it processed for `ttl`; or, when it failed, `release` deletes
 *    the reservation (only if it is still ours), so a redelivery processes it again.
 *
 * Nothing is lost to the dedup: an id is marked processed only after its processing succeeded, and a consumer that
 * crashes mid-way leaves a reservation that expires after `lease` (nothing renews it any more). Two copies of an
 * event (a replayed duplicate read by another worker at the same moment) are never processed at the same time: the
 * second is busy and comes back after the first finished, as a duplicate.
 *
 * The interface is small ({@link IdempotencyStore}): {@link makeRedis} is the default, {@link makeMemory} an
 * in-process store for tests.
 *
 * @example
 * ```ts
 * const store = yield* Idempotency.makeRedis({ prefix: "processed:billing:", ttl: "7 days" })
 * yield* RedisStreamConsumer.run({ stream, group: "billing", consumer: "w1", handler, idempotency: store })
 * ```
 *
 * @since 0.1.0
 */
import { randomUUID } from "node:crypto"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as ConfigError from "@redflow/core/ConfigError"
import { PositiveMillis } from "./internal/options.ts"
import * as Script from "./internal/script.ts"
import { RedisConnection } from "./RedisConnection.ts"
import type { RedisError } from "./RedisError.ts"

/**
 * What `acquire` found.
 *
 * @since 0.1.0
 * @category models
 */
export type Acquired =
  /** Reserved for this processing: go ahead, then `complete` or `release`. */
  | { readonly _tag: "Acquired"; readonly token: string }
  /** Already processed: a duplicate. */
  | { readonly _tag: "Processed" }
  /** Being processed by someone else right now. */
  | { readonly _tag: "Busy" }

/**
 * A record of processed event ids.
 *
 * @since 0.1.0
 * @category models
 */
export interface IdempotencyStore {
  /** Reserves `eventId` for processing, unless it was processed or is being processed. */
  readonly acquire: (eventId: string) => Effect.Effect<Acquired, RedisError>
  /** Marks `eventId` processed (after the processing succeeded). */
  readonly complete: (eventId: string, token: string) => Effect.Effect<void, RedisError>
  /** Drops a reservation (after the processing failed), so that a redelivery processes the event. */
  readonly release: (eventId: string, token: string) => Effect.Effect<void, RedisError>
  /** Whether `eventId` was marked processed (within the retention). */
  readonly isProcessed: (eventId: string) => Effect.Effect<boolean, RedisError>
  /**
   * Extends a reservation by another lease if it is still ours; `false` when it is not (it expired and another
   * consumer reserved the event, or it was released).
   */
  readonly renew: (eventId: string, token: string) => Effect.Effect<boolean, RedisError>
  /** How long a reservation holds, in milliseconds: {@link hold} renews it every third of that. */
  readonly leaseMillis: number
}

/**
 * The store as a service, for code that takes it from the context.
 *
 * @since 0.1.0
 * @category services
 */
export class Idempotency extends Context.Service<Idempotency, IdempotencyStore>()("@redflow/redis/Idempotency") {}

/**
 * Another copy of the event is being processed right now: try again later (the consumer redelivers it).
 *
 * @since 0.1.0
 * @category errors
 */
export class EventInProgress extends Schema.TaggedError<EventInProgress>()("EventInProgress", {
  eventId: Schema.String
}) {
  override get message() {
    return `event ${this.eventId} is being processed by another consumer; it will be retried`
  }
}

/**
 * A reservation was lost while its event was being processed: it could not be renewed in time (Redis unreachable
 * for most of a lease, or the process stalled), expired, and another consumer reserved the event. This processing
 * was interrupted so that the two do not run at the same time; the other one completes the event.
 *
 * @since 0.1.0
 * @category errors
 */
export class ReservationLost extends Schema.TaggedError<ReservationLost>()("ReservationLost", {
  eventId: Schema.String
}) {
  override get message() {
    return `the reservation of event ${this.eventId} expired while it was being processed and another consumer took it; this processing was interrupted`
  }
}

/**
 * What {@link once} did.
 *
 * @since 0.1.0
 * @category models
 */
export type Outcome = "processed" | "duplicate"

/**
 * Options of the Idempotency stores: the key prefix, how long a processed id is remembered, and how long a
 * reservation holds.
 *
 * @since 0.1.0
 * @category options
 */
export interface Options {
  /** Key prefix. Default `redflow:processed:`; give each consumer group its own, e.g. `processed:billing:`. */
  readonly prefix?: string
  /** How long a processed id is remembered. Default 24 hours: longer than any redelivery or replay you expect. */
  readonly ttl?: Duration.Input
  /**
   * How long a reservation holds if its consumer dies mid-way. Default 60 seconds: longer than a handler takes,
   * and about the consumer's `minIdle`, so the redelivery of a crashed consumer's entry finds it expired.
   */
  readonly lease?: Duration.Input
}

/** Idempotency's options as a Schema: `ttl` and `lease` are durations that must elapse. */
const OptionsSchema = Schema.Struct({
  prefix: Schema.optionalKey(Schema.String),
  ttl: Schema.optionalKey(PositiveMillis),
  lease: Schema.optionalKey(PositiveMillis)
})

const decodeOptions = ConfigError.decoder("Idempotency", OptionsSchema)

/** The options checked, with their defaults, before any connection is used. */
const settingsOf = (options: Options) =>
  Effect.map(decodeOptions(options), (decoded) => ({
    prefix: decoded.prefix ?? "redflow:processed:",
    ttl: decoded.ttl ?? 24 * 60 * 60 * 1000,
    lease: decoded.lease ?? 60_000
  }))

/** Deletes a reservation only if it is still ours (it may have expired and been taken by another consumer). */
const release = Script.make({
  name: "idempotency-release",
  source: `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`,
  keys: (key: string, _token: string) => [key],
  args: (_key, token) => [token],
  parse: () => undefined
})

/** Extends a reservation by `leaseMs` only if it is still ours; whether it was. */
const renew = Script.make({
  name: "idempotency-renew",
  source: `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`,
  keys: (key: string, _token: string, _leaseMs: number) => [key],
  args: (_key, token, leaseMs) => [token, leaseMs],
  parse: (reply) => reply === 1
})

/**
 * The Redis store: `SET key <token> NX PX lease` to reserve, `SET key 1 PX ttl` once processed.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeRedis = (
  options: Options = {}
): Effect.Effect<IdempotencyStore, ConfigError.ConfigError, RedisConnection> =>
  Effect.gen(function* () {
    const { lease, prefix, ttl } = yield* settingsOf(options)
    const redis = yield* RedisConnection
    const run = <A>(effect: Effect.Effect<A, RedisError, RedisConnection>) =>
      Effect.provideService(effect, RedisConnection, redis)
    const get = (key: string) => redis.send("GET", [key], { key })
    return {
      acquire: (eventId) =>
        Effect.gen(function* () {
          const key = prefix + eventId
          const token = `pending:${randomUUID()}`
          const set = yield* redis.send("SET", [key, token, "NX", "PX", lease], { key })
          if (set === "OK") return { _tag: "Acquired", token } as const
          // Taken: processed ("1"), or reserved by another consumer (or expired in between: try again later).
          return (yield* get(key)) === "1" ? ({ _tag: "Processed" } as const) : ({ _tag: "Busy" } as const)
        }),
      complete: (eventId) =>
        Effect.asVoid(redis.send("SET", [prefix + eventId, "1", "PX", ttl], { key: prefix + eventId })),
      release: (eventId, token) => run(Script.run(release, prefix + eventId, token)),
      isProcessed: (eventId) => Effect.map(get(prefix + eventId), (value) => value === "1"),
      renew: (eventId, token) => run(Script.run(renew, prefix + eventId, token, lease)),
      leaseMillis: lease
    }
  })

/**
 * An in-process store (expiry by `Clock`, so `TestClock` drives it). For tests and single processes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory = (
  options: Omit<Options, "prefix"> = {}
): Effect.Effect<IdempotencyStore, ConfigError.ConfigError> =>
  Effect.gen(function* () {
    const { lease, ttl } = yield* settingsOf(options)
    const entries = new Map<string, { readonly value: string; readonly expiresAt: number }>()
    let tokens = 0
    const live = (eventId: string, now: number) => {
      const entry = entries.get(eventId)
      if (entry === undefined || entry.expiresAt > now) return entry
      entries.delete(eventId)
      return undefined
    }
    return {
      acquire: (eventId) =>
        Effect.map(Clock.currentTimeMillis, (now): Acquired => {
          const entry = live(eventId, now)
          if (entry !== undefined) return entry.value === "1" ? { _tag: "Processed" } : { _tag: "Busy" }
          const token = `pending:${++tokens}`
          entries.set(eventId, { value: token, expiresAt: now + lease })
          return { _tag: "Acquired", token }
        }),
      complete: (eventId) =>
        Effect.map(Clock.currentTimeMillis, (now) => void entries.set(eventId, { value: "1", expiresAt: now + ttl })),
      release: (eventId, token) =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          if (live(eventId, now)?.value === token) entries.delete(eventId)
        }),
      isProcessed: (eventId) => Effect.map(Clock.currentTimeMillis, (now) => live(eventId, now)?.value === "1"),
      renew: (eventId, token) =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          if (live(eventId, now)?.value !== token) return false
          entries.set(eventId, { value: token, expiresAt: now + lease })
          return true
        }),
      leaseMillis: lease
    }
  })

/**
 * An {@link Idempotency} kept in Redis (see {@link makeRedis}), on the `RedisConnection` in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerRedis = (options: Options = {}): Layer.Layer<Idempotency, ConfigError.ConfigError, RedisConnection> =>
  Layer.effect(Idempotency, makeRedis(options))

/**
 * An in-process {@link Idempotency} (see {@link makeMemory}), for tests and single processes.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = (options: Omit<Options, "prefix"> = {}): Layer.Layer<Idempotency, ConfigError.ConfigError> =>
  Layer.effect(Idempotency, makeMemory(options))

/**
 * Runs `process` while keeping the reservation `token` of `eventId`: renewed every third of the lease, so a process
 * slower than the lease keeps its event. A renewal that fails (Redis unreachable) is tried again at the next; one
 * that finds the reservation gone interrupts `process` and fails with {@link ReservationLost}.
 *
 * @since 0.1.0
 * @category combinators
 */
export const hold = <A, E, R>(
  store: IdempotencyStore,
  eventId: string,
  token: string,
  process: Effect.Effect<A, E, R>
): Effect.Effect<A, E | ReservationLost, R> => {
  const renewing: Effect.Effect<never, ReservationLost> = Effect.sleep(
    Duration.millis(Math.max(1, Math.floor(store.leaseMillis / 3)))
  ).pipe(
    // Asked anew each time (a store may do its work when called); a failure is tried again at the next renewal.
    Effect.andThen(Effect.suspend(() => Effect.orElseSucceed(store.renew(eventId, token), () => true))),
    Effect.flatMap((held) => (held ? Effect.void : Effect.fail(new ReservationLost({ eventId })))),
    Effect.forever
  )
  return Effect.raceFirst(process, renewing)
}

/**
 * Runs `process` unless `eventId` was processed: `"duplicate"` when it was, `"processed"` once `process` succeeded
 * (and the id is marked). A failed or interrupted `process` releases the id, so a redelivery runs it again. Fails
 * with {@link EventInProgress} when another copy is being processed at this moment, and with {@link ReservationLost}
 * when the reservation was lost while `process` ran (see {@link hold}).
 *
 * @since 0.1.0
 * @category combinators
 */
export const once = <A, E, R>(
  store: IdempotencyStore,
  eventId: string,
  process: Effect.Effect<A, E, R>
): Effect.Effect<Outcome, E | RedisError | EventInProgress | ReservationLost, R> =>
  Effect.flatMap(
    store.acquire(eventId),
    (acquired): Effect.Effect<Outcome, E | RedisError | EventInProgress | ReservationLost, R> => {
      switch (acquired._tag) {
        case "Processed":
          return Effect.succeed("duplicate" as const)
        case "Busy":
          return Effect.fail(new EventInProgress({ eventId }))
        case "Acquired":
          return hold(store, eventId, acquired.token, process).pipe(
            Effect.onError(() => Effect.ignore(store.release(eventId, acquired.token))),
            Effect.andThen(store.complete(eventId, acquired.token)),
            Effect.as("processed" as const)
          )
      }
    }
  )

/**
 * Wraps a handler so that duplicates of an event (by `id`) are skipped.
 *
 * @example
 * ```ts
 * const handler = Idempotency.skipDuplicates(store)((event: CdcEvent) => applyToReadModel(event))
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const skipDuplicates =
  (store: IdempotencyStore) =>
  <Args extends ReadonlyArray<unknown>, A, E, R>(handler: (event: CdcEvent, ...rest: Args) => Effect.Effect<A, E, R>) =>
  (event: CdcEvent, ...rest: Args): Effect.Effect<Outcome, E | RedisError | EventInProgress | ReservationLost, R> =>
    once(store, event.id, handler(event, ...rest))
