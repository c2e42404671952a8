/**
 * Idempotent consumers, keyed on the event `id` (the spec's "Handling duplicates in consumers").
 *
 * The sink's ids are deterministic (source identity + position), so a replayed or re-delivered event carries the id
 * it had the first time. A store remembers which ids were processed; {@link once} runs the processing only for an
 * id it has not seen and marks the id after the processing succeeded:
 *
 * - a duplicate of an event already processed is skipped (and the consumer acknowledges it);
 * - an event whose processing failed, or whose consumer crashed mid-way, is NOT marked, so its redelivery is
 *   processed: nothing is lost to the dedup. Two copies processed at the very same time can both run; run the
 *   consumer with `orderedBy: "key"` to serialize copies of one row within a consumer.
 *
 * The default store is Redis: `SET <prefix><id> 1 NX PX <ttl>` marks, `EXISTS` checks. The interface is small
 * ({@link IdempotencyStore}), so any store fits; {@link makeMemory} is an in-process one for tests.
 *
 * @example
 * ```ts
 * const store = yield* Idempotency.makeRedis({ prefix: "processed:billing:", ttl: "7 days" })
 * yield* RedisStreamConsumer.run({ stream, group: "billing", consumer: "w1", handler, idempotency: store })
 * ```
 *
 * @since 0.1.0
 */
import { Clock, Context, Duration, Effect, Layer } from "effect"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import { RedisConnection } from "./RedisConnection.ts"
import type { RedisError } from "./RedisError.ts"
import * as StreamAdmin from "./StreamAdmin.ts"

/** A record of processed event ids. */
export interface IdempotencyStore {
  /** Whether `eventId` was marked processed (within the store's retention). */
  readonly isProcessed: (eventId: string) => Effect.Effect<boolean, RedisError>
  /** Marks `eventId` processed; `false` when it already was (the first mark and its expiry are kept). */
  readonly markProcessed: (eventId: string) => Effect.Effect<boolean, RedisError>
}

/** The store as a service, for code that takes it from the context. */
export class Idempotency extends Context.Service<Idempotency, IdempotencyStore>()("@redflow/redis/Idempotency") {}

/** What {@link once} did. */
export type Outcome = "processed" | "duplicate"

export interface Options {
  /** Key prefix. Default `redflow:processed:`; give each consumer group its own, e.g. `processed:billing:`. */
  readonly prefix?: string
  /** How long an id is remembered. Default 24 hours: longer than any redelivery or replay you expect. */
  readonly ttl?: Duration.Input
}

const ttlMillis = (options: Options): number => {
  const ms = Duration.toMillis(Duration.fromInputUnsafe(options.ttl ?? "24 hours"))
  if (!Number.isFinite(ms) || ms < 1) throw new RangeError(`ttl must be a positive finite duration, got ${options.ttl}`)
  return Math.round(ms)
}

/** The Redis store: `SET <prefix><id> 1 NX PX <ttl>` to mark, `EXISTS` to check. */
export const makeRedis = (options: Options = {}): Effect.Effect<IdempotencyStore, never, RedisConnection> =>
  Effect.gen(function* () {
    const redis = yield* RedisConnection
    const prefix = options.prefix ?? "redflow:processed:"
    const ttl = ttlMillis(options)
    const run = <A>(effect: Effect.Effect<A, RedisError, RedisConnection>) =>
      Effect.provideService(effect, RedisConnection, redis)
    return {
      isProcessed: (eventId) =>
        run(StreamAdmin.command("EXISTS", prefix + eventId, [prefix + eventId], (reply) => Number(reply) > 0)),
      markProcessed: (eventId) =>
        run(StreamAdmin.command("SET", prefix + eventId, [prefix + eventId, "1", "NX", "PX", ttl], (r) => r === "OK"))
    }
  })

/** An in-process store (ids expire by `Clock`, so `TestClock` drives the TTL). For tests and single processes. */
export const makeMemory = (options: Pick<Options, "ttl"> = {}): Effect.Effect<IdempotencyStore> =>
  Effect.sync(() => {
    const ttl = ttlMillis(options)
    const expiries = new Map<string, number>()
    const live = (eventId: string, now: number) => {
      const expiry = expiries.get(eventId)
      if (expiry === undefined) return false
      if (expiry > now) return true
      expiries.delete(eventId)
      return false
    }
    return {
      isProcessed: (eventId) => Effect.map(Clock.currentTimeMillis, (now) => live(eventId, now)),
      markProcessed: (eventId) =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          if (live(eventId, now)) return false
          expiries.set(eventId, now + ttl)
          return true
        })
    }
  })

export const layerRedis = (options: Options = {}): Layer.Layer<Idempotency, never, RedisConnection> =>
  Layer.effect(Idempotency, makeRedis(options))

export const layerMemory = (options: Pick<Options, "ttl"> = {}): Layer.Layer<Idempotency> =>
  Layer.effect(Idempotency, makeMemory(options))

/**
 * Runs `process` unless `eventId` was processed before; marks it once `process` succeeded. A failed `process`
 * leaves the id unmarked, so a redelivery runs it again.
 */
export const once = <A, E, R>(
  store: IdempotencyStore,
  eventId: string,
  process: Effect.Effect<A, E, R>
): Effect.Effect<Outcome, E | RedisError, R> =>
  Effect.flatMap(store.isProcessed(eventId), (seen) =>
    seen
      ? Effect.succeed("duplicate" as const)
      : process.pipe(Effect.andThen(store.markProcessed(eventId)), Effect.as("processed" as const))
  )

/**
 * Wraps a handler so that duplicates of an event (by `id`) are skipped.
 *
 * @example
 * ```ts
 * const handler = Idempotency.skipDuplicates(store)((event: CdcEvent) => applyToReadModel(event))
 * ```
 */
export const skipDuplicates =
  (store: IdempotencyStore) =>
  <Args extends ReadonlyArray<unknown>, A, E, R>(handler: (event: CdcEvent, ...rest: Args) => Effect.Effect<A, E, R>) =>
  (event: CdcEvent, ...rest: Args): Effect.Effect<Outcome, E | RedisError, R> =>
    once(store, event.id, handler(event, ...rest))
