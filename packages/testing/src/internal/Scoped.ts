/**
 * Running a scoped resource from plain async code.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"

/**
 * Acquires a scoped resource in a scope of its own and returns it with `close`, which runs its finalizers.
 * A failed acquisition closes the scope before rejecting, so nothing started is left running.
 */
export const runScoped = async <A, E>(
  acquire: Effect.Effect<A, E, Scope.Scope>
): Promise<{ readonly value: A; readonly close: () => Promise<void> }> => {
  const scope = Effect.runSync(Scope.make())
  const exit = await Effect.runPromiseExit(Scope.provide(scope)(acquire))
  if (Exit.isFailure(exit)) {
    await Effect.runPromise(Scope.close(scope, exit))
    throw Cause.squash(exit.cause)
  }
  let closing: Promise<void> | undefined
  const close = () => (closing ??= Effect.runPromise(Scope.close(scope, Exit.void)))
  return { value: exit.value, close }
}
