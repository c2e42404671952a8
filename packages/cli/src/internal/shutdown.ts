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
 * The signal handlers belong to the {@link Shutdown} service: {@link make} installs them in a scope and removes them
 * when it closes. {@link supervise} runs a command under it: `NodeRuntime.runMain` interrupts the main fiber at the
 * first signal, so the command runs in a fiber of its own that only this module stops, and the main fiber waits for
 * it; how the run ended comes back as the command's own exit, or as {@link Stopped} with the exit code that a signal
 * decided.
 *
 * | exit | when |
 * |---|---|
 * | 0 | the drain finished |
 * | 4 | the drain did not finish within `--drain-timeout` |
 * | 130 | a second signal stopped the run before the drain finished |
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { Flag, GlobalFlag } from "effect/cli"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as Output from "./output.ts"

/** The drain finished (a run stopped by a signal that drained exits 0). */
export const EXIT_DRAINED = 0
/** The drain did not finish within `--drain-timeout`. */
export const EXIT_DRAIN_TIMEOUT = 4
/** A second signal stopped the run before its drain finished (or the first one stopped a run that cannot drain). */
export const EXIT_STOPPED = 130

export const DEFAULT_DRAIN_TIMEOUT_SECONDS = 10

/** After the run is told to stop, how long its scopes may take to close (connections, servers) before the exit. */
const CLOSE_GRACE = Duration.seconds(5)

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

/**
 * A run that a signal ended, with the exit code that decided: {@link EXIT_DRAINED}, {@link EXIT_DRAIN_TIMEOUT} or
 * {@link EXIT_STOPPED}. What happened has been said on stderr already.
 */
export class Stopped extends Schema.TaggedError<Stopped>()("Stopped", {
  exitCode: Schema.Number
}) {}

export interface DrainOptions {
  /** What the drain is waiting for, as a phrase: said when the drain gives up or a second signal cuts it short. */
  readonly waitingFor?: Effect.Effect<string> | undefined
}

/** The signals of this process, as the running command sees them. */
export class Shutdown extends Context.Service<
  Shutdown,
  {
    /**
     * An effect that completes at the first Ctrl-C / SIGTERM while the current scope is open; until the scope
     * closes, the first signal drains instead of interrupting. The drain is bounded by `--drain-timeout`.
     */
    readonly drain: (options?: DrainOptions) => Effect.Effect<Effect.Effect<void>, never, Scope.Scope>
    /** Whether a signal arrived (a drained run still exits 0, but says it was stopped). */
    readonly signalled: Effect.Effect<boolean>
    /** Completes with the exit code once the run is to stop (interrupted, its scopes closed). */
    readonly stopping: Effect.Effect<number>
    /** Completes at a third signal: stop waiting for the scopes to close. */
    readonly abandoned: Effect.Effect<void>
    /** The exit code decided by a signal or a drain given up, if one was. */
    readonly decided: Effect.Effect<Option.Option<number>>
  }
>()("@redflow/cli/Shutdown") {}

interface Registration {
  readonly started: Deferred.Deferred<void>
  readonly stopNow: Deferred.Deferred<void>
  readonly timeoutSeconds: number
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
          Effect.suspend(() => {
            const reason = describeError(error)
            const first = down === undefined
            down = { reason }
            return first
              ? Output.line(
                  `redflow: warn: Redis at ${redis.description} stopped answering during the drain (${reason}); the drain cannot finish until it is back`
                )
              : Effect.void
          }),
        onSuccess: () =>
          Effect.suspend(() => {
            const back = down !== undefined
            down = undefined
            return back ? Output.line(`redflow: Redis at ${redis.description} answers again; draining`) : Effect.void
          })
      })
    )
  return { watch: Effect.repeat(probe, Schedule.spaced(WATCH_EVERY)), status }
})

/**
 * The service, with SIGINT and SIGTERM handlers installed until the scope closes. The handlers only queue the
 * signal; a fiber of the scope decides what it means: the first one starts the registered drain (or stops a command
 * that has none), the second one cuts the drain short, the third one abandons the closing scopes.
 */
export const make: Effect.Effect<Shutdown["Service"], never, Scope.Scope> = Effect.gen(function* () {
  const signals = yield* Queue.unbounded<NodeJS.Signals>()
  const stoppingWith = yield* Deferred.make<number>()
  const abandoned = yield* Deferred.make<void>()
  let received = 0
  let decided: number | undefined
  let current: Registration | undefined

  const stop = (code: number) =>
    Effect.suspend(() => {
      decided ??= code
      return Deferred.succeed(stoppingWith, decided)
    })

  const onSignal = Effect.gen(function* () {
    received++
    const registration = current
    if (received === 1 && registration !== undefined) {
      yield* Output.line(
        `\nredflow: draining, for at most ${registration.timeoutSeconds} s (--drain-timeout); press Ctrl-C again to stop at once`
      )
      yield* Deferred.succeed(registration.started, undefined)
      return
    }
    if (received === 2 && registration !== undefined && (yield* Deferred.isDone(registration.started))) {
      // The drain's watcher says what is left, then stops the run.
      yield* Deferred.succeed(registration.stopNow, undefined)
      return
    }
    if (received > 2) {
      yield* Output.line("redflow: stopped at once (third signal), without closing connections and servers")
      decided ??= EXIT_STOPPED
      yield* Deferred.succeed(abandoned, undefined)
      return
    }
    yield* stop(EXIT_STOPPED)
  })

  yield* Effect.acquireRelease(
    Effect.sync(() => {
      const handler = (signal: NodeJS.Signals) => Queue.offerUnsafe(signals, signal)
      process.on("SIGINT", handler)
      process.on("SIGTERM", handler)
      return handler
    }),
    (handler) =>
      Effect.sync(() => {
        process.off("SIGINT", handler)
        process.off("SIGTERM", handler)
      })
  )
  yield* Queue.take(signals).pipe(Effect.andThen(onSignal), Effect.forever, Effect.forkScoped)

  const drain = (options: DrainOptions = {}): Effect.Effect<Effect.Effect<void>, never, Scope.Scope> =>
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
      const previous = current
      current = registration
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          current = previous
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
          Output.line(
            `redflow: error: the drain did not finish within ${timeoutSeconds} s (--drain-timeout): still waiting for ${what}. Stopping without it (exit ${EXIT_DRAIN_TIMEOUT}).`
          )
        ),
        Effect.andThen(stop(EXIT_DRAIN_TIMEOUT))
      )
      const cutShort = Deferred.await(registration.stopNow).pipe(
        Effect.andThen(left),
        Effect.flatMap((what) =>
          Output.line(
            `redflow: stopping at once (second signal) without finishing the drain: it was still waiting for ${what} (exit ${EXIT_STOPPED}).`
          )
        ),
        Effect.andThen(stop(EXIT_STOPPED))
      )
      yield* Deferred.await(registration.started).pipe(
        Effect.andThen(Effect.raceFirst(Effect.race(giveUp, cutShort), redis.watch)),
        Effect.forkScoped
      )
      return Deferred.await(registration.started)
    })

  return {
    drain,
    signalled: Effect.sync(() => received > 0),
    stopping: Deferred.await(stoppingWith),
    abandoned: Deferred.await(abandoned),
    decided: Effect.sync(() => Option.fromNullishOr(decided))
  }
})

/** {@link Shutdown}'s `drain` for the running command. */
export const drain = (options?: DrainOptions): Effect.Effect<Effect.Effect<void>, never, Scope.Scope | Shutdown> =>
  Shutdown.use((shutdown) => shutdown.drain(options))

/** {@link drain} with a generic description of what it waits for. */
export const drainOnSignal: Effect.Effect<Effect.Effect<void>, never, Scope.Scope | Shutdown> = drain()

/** Whether a signal arrived (a drained run still exits 0, but says it was stopped). */
export const signalled: Effect.Effect<boolean, never, Shutdown> = Shutdown.use((shutdown) => shutdown.signalled)

/**
 * Runs `work` as the process's command, with {@link Shutdown} installed for it: in a fiber of its own, interrupted
 * only when the first signal finds no drain, a second signal cuts the drain short, or the drain gives up.
 *
 * The calling fiber waits for it. When that fiber is interrupted (`NodeRuntime.runMain` does so at the first
 * signal), it still waits: until the work has ended, its scopes closed within {@link CLOSE_GRACE} of being told to
 * stop, or a third signal. It then fails with {@link Stopped} (exit 0 for a finished drain), or with the work's own
 * failure when no signal decided the code.
 */
export const supervise = <A, E, R>(work: Effect.Effect<A, E, R>): Effect.Effect<A, E | Stopped, Exclude<R, Shutdown>> =>
  Effect.gen(function* () {
    const shutdown = yield* make
    const fiber = yield* Effect.forkDetach(Effect.provideService(work, Shutdown, shutdown))
    yield* shutdown.stopping.pipe(Effect.andThen(Fiber.interrupt(fiber)), Effect.forkScoped)

    /** The work's exit, unless the code was decided: then {@link Stopped} with it. */
    const outcome = (exit: Exit.Exit<A, E> | undefined): Effect.Effect<A, E | Stopped> =>
      Effect.flatMap(shutdown.decided, (code): Effect.Effect<A, E | Stopped> =>
        Option.isSome(code)
          ? Effect.fail(new Stopped({ exitCode: code.value }))
          : exit === undefined
            ? Effect.fail(new Stopped({ exitCode: EXIT_STOPPED }))
            : exit
      )
    const closeGiveUp = shutdown.stopping.pipe(
      Effect.andThen(Effect.sleep(CLOSE_GRACE)),
      Effect.andThen(
        Output.line(
          `redflow: error: still closing (acknowledgements in flight, connections, servers) ${Duration.toSeconds(CLOSE_GRACE)} s after stopping; exiting now`
        )
      )
    )
    const settled = Effect.raceFirst(
      Fiber.await(fiber),
      Effect.as(Effect.raceFirst(shutdown.abandoned, closeGiveUp), undefined)
    )
    return yield* Fiber.await(fiber).pipe(
      Effect.flatMap(outcome),
      // Interrupted by a signal: the work drains or stops on its own; how it ended is the failure that follows the
      // interruption (a run that drained fails with Stopped too, exit 0, as the interruption alone would mean 130).
      Effect.onInterrupt(() =>
        settled.pipe(Effect.flatMap(outcome), Effect.andThen(Effect.fail(new Stopped({ exitCode: EXIT_DRAINED }))))
      )
    )
  }).pipe(Effect.scoped)
