/**
 * Waiting for real processes.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"

/**
 * Runs `self` on the wall clock. A child process does not follow `TestClock`, so a wait for it must not either:
 * without this, building a topology inside `it.effect` would sleep forever.
 */
export const withRealClock = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.provideService(self, Clock.Clock, Clock.Clock.defaultValue())

/** A probe's "not yet", with the state it saw (it ends up in the timeout message). */
export class NotYet {
  readonly state: string
  constructor(state: string) {
    this.state = state
  }
}

export const notYet = (state: string): Effect.Effect<never, NotYet> => Effect.fail(new NotYet(state))

const isNotYet = (error: unknown): error is NotYet => error instanceof NotYet

/**
 * Retries `probe` every `interval` while it fails with {@link NotYet}, and fails with `onTimeout(lastState)` after
 * `timeout`. Any other failure of the probe ends the wait at once.
 */
export const until = <A, E, R, E2>(
  probe: Effect.Effect<A, E, R>,
  options: {
    readonly interval: Duration.Input
    readonly timeout: Duration.Input
    readonly onTimeout: (lastState: string) => E2
  }
): Effect.Effect<A, Exclude<E, NotYet> | E2, R> =>
  Effect.suspend(() => {
    let lastState = "no answer yet"
    return probe.pipe(
      Effect.tapError((error) =>
        Effect.sync(() => {
          if (isNotYet(error)) lastState = error.state
        })
      ),
      Effect.retry({ schedule: Schedule.spaced(options.interval), while: isNotYet }),
      Effect.timeoutOrElse({
        duration: options.timeout,
        orElse: () => Effect.fail(options.onTimeout(lastState))
      }),
      withRealClock
    )
  }) as Effect.Effect<A, Exclude<E, NotYet> | E2, R> // the retry only ever stops on a failure that is not NotYet

/** Formats a duration input for messages. */
export const describe = (input: Duration.Input): string => Duration.format(Duration.fromInputUnsafe(input))
