/**
 * Ctrl-C and SIGTERM for the `redflow` process.
 *
 * A command that can stop cleanly (stop pulling the source, let the sink write and checkpoint what it holds, let the
 * consumer ack what it is processing) registers with {@link drainOnSignal}; the first signal then asks it to drain and
 * a second one interrupts at once. A command that has not registered is interrupted by the first signal (its scopes
 * still close: connections quit, servers stop).
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"

interface State {
  signals: number
  main: Fiber.Fiber<unknown, unknown> | undefined
  drain: Deferred.Deferred<void> | undefined
}

const state: State = { signals: 0, main: undefined, drain: undefined }

const onSignal = () => {
  state.signals++
  if (state.signals === 1 && state.drain !== undefined) {
    process.stderr.write("\nredflow: draining (press Ctrl-C again to stop at once)\n")
    Deferred.doneUnsafe(state.drain, Effect.void)
    return
  }
  state.main?.interruptUnsafe()
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

/**
 * An effect that completes at the first Ctrl-C / SIGTERM while the current scope is open; until the scope closes,
 * the first signal drains instead of interrupting.
 */
export const drainOnSignal: Effect.Effect<Effect.Effect<void>, never, Scope.Scope> = Effect.gen(function* () {
  const deferred = yield* Deferred.make<void>()
  const previous = state.drain
  state.drain = deferred
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      state.drain = previous
    })
  )
  return Deferred.await(deferred)
})
