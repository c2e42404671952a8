/**
 * The application loop of `RedisStreamConsumer.run`, on one explicit record ({@link Workers}): the workers that
 * take messages from the reader and run the handler (optionally ordered per key, through lanes fed by a
 * dispatcher), the acker that acknowledges what succeeded in batches, and the counters the shutdown and `limit`
 * read.
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import * as TraceContext from "@redflow/core/TraceContext"
import * as Idempotency from "../../Idempotency.ts"
import type { RedisError } from "../../RedisError.ts"
import type { Message, RunOptions } from "../../RedisStreamConsumer.ts"
import * as Ledger from "./ledger.ts"
import * as Reader from "./reader.ts"
import {
  annotations,
  type ConsumerConfigError,
  type ConsumerError,
  type ConsumerSettings,
  durationMs,
  positiveInt
} from "./settings.ts"
import * as Shutdown from "./shutdown.ts"
import type { ConsumerStore } from "./store.ts"

type Take = Effect.Effect<ReadonlyArray<Message>, ConsumerError | Cause.Done>

/** The workers of one `run`. */
export interface Workers {
  readonly reader: Reader.Reader
  readonly concurrency: number
  readonly shutdownMs: number
  readonly limit: number | undefined
  /** `ack: "batch"`: successes go to the acker. */
  readonly batched: boolean
  /** Ids, not messages: a handled message (and its event) is garbage at once, not after the XACK that follows. */
  readonly acks: Queue.Queue<string, Cause.Done>
  /** Ids in {@link acks} of entries delivered more than once (their last error goes with the XACK). */
  readonly redeliveredIds: Set<string>
  /** Ordered: one lane per worker, a key always on the same lane. Empty when unordered. */
  readonly lanes: ReadonlyArray<Queue.Queue<Message, Cause.Done>>
  /** Completed once `limit` messages were handled. */
  readonly limitReached: Deferred.Deferred<void>
  /** Set by the shutdown: no handler starts from then on. */
  stopping: boolean
  /** Messages handed to a handler (or skipped as duplicates) so far. */
  handed: number
  /** Handlers running now. */
  running: number
  fibers: ReadonlyArray<Fiber.Fiber<void>>
  dispatcher: Fiber.Fiber<void> | undefined
  acker: Fiber.Fiber<void> | undefined
}

const stillPending = (message: Message) => (error: RedisError) =>
  Effect.logWarning(`entry ${message.id} stays pending: ${error._tag}: ${error.message}`)

/** Batched: the acker takes everything that finished while its previous XACK was in flight. */
const queueAck = (workers: Workers, message: Message): void => {
  if (message.deliveries > 1) workers.redeliveredIds.add(message.id)
  Queue.offerUnsafe(workers.acks, message.id)
}

const acknowledge = (workers: Workers, message: Message): Effect.Effect<void> => {
  if (!workers.batched) return Effect.catch(message.ack, stillPending(message))
  queueAck(workers, message)
  return Effect.void
}

const ackLoop = (workers: Workers) =>
  Effect.gen(function* () {
    for (;;) {
      const ids = yield* Queue.takeBetween(workers.acks, 1, 5000)
      const redelivered = workers.redeliveredIds.size === 0 ? [] : ids.filter((id) => workers.redeliveredIds.delete(id))
      yield* Ledger.acknowledge(workers.reader.ledger, ids, redelivered).pipe(
        Effect.catch((error) => Effect.logWarning(`XACK failed, entries stay pending: ${error.message}`))
      )
    }
  }).pipe(Effect.catchCause(() => Effect.void))

/** A handler failed: the entry is given up with the failure's first line as its last error. */
const handlerFailed = (message: Message, cause: Cause.Cause<unknown>): Effect.Effect<void> => {
  if (Cause.hasInterruptsOnly(cause)) return Effect.void
  const reason = Cause.pretty(cause)
  return Effect.logWarning(`handler failed for entry ${message.id} (delivery ${message.deliveries})`, reason).pipe(
    Effect.andThen(message.nack(reason.split("\n")[0] ?? reason)),
    Effect.catch(stillPending(message))
  )
}

/** The handler's effect. A handler that throws rather than failing is a defect, as in `Effect.suspend`. */
const handlerEffect = <E, R>(options: RunOptions<E, R>, message: Message): Effect.Effect<unknown, E, R> => {
  try {
    return options.handler(message.event, message)
  } catch (defect) {
    return Effect.die(defect)
  }
}

/**
 * The handler in a span `redflow.consume.handle` whose parent is the entry's `traceparent` (the producer's span, so
 * the trace continues across Redis), else the caller's span. Under Effect's native tracer (no exporter installed:
 * tracing off) there is no span at all, so tracing off costs one comparison per message.
 */
const traced = <A, E, R>(
  tracer: Tracer.Tracer,
  message: Message,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> => {
  if (tracer === Tracer.nativeTracer) return effect
  return Effect.flatMap(TraceContext.fromTraceparent(message.fields[TraceContext.FIELD]), (parent) =>
    Effect.withSpan(effect, "redflow.consume.handle", {
      kind: "consumer",
      attributes: {
        "messaging.system": "redis",
        "redflow.stream": message.stream,
        "redflow.group": message.group,
        "redflow.consumer": message.consumer,
        "redflow.entry.id": message.id,
        "redflow.deliveries": message.deliveries
      },
      ...(Option.isSome(parent) ? { parent: parent.value } : {})
    })
  )
}

/** Handles a message at most once per event id, by the idempotency store. */
const handleOnce = <E, R>(
  workers: Workers,
  options: RunOptions<E, R>,
  store: Idempotency.IdempotencyStore,
  message: Message,
  tracer: Tracer.Tracer
) =>
  Effect.gen(function* () {
    const ledger = workers.reader.ledger
    const acquired = yield* Ledger.retrying(ledger, store.acquire(message.event.id))
    if (acquired._tag === "Processed") {
      yield* Effect.logDebug(`skipping duplicate event ${message.event.id} (entry ${message.id})`)
      return yield* acknowledge(workers, message)
    }
    if (acquired._tag === "Busy") {
      // Another copy is being processed right now: this one comes back later, as a duplicate by then.
      yield* Effect.logDebug(new Idempotency.EventInProgress({ eventId: message.event.id }).message)
      return yield* Ledger.deferBusy(ledger, message)
    }
    const token = acquired.token
    const release = Effect.ignore(store.release(message.event.id, token))
    // The reservation is renewed while the handler runs, so a handler slower than the lease keeps its event.
    const exit = yield* Effect.exit(
      Idempotency.hold(
        store,
        message.event.id,
        token,
        traced(
          tracer,
          message,
          Effect.suspend(() => options.handler(message.event, message))
        )
      ).pipe(Effect.onInterrupt(() => release))
    )
    if (Exit.isSuccess(exit)) {
      yield* Ledger.retrying(ledger, store.complete(message.event.id, token))
      return yield* acknowledge(workers, message)
    }
    yield* release
    const error = Cause.findErrorOption(exit.cause)
    if (Option.isSome(error) && error.value instanceof Idempotency.ReservationLost) {
      // Another consumer has the event now (this one could not renew in time): not a failure of the handler.
      return yield* message.nack(error.value.message)
    }
    yield* handlerFailed(message, exit.cause)
  }).pipe(
    Effect.catch(stillPending(message)),
    Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.failCause(cause)
        : Effect.logWarning(`entry ${message.id} stays pending after a defect`, Cause.pretty(cause))
    )
  )

/**
 * One worker: takes messages and handles them in turn. Once stopping, no handler starts: a message taken and not
 * started stays read ahead (given back on stop). Checking, handing out and starting happen in one synchronous step,
 * so a stop cannot fall between.
 */
const workLoop = <E, R>(workers: Workers, options: RunOptions<E, R>, take: Take) => {
  const idempotency = options.idempotency
  return Effect.gen(function* () {
    const tracer = yield* Tracer.Tracer
    for (;;) {
      const chunk = yield* take
      for (const message of chunk) {
        if (workers.stopping) return
        Reader.handOut(workers.reader, message)
        workers.handed++
        workers.running++
        if (idempotency !== undefined) {
          yield* handleOnce(workers, options, idempotency, message, tracer)
        } else {
          // The common case, inline: no effect per message but the handler's and its exit.
          const exit = yield* Effect.exit(traced(tracer, message, handlerEffect(options, message)))
          if (Exit.isFailure(exit)) yield* handlerFailed(message, exit.cause)
          else if (workers.batched) queueAck(workers, message)
          else yield* acknowledge(workers, message)
        }
        if (--workers.running === 0 && workers.handed === workers.limit) {
          Deferred.doneUnsafe(workers.limitReached, Exit.void)
        }
      }
    }
  }).pipe(
    // Ended (stopping), or reading failed: `run` fails with that.
    Effect.catch(() => Effect.void),
    Effect.annotateLogs(annotations(workers.reader.ledger.settings))
  )
}

/** FNV-1a: a stable lane for a key. */
const laneOf = (key: string, lanes: number): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return (h >>> 0) % lanes
}

const orderKey = (orderedBy: "key" | ((message: Message) => string)) =>
  orderedBy === "key"
    ? (m: Message) => m.key ?? `${m.event.source.db}.${m.event.source.schema ?? ""}.${m.event.source.table}`
    : orderedBy

/** Feeds the lanes from the reader, a key always to the same lane. */
const dispatchLoop = (workers: Workers, keyOf: (message: Message) => string) =>
  Effect.gen(function* () {
    for (;;) {
      const chunk = yield* Queue.takeAll(workers.reader.messages)
      for (const message of chunk) {
        Queue.offerUnsafe(workers.lanes[laneOf(keyOf(message), workers.concurrency)]!, message)
      }
    }
  }).pipe(Effect.catch(() => Effect.void)) // reading failed: `run` fails with that

/** The options of `run` beyond the consumer's, checked. */
export interface RunSettings {
  readonly concurrency: number
  readonly shutdownMs: number
  readonly limit: number | undefined
}

/** Checks the options of `run` beyond the consumer's (before anything is opened). */
export const decodeRunSettings = <E, R>(options: RunOptions<E, R>): Effect.Effect<RunSettings, ConsumerConfigError> =>
  Effect.gen(function* () {
    const concurrency = yield* positiveInt("concurrency", options.concurrency, 1)
    const shutdownMs = yield* durationMs("shutdownTimeout", options.shutdownTimeout, 10_000)
    const limit = options.limit === undefined ? undefined : yield* positiveInt("limit", options.limit, 1)
    return { concurrency, shutdownMs, limit }
  })

/** `run` over a store: see `RedisStreamConsumer.run`. */
export const run = <E, R>(
  settings: ConsumerSettings,
  store: ConsumerStore,
  options: RunOptions<E, R>
): Effect.Effect<void, ConsumerError, R | Scope.Scope> =>
  Effect.gen(function* () {
    const { concurrency, limit, shutdownMs } = yield* decodeRunSettings(options)
    const scope = yield* Scope.Scope
    const reader = yield* Reader.start(Ledger.make(settings, store), limit)
    const keyOf = options.orderedBy === undefined ? undefined : orderKey(options.orderedBy)
    const workers: Workers = {
      reader,
      concurrency,
      shutdownMs,
      limit,
      batched: (options.ack ?? "batch") === "batch",
      acks: yield* Queue.unbounded<string, Cause.Done>(),
      redeliveredIds: new Set(),
      // Lanes are not bounded: what is read ahead is (see `reader.ts`).
      lanes:
        keyOf === undefined
          ? []
          : yield* Effect.forEach(Array.from({ length: concurrency }), () => Queue.unbounded<Message, Cause.Done>()),
      limitReached: yield* Deferred.make<void>(),
      stopping: false,
      handed: 0,
      running: 0,
      fibers: [],
      dispatcher: undefined,
      acker: undefined
    }
    workers.acker = yield* Effect.forkIn(ackLoop(workers), scope)
    // Ordered: the workers take from their lanes. Unordered: from the reader's queue themselves (one fiber less
    // between a read and its handlers), each taking one message at a time (a single worker takes all that waits).
    const takeOne: Take = Effect.map(Queue.take(reader.messages), (message) => [message])
    const source = (i: number): Take =>
      keyOf !== undefined
        ? Queue.takeAll(workers.lanes[i]!)
        : concurrency > 1
          ? takeOne
          : Queue.takeAll(reader.messages)
    workers.fibers = yield* Effect.forEach(Array.from({ length: concurrency }), (_, i) =>
      Effect.forkIn(workLoop(workers, options, source(i)), scope)
    )
    if (keyOf !== undefined) workers.dispatcher = yield* Effect.forkIn(dispatchLoop(workers, keyOf), scope)
    yield* Effect.addFinalizer(() => Shutdown.stopWorkers(workers))

    const failedReading = Deferred.await(reader.failure)
    if (limit === undefined) return yield* failedReading
    // With a limit: done once the last message's handler finished; the finalizer acknowledges what is left.
    yield* Effect.raceFirst(failedReading, Deferred.await(workers.limitReached))
  })
