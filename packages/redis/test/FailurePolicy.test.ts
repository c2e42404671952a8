import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Effect, Fiber, Random, Ref, Schedule } from "effect"
import { TestClock } from "effect/testing"
import * as FailurePolicy from "../src/FailurePolicy.ts"
import {
  RedisAuthFailed,
  RedisClusterRedirect,
  RedisCommandError,
  type RedisError,
  RedisOutOfMemory,
  RedisReadOnly,
  RedisTimeout,
  RedisUnavailable
} from "../src/RedisError.ts"

const unavailable = new RedisUnavailable({ message: "connect ECONNREFUSED", outcomeUnknown: false })
const oom = new RedisOutOfMemory({ message: "OOM command not allowed" })
const timeout = new RedisTimeout({ message: "Command timed out" })
const readOnly = new RedisReadOnly({ message: "READONLY You can't write against a read only replica." })
const auth = new RedisAuthFailed({ message: "WRONGPASS invalid username-password pair", code: "WRONGPASS" })
const fatal = new RedisCommandError({ message: "WRONGTYPE Operation against a key", code: "WRONGTYPE" })
const moved = new RedisClusterRedirect({
  message: "MOVED 1 127.0.0.1:7000",
  kind: "MOVED",
  slot: 1,
  address: "127.0.0.1:7000"
})

/** A Random whose every draw is `value`: 0 gives the lowest jitter (×0.8), 1 the highest (×1.2), 0.5 none. */
const fixedRandom = (value: number): Random.Random => ({ nextIntUnsafe: () => 0, nextDoubleUnsafe: () => value })

/**
 * Runs an effect that fails with `errors` in turn (then succeeds) under `policies`, advancing the TestClock by
 * `horizonMs` (TestClock wakes each sleep at its exact time), and returns the times (ms since start) at which each
 * attempt ran and how it ended.
 */
const attemptTimes = (policies: FailurePolicy.FailurePolicies, errors: ReadonlyArray<RedisError>, horizonMs: number) =>
  Effect.gen(function* () {
    const times = yield* Ref.make<Array<number>>([])
    const start = yield* Clock.currentTimeMillis
    const attempt = Effect.gen(function* () {
      const now = (yield* Clock.currentTimeMillis) - start
      const n = (yield* Ref.updateAndGet(times, (t) => [...t, now])).length
      if (n <= errors.length) return yield* Effect.fail(errors[n - 1]!)
      return "done" as const
    })
    const fiber = yield* Effect.forkChild(FailurePolicy.retry(attempt, policies).pipe(Effect.result))
    yield* TestClock.adjust(horizonMs)
    const result = yield* Fiber.join(fiber)
    return { times: yield* Ref.get(times), result }
  })

const delays = (times: ReadonlyArray<number>) => times.slice(1).map((t, i) => t - times[i]!)

describe("FailurePolicy defaults", () => {
  it.effect("RedisUnavailable: exponential from 100 ms, doubling, capped at 10 s, retried until it succeeds", () =>
    Effect.gen(function* () {
      const errors = Array.from({ length: 10 }, () => unavailable)
      const { times, result } = yield* attemptTimes(FailurePolicy.defaults(), errors, 60_000)
      expect(result._tag).toBe("Success")
      expect(delays(times)).toEqual([100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000])
    }).pipe(Effect.provideService(Random.Random, fixedRandom(0.5)))
  )

  it.effect("jitter stays within ±20 % of each delay, and the cap holds after jitter", () =>
    Effect.gen(function* () {
      const errors = Array.from({ length: 9 }, () => timeout)
      const low = yield* attemptTimes(FailurePolicy.defaults(), errors, 60_000).pipe(
        Effect.provideService(Random.Random, fixedRandom(0))
      )
      expect(delays(low.times)).toEqual([80, 160, 320, 640, 1280, 2560, 5120, 10000, 10000])
      const high = yield* attemptTimes(FailurePolicy.defaults(), errors, 60_000).pipe(
        Effect.provideService(Random.Random, fixedRandom(1))
      )
      expect(delays(high.times)).toEqual([120, 240, 480, 960, 1920, 3840, 7680, 10000, 10000])
    })
  )

  it.effect("RedisOutOfMemory and RedisTimeout retry with the same backoff until memory frees", () =>
    Effect.gen(function* () {
      const { times, result } = yield* attemptTimes(FailurePolicy.defaults(), [oom, oom, oom, timeout], 10_000)
      expect(result._tag).toBe("Success")
      // Each tag keeps its own attempt count: the timeout after three OOMs starts its backoff afresh.
      expect(delays(times)).toEqual([100, 200, 400, 100])
    }).pipe(Effect.provideService(Random.Random, fixedRandom(0.5)))
  )

  it.effect("authentication and command errors are never retried", () =>
    Effect.gen(function* () {
      for (const error of [auth, fatal]) {
        const { times, result } = yield* attemptTimes(FailurePolicy.defaults(), [error], 10_000)
        expect(times).toEqual([0])
        expect(result._tag).toBe("Failure")
        if (result._tag === "Failure") expect(result.failure).toBe(error)
      }
    })
  )

  it.effect("READONLY through a fixed URL gives up after 5 retries; behind Sentinel it keeps trying", () =>
    Effect.gen(function* () {
      const errors = Array.from({ length: 20 }, () => readOnly)
      const fixed = yield* attemptTimes(FailurePolicy.defaults("standalone"), errors, 60_000)
      expect(fixed.times.length).toBe(6)
      expect(delays(fixed.times)).toEqual([200, 400, 800, 1600, 2000])
      expect(fixed.result._tag).toBe("Failure")
      const sentinel = yield* attemptTimes(FailurePolicy.defaults("sentinel"), errors, 200_000)
      expect(sentinel.result._tag).toBe("Success")
      expect(sentinel.times.length).toBe(21)
    }).pipe(Effect.provideService(Random.Random, fixedRandom(0.5)))
  )

  it.effect("a surfaced cluster redirect is retried quickly, at most 16 times", () =>
    Effect.gen(function* () {
      const errors = Array.from({ length: 30 }, () => moved)
      const { times, result } = yield* attemptTimes(FailurePolicy.defaults("cluster"), errors, 60_000_000)
      expect(result._tag).toBe("Failure")
      expect(times.length).toBe(17)
      expect(delays(times).slice(0, 4)).toEqual([10, 20, 40, 80])
    })
  )
})

describe("FailurePolicy overrides", () => {
  it.effect("replaces one entry and keeps the rest", () =>
    Effect.gen(function* () {
      const policies = FailurePolicy.make({
        RedisOutOfMemory: Schedule.spaced("1 second").pipe(Schedule.upTo({ times: 2 }))
      })
      const { times, result } = yield* attemptTimes(policies, [oom, oom, oom], 10_000)
      expect(delays(times)).toEqual([1000, 1000])
      expect(result._tag).toBe("Failure")
      expect(policies.RedisAuthFailed).toBe("fail")
    })
  )

  it.effect("can make a fatal error retryable, and a retryable one fatal", () =>
    Effect.gen(function* () {
      const policies = FailurePolicy.make({ RedisCommandError: Schedule.recurs(1), RedisUnavailable: "fail" })
      const a = yield* attemptTimes(policies, [fatal], 1000)
      expect(a.result._tag).toBe("Success")
      const b = yield* attemptTimes(policies, [unavailable], 1000)
      expect(b.times).toEqual([0])
      expect(b.result._tag).toBe("Failure")
    })
  )
})

describe("FailurePolicy.retryWaking", () => {
  it.effect("a reconnect cuts the backoff short; without one the delays are the policy's; it gives up like retry", () =>
    Effect.gen(function* () {
      const start = yield* Clock.currentTimeMillis
      // The connection's "ready" events, as RedisConnection.nextReconnect gives them: one deferred per reconnect.
      let ready = Deferred.makeUnsafe<void>()
      const reconnect = () => {
        const reached = ready
        ready = Deferred.makeUnsafe<void>()
        Deferred.doneUnsafe(reached, Effect.void)
      }
      const times: Array<number> = []
      const failing = (failures: number) =>
        Effect.gen(function* () {
          times.push((yield* Clock.currentTimeMillis) - start)
          if (times.length <= failures) return yield* Effect.fail(unavailable)
          return "done" as const
        })
      const policies = FailurePolicy.make({ RedisUnavailable: Schedule.spaced("10 seconds") })

      // Down at 0 and 10 s; the client reconnects at 12 s: the third try comes then, not at 20 s.
      const fiber = yield* Effect.forkChild(
        FailurePolicy.retryWaking(failing(2), policies, () => Deferred.await(ready))
      )
      yield* TestClock.adjust("12 seconds")
      reconnect()
      yield* TestClock.adjust("1 millis")
      expect(yield* Fiber.join(fiber)).toBe("done")
      expect(times).toEqual([0, 10_000, 12_000])

      // No reconnect: the policy's delays.
      times.length = 0
      const plain = yield* Effect.forkChild(
        FailurePolicy.retryWaking(failing(2), policies, () => Deferred.await(ready))
      )
      yield* TestClock.adjust("20 seconds")
      expect(yield* Fiber.join(plain)).toBe("done")
      expect(times.map((t) => t - times[0]!)).toEqual([0, 10_000, 20_000])

      // "fail" and an exhausted schedule end with the last error, reconnects or not.
      const never = FailurePolicy.make({ RedisUnavailable: "fail" })
      expect(yield* Effect.flip(FailurePolicy.retryWaking(failing(99), never, () => Deferred.await(ready)))).toBe(
        unavailable
      )
      const twice = FailurePolicy.make({ RedisUnavailable: Schedule.recurs(2) })
      times.length = 0
      expect(yield* Effect.flip(FailurePolicy.retryWaking(failing(99), twice, () => Deferred.await(ready)))).toBe(
        unavailable
      )
      expect(times).toHaveLength(3)
    })
  )
})
