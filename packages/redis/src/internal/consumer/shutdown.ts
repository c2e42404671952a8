/**
 * Stopping a consumer gracefully: reading stops without losing a read, what was read and never handed out is given
 * back with its delivery count restored, the handlers in flight finish within a bound, and their acknowledgements
 * go out.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Queue from "effect/Queue"
import * as Ledger from "./ledger.ts"
import type { Reader } from "./reader.ts"
import { annotations } from "./settings.ts"
import type { Workers } from "./workers.ts"

/** How long a graceful stop may take to give back what was read ahead, when the caller sets no bound. */
export const GIVE_BACK_TIMEOUT_MS = 10_000

/** The store's `giveBack` takes this many entries per call. */
const GIVE_BACK_BATCH = 1000

/**
 * On a graceful stop, after reading has stopped: puts back the delivery count of every entry read and never
 * handed out, so that being read ahead does not bring an entry closer to the dead-letter stream.
 *
 * Redis cannot take a delivery back (no command returns an entry to the group's never-delivered part), and
 * acknowledging would lose the entry, so the entries stay pending to this consumer, with the count they had
 * before our read. Their idle time is set to `minIdle`: a consumer of the group that is still running takes them
 * over at its next claim pass (counting that delivery, as it should) rather than `minIdle` later, and this
 * consumer re-reads them first on its next start.
 *
 * A crash runs none of this: what was read ahead keeps the one delivery our read counted (why that is at most one,
 * see docs/DESIGN.md, "Reading ahead and giving back").
 */
export const giveBack = (ledger: Ledger.Ledger) =>
  Effect.gen(function* () {
    if (ledger.held.size === 0) return
    const entries = [...ledger.held]
    ledger.held.clear()
    for (const [id] of entries) ledger.inFlight.delete(id)
    // Read but not decoded when reading stopped: the count our read left is the one pending now.
    const unknown = entries.filter(([, n]) => n === undefined).map(([id]) => id)
    const counts =
      unknown.length > 0 ? yield* Ledger.retrying(ledger, ledger.store.deliveries(unknown)) : new Map<string, number>()
    const known: Array<readonly [string, number]> = []
    for (const [id, n] of entries) {
      const deliveries = n ?? counts.get(id)
      if (deliveries !== undefined) known.push([id, deliveries])
    }
    let released = 0
    for (let i = 0; i < known.length; i += GIVE_BACK_BATCH) {
      released += yield* Ledger.retrying(
        ledger,
        ledger.store.giveBack(known.slice(i, i + GIVE_BACK_BATCH), ledger.settings.minIdleMs)
      )
    }
    yield* Effect.logDebug(`gave back ${released} entries read ahead and never handed out`)
  }).pipe(
    Effect.catch((error) =>
      Effect.logWarning(
        `could not give back entries read ahead (they keep one delivery too many): ${error._tag}: ${error.message}`
      )
    ),
    Effect.annotateLogs(annotations(ledger.settings))
  )

/**
 * Stops reading, without losing a read: interrupting the read loop waits for the command it is in (and the
 * recording of what that returned). A blocked read is cut short (`CLIENT UNBLOCK … TIMEOUT` makes it return as if
 * its block time had run out, with whatever it had), sent again until the loop is done, in case the read had not
 * reached Redis yet. What was read and not admitted yet stays held, and is given back.
 */
const stopReading = (reader: Reader) =>
  Effect.raceFirst(
    reader.readLoop === undefined ? Effect.void : Fiber.interrupt(reader.readLoop),
    Effect.forever(Effect.andThen(reader.ledger.store.unblockRead, Effect.sleep("20 millis")))
  ).pipe(Effect.andThen(reader.admitLoop === undefined ? Effect.void : Fiber.interrupt(reader.admitLoop)))

/**
 * A graceful stop of the reader: reading stops, and what was read and never handed out is given back, within
 * `timeoutMs`. Past it (Redis unreachable, or a read that could not be unblocked), the reading connection is
 * dropped: what is not given back by then keeps the delivery its read counted, as after a crash.
 */
export const stopReader = (reader: Reader, timeoutMs: number) =>
  Effect.andThen(stopReading(reader), giveBack(reader.ledger)).pipe(
    Effect.timeoutOrElse({
      duration: Duration.millis(timeoutMs),
      orElse: () =>
        reader.ledger.store.dropReader.pipe(
          Effect.andThen(Effect.logWarning("stopping: entries read ahead were not all given back in time")),
          Effect.annotateLogs(annotations(reader.ledger.settings))
        )
    })
  )

/**
 * The stop of `run`: no handler starts from here on. Reading stops and what is still queued for the handlers is
 * given back while the handlers in flight finish (their entries and those are not the same); those still running
 * after `shutdownMs` are interrupted and stay pending. Then the last acknowledgements go out.
 */
export const stopWorkers = (workers: Workers) =>
  Effect.gen(function* () {
    const { reader, shutdownMs } = workers
    const started = yield* Clock.currentTimeMillis
    workers.stopping = true
    if (workers.dispatcher !== undefined) yield* Fiber.interrupt(workers.dispatcher)
    for (const lane of workers.lanes) Queue.endUnsafe(lane)
    if (workers.lanes.length === 0) Queue.endUnsafe(reader.messages)
    if (workers.running > 0) yield* Effect.logInfo(`shutting down: waiting for ${workers.running} handlers`)
    const handlersDone = Fiber.awaitAll(workers.fibers).pipe(
      Effect.timeoutOrElse({
        duration: Duration.millis(shutdownMs),
        orElse: () =>
          Effect.gen(function* () {
            yield* Effect.logWarning(
              `shutdown timeout: ${workers.running} handlers interrupted, their entries stay pending`
            )
            yield* Fiber.interruptAll(workers.fibers)
          })
      })
    )
    yield* Effect.all([stopReader(reader, shutdownMs), handlersDone], { concurrency: "unbounded", discard: true })
    yield* Queue.end(workers.acks)
    const elapsed = (yield* Clock.currentTimeMillis) - started
    if (workers.acker !== undefined) {
      yield* Fiber.await(workers.acker).pipe(
        Effect.timeoutOrElse({
          duration: Duration.millis(Math.max(1000, shutdownMs - elapsed)),
          orElse: () => Effect.logWarning("shutdown timeout: the last acknowledgements did not complete")
        })
      )
    }
  }).pipe(Effect.annotateLogs(annotations(workers.reader.ledger.settings)))
