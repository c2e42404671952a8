/**
 * Ctrl-C and SIGTERM for the `redflow` process.
 *
 * A command that can stop cleanly (stop pulling the source, let the sink write and checkpoint what it holds, let the
 * consumer ack what it is processing) registers with {@link drain}; the first signal then asks it to drain and a
 * second one stops it at once. A command that has not registered is interrupted by the first signal (its scopes
 * still close: connections quit, servers stop).
 *
 * A drain has a bound, `--drain-timeout` (10 s by default): past it the process says what it was still waiting for
 * and stops with {@link EXIT_DRAIN_TIMEOUT}. While it drains it watches Redis, and says so at once when Redis stops
 * answering, since a drain that needs Redis cannot end without it.
 *
 * | exit | when |
 * |---|---|
 * | 0 | the drain finished |
 * | 4 | the drain did not finish within `--drain-timeout` |
 * | 130 | a second signal stopped the run before the drain finished |
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import { Flag, GlobalFlag } from "effect/cli"
import * as RedisConnection from "@redflow/redis/RedisConnection"

/** The drain did not finish within `--drain-timeout`. */
export const EXIT_DRAIN_TIMEOUT = 4
/** A second signal stopped the run before its drain finished (or the first one stopped a run that cannot drain). */
export const EXIT_STOPPED = 130

export const DEFAULT_DRAIN_TIMEOUT_SECONDS = 10

/** After the run is told to stop, how long its scopes may take to close (connections, servers) before the exit. */
const CLOSE_GRACE_MS = 5_000

/** How often Redis is pinged during a drain, and how long a PING may take. */
const WATCH_EVERY = "1 second"
const PING_TIMEOUT = "1 second"

/** `--drain-timeout SECONDS`: the bound of the drain that the first Ctrl-C / SIGTERM starts. */
export const DrainTimeout = GlobalFlag.Setting("drain-timeout")({
  flag: Flag.Finite("drain-timeout").pipe(
    Flag.filter(
      (s) => s > 0,
      (s) => `Expected a number of seconds > 0, got ${s}`
    ),
    Flag.withMetavar("SECONDS"),
    Flag.withDescription(
      `After the first Ctrl-C / SIGTERM, how long to drain (write, checkpoint and acknowledge what is in flight) before giving up, saying what is left, and exiting ${EXIT_DRAIN_TIMEOUT} (default ${DEFAULT_DRAIN_TIMEOUT_SECONDS})`
    ),
    Flag.withDefault(DEFAULT_DRAIN_TIMEOUT_SECONDS)
  )
})

interface Registration {
  readonly started: Deferred.Deferred<void>
  readonly stopNow: Deferred.Deferred<void>
  readonly timeoutSeconds: number
}

interface State {
  signals: number
  main: Fiber.Fiber<unknown, unknown> | undefined
  drain: Registration | undefined
  /** The exit code decided by this module (a drain given up, a second signal), if any. */
  exitCode: number | undefined
}

const state: State = { signals: 0, main: undefined, drain: undefined, exitCode: undefined }

const write = (line: string) => process.stderr.write(`${process.stderr.isTTY ? "\r\x1b[2K" : ""}${line}\n`)

/** Interrupts the main fiber; should its scopes not close within the grace period, exits anyway. */
const stop = (code: number) => {
  state.exitCode ??= code
  state.main?.interruptUnsafe()
  setTimeout(() => {
    write(
      `redflow: error: still closing (acknowledgements in flight, connections, servers) ${CLOSE_GRACE_MS / 1000} s after stopping; exiting now`
    )
    process.exit(state.exitCode ?? code)
  }, CLOSE_GRACE_MS).unref()
}

const onSignal = () => {
  state.signals++
  const drain = state.drain
  if (state.signals === 1 && drain !== undefined) {
    write(
      `\nredflow: draining, for at most ${drain.timeoutSeconds} s (--drain-timeout); press Ctrl-C again to stop at once`
    )
    Deferred.doneUnsafe(drain.started, Effect.void)
    return
  }
  if (state.signals === 2 && drain !== undefined && Deferred.isDoneUnsafe(drain.started)) {
    // The drain's watcher says what is left, then stops the run.
    Deferred.doneUnsafe(drain.stopNow, Effect.void)
    return
  }
  if (state.signals > 2) {
    write("redflow: stopped at once (third signal), without closing connections and servers")
    process.exit(state.exitCode ?? EXIT_STOPPED)
  }
  stop(EXIT_STOPPED)
}

/** Installs the signal handlers for the main fiber; returns a function that removes them. */
export const install = (main: Fiber.Fiber<unknown, unknown>): (() => void) => {
  state.main = main
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
  return () => {
    process.off("SIGINT", onSignal)
    process.off("SIGTERM", onSignal)
  }
}

/** Whether a signal arrived (a drained run still exits 0, but says it was stopped). */
export const signalled = (): boolean => state.signals > 0

/** The exit code this module decided (a drain given up, a second signal), if it decided one. */
export const exitCode = (): number | undefined => state.exitCode

export interface DrainOptions {
  /** What the drain is waiting for, as a phrase: said when the drain gives up or a second signal cuts it short. */
  readonly waitingFor?: Effect.Effect<string> | undefined
}

const describeError = (error: unknown): string =>
  Cause.isTimeoutError(error)
    ? `no answer to PING within ${PING_TIMEOUT}`
    : error instanceof Error && error.message !== ""
      ? error.message
      : String(error)

/**
 * Watches Redis (when the command has a connection) from the first signal on: says at once when it stops answering
 * and when it is back. Returns what to say about it when the drain gives up.
 */
const watchRedis = Effect.gen(function* () {
  const connection = yield* Effect.serviceOption(RedisConnection.RedisConnection)
  let down: { reason: string } | undefined
  const status = Effect.sync(() =>
    Option.isSome(connection) && down !== undefined
      ? Option.some(`Redis at ${connection.value.description} does not answer (${down.reason})`)
      : Option.none<string>()
  )
  if (Option.isNone(connection)) return { watch: Effect.never, status }
  const redis = connection.value
  const probe = redis
    .run((client) => client.ping())
    .pipe(
      Effect.timeout(PING_TIMEOUT),
      Effect.matchEffect({
        onFailure: (error) =>
          Effect.sync(() => {
            const reason = describeError(error)
            if (down === undefined) {
              down = { reason }
              write(
                `redflow: warn: Redis at ${redis.description} stopped answering during the drain (${reason}); the drain cannot finish until it is back`
              )
            }
            down.reason = reason
          }),
        onSuccess: () =>
          Effect.sync(() => {
            if (down !== undefined) write(`redflow: Redis at ${redis.description} answers again; draining`)
            down = undefined
          })
      })
    )
  return { watch: Effect.repeat(probe, Schedule.spaced(WATCH_EVERY)), status }
})

/**
 * An effect that completes at the first Ctrl-C / SIGTERM while the current scope is open; until the scope closes,
 * the first signal drains instead of interrupting. The drain is bounded by `--drain-timeout`.
 */
export const drain = (options: DrainOptions = {}): Effect.Effect<Effect.Effect<void>, never, Scope.Scope> =>
  Effect.gen(function* () {
    const timeoutSeconds = Option.getOrElse(
      yield* Effect.serviceOption(DrainTimeout),
      () => DEFAULT_DRAIN_TIMEOUT_SECONDS
    )
    const registration: Registration = {
      started: yield* Deferred.make<void>(),
      stopNow: yield* Deferred.make<void>(),
      timeoutSeconds
    }
    const previous = state.drain
    state.drain = registration
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        state.drain = previous
      })
    )
    const redis = yield* watchRedis
    const left = Effect.gen(function* () {
      const waitingFor = yield* (
        options.waitingFor ?? Effect.succeed("the work in flight to be written and acknowledged")
      )
      const redisStatus = yield* redis.status
      return Option.match(redisStatus, { onNone: () => waitingFor, onSome: (s) => `${waitingFor}; ${s}` })
    })
    const giveUp = Effect.sleep(Duration.seconds(timeoutSeconds)).pipe(
      Effect.andThen(left),
      Effect.flatMap((what) =>
        Effect.sync(() => {
          write(
            `redflow: error: the drain did not finish within ${timeoutSeconds} s (--drain-timeout): still waiting for ${what}. Stopping without it (exit ${EXIT_DRAIN_TIMEOUT}).`
          )
          stop(EXIT_DRAIN_TIMEOUT)
        })
      )
    )
    const cutShort = Deferred.await(registration.stopNow).pipe(
      Effect.andThen(left),
      Effect.flatMap((what) =>
        Effect.sync(() => {
          write(
            `redflow: stopping at once (second signal) without finishing the drain: it was still waiting for ${what} (exit ${EXIT_STOPPED}).`
          )
          stop(EXIT_STOPPED)
        })
      )
    )
    yield* Deferred.await(registration.started).pipe(
      Effect.andThen(Effect.raceFirst(Effect.race(giveUp, cutShort), redis.watch)),
      Effect.forkScoped
    )
    return Deferred.await(registration.started)
  })

/** {@link drain} with a generic description of what it waits for. */
export const drainOnSignal: Effect.Effect<Effect.Effect<void>, never, Scope.Scope> = drain()
