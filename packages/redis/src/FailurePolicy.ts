/**
 * The failure-policy table: for each {@link RedisError} tag, the `Schedule` that decides whether and when a
 * failed batch is tried again. Defaults follow the failure table of docs/GUARANTEES.md; each can be overridden.
 *
 * @example
 * ```ts
 * const policies = FailurePolicy.make({ RedisOutOfMemory: Schedule.spaced("1 second") })
 * effect.pipe(Effect.retry(FailurePolicy.schedule(policies)))
 * ```
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import type { RedisError, RedisErrorTag } from "./RedisError.ts"

/**
 * A retry schedule for one error tag, or `"fail"`: never retried.
 *
 * @since 0.1.0
 * @category models
 */
export type Policy = Schedule.Schedule<unknown, RedisError> | "fail"

/**
 * The failure-policy table: a {@link Policy} for every {@link RedisErrorTag}.
 *
 * @since 0.1.0
 * @category models
 */
export type FailurePolicies = { readonly [Tag in RedisErrorTag]: Policy }

/**
 * Exponential backoff from `base`, each delay jittered by ±20 % (Effect's `Schedule.jittered`), then capped at `cap`.
 * The jitter draws from Effect's `Random`, so tests can fix it.
 *
 * @since 0.1.0
 * @category schedules
 */
export const backoff = (base: Duration.Input, cap: Duration.Input): Schedule.Schedule<unknown, unknown> => {
  const capped = Duration.fromInputUnsafe(cap)
  return Schedule.exponential(base).pipe(
    Schedule.jittered,
    Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, capped)))
  )
}

/**
 * Retry forever, exponential 100 ms → 10 s cap, with jitter: "retries with backoff" (docs/GUARANTEES.md).
 *
 * @since 0.1.0
 * @category schedules
 */
export const retryForever: Schedule.Schedule<unknown, unknown> = backoff("100 millis", "10 seconds")

/**
 * A write to a replica through a fixed URL: a few tries (a replica being promoted, or a failover in progress),
 * then give up, since a fixed URL that points at a replica will not fix itself.
 *
 * @since 0.1.0
 * @category schedules
 */
export const readOnlyFixedUrl: Schedule.Schedule<unknown, unknown> = backoff("200 millis", "2 seconds").pipe(
  Schedule.upTo({ times: 5 })
)

/**
 * A redirect that reached the caller: the slot map is refreshed, so try again soon, a bounded number of times.
 *
 * @since 0.1.0
 * @category schedules
 */
export const clusterRedirect: Schedule.Schedule<unknown, unknown> = Schedule.exponential("10 millis").pipe(
  Schedule.upTo({ times: 16 })
)

/**
 * The default table. `topology` matters for READONLY only: behind Sentinel or Cluster the client finds the new
 * master and retrying forever is right; with a fixed URL the retries are bounded.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaults = (topology: "standalone" | "sentinel" | "cluster" = "standalone"): FailurePolicies => ({
  RedisUnavailable: retryForever,
  RedisTimeout: retryForever,
  RedisOutOfMemory: retryForever,
  RedisReadOnly: topology === "standalone" ? readOnlyFixedUrl : retryForever,
  RedisClusterRedirect: clusterRedirect,
  RedisAuthFailed: "fail",
  RedisCommandError: "fail"
})

/**
 * The default table with some entries replaced.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  overrides: Partial<FailurePolicies> = {},
  topology: "standalone" | "sentinel" | "cluster" = "standalone"
): FailurePolicies => ({ ...defaults(topology), ...overrides })

/**
 * One `Schedule` over the whole table: each failure is stepped through the schedule of its own tag, each tag
 * keeping its own attempt count and delays. A `"fail"` entry, or an exhausted schedule, ends the retries and the
 * last error surfaces. `onRetry` runs for each failure that will be tried again (for logs and metrics).
 *
 * @since 0.1.0
 * @category combinators
 */
export const schedule = (
  policies: FailurePolicies,
  onRetry: (error: RedisError, delay: Duration.Duration) => Effect.Effect<void> = () => Effect.void
): Schedule.Schedule<unknown, RedisError> =>
  Schedule.fromStep(
    Effect.sync(() => {
      const steps = new Map<
        RedisErrorTag,
        (now: number, input: RedisError) => Effect.Effect<[unknown, Duration.Duration], Cause.Done<unknown>>
      >()
      return (now: number, error: RedisError) =>
        Effect.gen(function* () {
          const policy = policies[error._tag]
          if (policy === "fail") return yield* Cause.done(undefined)
          let step = steps.get(error._tag)
          if (step === undefined) {
            step = (yield* Schedule.toStep(policy)) as never
            steps.set(error._tag, step!)
          }
          const decision = yield* step!(now, error)
          yield* onRetry(error, decision[1])
          return decision
        })
    })
  )

/**
 * Retries `effect` by the table, calling `onRetry` before each new try (for logs and the retry metric).
 *
 * @since 0.1.0
 * @category combinators
 */
export const retry = <A, R>(
  effect: Effect.Effect<A, RedisError, R>,
  policies: FailurePolicies,
  onRetry: (error: RedisError, delay: Duration.Duration) => Effect.Effect<void> = () => Effect.void
): Effect.Effect<A, RedisError, R> => retryWaking(effect, policies, () => Effect.never, onRetry)

/**
 * Retries `effect` by the table, like {@link retry}, except that a wait between tries ends early when `wake`
 * completes. `wake` is taken before each try, so a wake-up during the try counts too. With
 * `RedisConnection.nextReconnect` the try after an outage comes as soon as the client is back, not when a backoff
 * that has grown to seconds runs out; failures that no reconnect ends (OOM, READONLY) wait their full delays.
 * A `"fail"` policy or an exhausted schedule ends the retries with the last error, as with {@link schedule}.
 *
 * @since 0.1.0
 * @category combinators
 */
export const retryWaking = <A, R>(
  effect: Effect.Effect<A, RedisError, R>,
  policies: FailurePolicies,
  wake: () => Effect.Effect<void>,
  onRetry: (error: RedisError, delay: Duration.Duration) => Effect.Effect<void> = () => Effect.void
): Effect.Effect<A, RedisError, R> =>
  Effect.gen(function* () {
    const step = yield* Schedule.toStep(schedule(policies, onRetry))
    for (;;) {
      const woken = wake()
      const exit = yield* Effect.exit(effect)
      if (Exit.isSuccess(exit)) return exit.value
      const error = Cause.findErrorOption(exit.cause)
      // A defect or an interruption is not a Redis failure: no policy applies.
      if (Option.isNone(error)) return yield* Effect.failCause(exit.cause)
      const decision = yield* Effect.exit(step(yield* Clock.currentTimeMillis, error.value))
      if (Exit.isFailure(decision)) return yield* Effect.fail(error.value)
      yield* Effect.raceFirst(Effect.sleep(decision.value[1]), woken)
    }
  })
