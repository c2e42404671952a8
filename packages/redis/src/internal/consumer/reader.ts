/**
 * The reader and the admitter of one consumer, on one explicit record ({@link Reader}).
 *
 * One fiber reads: the consumer's own pending entries first, then new ones, and every `claimInterval` a claim pass.
 * Another admits what was read, in order (decoding, the dead-letter checks, see `admission.ts`), so the next read is
 * under way while the last one is decoded. Reading ahead is bounded: entries read and not handed out yet never
 * exceed twice `count` (a read asks for `count`, and only once no more than `count` are read ahead), so at most
 * `2 × count` entries plus what the handlers hold are delivered to this consumer and unfinished at any time. With
 * `limit`, no more than `limit` messages are ever admitted, so a consumer that stops after `limit` messages has read
 * nothing beyond them.
 *
 * Each read runs uninterruptibly together with recording what it returned (`Ledger.recordRead`): a stop never loses
 * a read (see `shutdown.ts`).
 */
import type * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import * as Latch from "effect/Latch"
import * as Metric from "effect/Metric"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import * as TraceContext from "@redflow/core/TraceContext"
import type { RedisError } from "../../RedisError.ts"
import type { Delivery, Message } from "../../RedisStreamConsumer.ts"
import { admit, recreateGroup } from "./admission.ts"
import * as Ledger from "./ledger.ts"
import * as Shutdown from "./shutdown.ts"
import { annotations, type ConsumerError } from "./settings.ts"
import type { ReadEntry } from "./store.ts"

/** The reading machinery of one consumer. */
export interface Reader {
  readonly ledger: Ledger.Ledger
  /** Most messages ever admitted, when set. */
  readonly limit: number | undefined
  /** A tracer is installed (not the native one): each read gets a `redflow.consume.read` span. */
  readonly traced: boolean
  /** Messages admitted, not handed out yet. Bounded by {@link roomNow}, not by the queue. */
  readonly messages: Queue.Queue<Message, ConsumerError | Cause.Done>
  /** Opened when handing out (or admitting) messages made room for a read: the read loop waits on it. */
  readonly room: Latch.Latch
  /**
   * What the read loop read, in order, for the admitter: reading goes on while the last read is decoded. Bounded by
   * the room logic too: every entry here is held.
   */
  readonly reads: Queue.Queue<readonly [ReadonlyArray<ReadEntry>, Delivery]>
  /** What stopped reading, for `run` (the `messages` stream has it from the queue). */
  readonly failure: Deferred.Deferred<never, ConsumerError>
  /** Messages admitted so far. */
  admitted: number
  /** Entries read and not admitted yet: with `limit`, they may all become messages. */
  admitting: number
  readLoop: Fiber.Fiber<unknown> | undefined
  admitLoop: Fiber.Fiber<unknown> | undefined
}

/**
 * Entries a read may ask for now: `count` (or all that `limit` leaves), once no more than `count` are read ahead.
 * Reads are as large as the application asked for, and the next one is under way while it works through the last.
 */
export const roomNow = (reader: Reader): number => {
  const { count } = reader.ledger.settings
  const n = reader.limit === undefined ? count : Math.min(count, reader.limit - reader.admitted - reader.admitting)
  return n > 0 && reader.ledger.held.size <= count ? n : 0
}

const awaitRoom = (reader: Reader) =>
  Effect.gen(function* () {
    for (;;) {
      reader.room.closeUnsafe()
      const n = roomNow(reader)
      if (n > 0) return n
      yield* reader.room.await
    }
  })

/** The message reached the application: its delivery stands, and the read loop is woken if that made room. */
export const handOut = (reader: Reader, message: Message): void => {
  Ledger.handOut(reader.ledger, message.id)
  if (roomNow(reader) > 0) reader.room.openUnsafe()
}

/** {@link handOut} of a chunk; the read loop is woken once, not for every message. */
export const handOutAll = (reader: Reader, messages: ReadonlyArray<Message>): void => {
  for (const m of messages) Ledger.handOut(reader.ledger, m.id)
  if (roomNow(reader) > 0) reader.room.openUnsafe()
}

/** Hands what a read returned to the admitter. */
const queueForAdmission = (reader: Reader, entries: ReadonlyArray<ReadEntry>, delivery: Delivery) =>
  Effect.sync(() => {
    reader.admitting += entries.length
    Queue.offerUnsafe(reader.reads, [entries, delivery])
  })

/** Decodes and checks what was read, in the order it was read, and queues the messages. */
const admitLoop = (reader: Reader) =>
  Effect.gen(function* () {
    for (;;) {
      const [entries, delivery] = yield* Queue.take(reader.reads)
      const messages = yield* admit(reader.ledger, entries, delivery)
      reader.admitting -= entries.length
      reader.admitted += messages.length
      if (messages.length > 0) yield* Queue.offerAll(reader.messages, messages)
      // Entries not admitted (dead-lettered, gone) leave room, and with `limit`, admitting settles what is left.
      if (roomNow(reader) > 0) reader.room.openUnsafe()
    }
  })

const isNoGroup = (error: RedisError) => error._tag === "RedisCommandError" && error.code === "NOGROUP"

/** A blocked read cut short because its stream was deleted, renamed or flushed (Redis ≥ 7.0). */
const isStreamDeleted = (error: RedisError) =>
  error._tag === "RedisCommandError" &&
  error.code === "UNBLOCKED" &&
  /^UNBLOCKED the stream key no longer exists/.test(error.message)

/**
 * A read in a span `redflow.consume.read` (its parent the caller's span), linked to the producing span of each entry
 * that carries a `traceparent`: the handler spans continue those traces, the read is where they meet this consumer.
 */
const readSpan = <E>(
  reader: Reader,
  id: string,
  count: number,
  read: Effect.Effect<ReadonlyArray<ReadEntry>, E>
): Effect.Effect<ReadonlyArray<ReadEntry>, E> => {
  const { settings } = reader.ledger
  return Effect.useSpan(
    "redflow.consume.read",
    {
      kind: "consumer",
      attributes: {
        "messaging.system": "redis",
        "redflow.stream": settings.stream,
        "redflow.group": settings.group,
        "redflow.consumer": settings.consumer,
        "redflow.read.from": id === ">" ? "new" : "pending",
        "redflow.read.count": count
      }
    },
    (span) =>
      Effect.tap(read, (entries) =>
        Effect.sync(() => {
          span.attribute("redflow.entries", entries.length)
          const links: Array<Tracer.SpanLink> = []
          for (const entry of entries) {
            const value = entry.fields?.[TraceContext.FIELD]
            if (value === undefined) continue
            const parsed = TraceContext.parse(value)
            if ("span" in parsed) links.push({ span: parsed.span, attributes: { "redflow.entry.id": entry.id } })
          }
          if (links.length > 0) span.addLinks(links)
        })
      )
  )
}

const readGroup = (reader: Reader, id: string, count: number, blockMs: number | undefined) => {
  const { ledger } = reader
  const read = ledger.store.readGroup(id, count, blockMs)
  return (reader.traced ? readSpan(reader, id, count, read) : read).pipe(
    Effect.tap((entries) => Effect.sync(() => Ledger.recordRead(ledger, entries, id === ">" ? 1 : undefined))),
    Effect.uninterruptible,
    // The group (or the stream) was deleted under us: create it again (see `recreateGroup`) and go on.
    Effect.catchIf(
      (error) => isNoGroup(error) || isStreamDeleted(error),
      (error) => Effect.as(recreateGroup(ledger, isStreamDeleted(error)), [])
    ),
    // Reads wait for the reading connection's own reconnect.
    (reading) => Ledger.retrying(ledger, reading, ledger.store.nextReaderReconnect)
  )
}

/** One pass of `XAUTOCLAIM` over the pending list (bounded): idle entries of any consumer of the group. */
const claimPass = (reader: Reader) =>
  Effect.gen(function* () {
    const { ledger } = reader
    let cursor = "0-0"
    for (let round = 0; round < 10; round++) {
      const count = yield* awaitRoom(reader)
      const result = yield* Ledger.retrying(
        ledger,
        ledger.store.autoClaim(cursor, count).pipe(
          Effect.tap((r) => Effect.sync(() => Ledger.recordRead(ledger, r.entries, undefined))),
          Effect.uninterruptible
        )
      )
      cursor = result.next
      if (result.entries.length > 0) {
        yield* Metric.update(ledger.metric.claimed, result.entries.length)
        yield* Effect.logInfo(`claimed ${result.entries.length} idle entries`)
        yield* queueForAdmission(reader, result.entries, "claimed")
      }
      if (cursor === "0-0") break
    }
  }).pipe(
    Effect.catch((error) => Effect.logWarning(`claiming idle entries failed: ${error._tag}: ${error.message}`)),
    Effect.annotateLogs(annotations(reader.ledger.settings))
  )

const readLoop = (reader: Reader) =>
  Effect.gen(function* () {
    const { settings } = reader.ledger
    if (settings.recoverPending) {
      let cursor = "0"
      for (;;) {
        const entries = yield* readGroup(reader, cursor, yield* awaitRoom(reader), undefined)
        if (entries.length === 0) break
        cursor = entries[entries.length - 1]!.id
        yield* queueForAdmission(reader, entries, "pending")
      }
    }
    // Claims run between reads, within the same room: a busy consumer does not take over more than it can handle.
    let nextClaim = settings.claim ? yield* Clock.currentTimeMillis : Number.POSITIVE_INFINITY
    for (;;) {
      const count = yield* awaitRoom(reader)
      const now = yield* Clock.currentTimeMillis
      if (now >= nextClaim) {
        yield* claimPass(reader)
        nextClaim = (yield* Clock.currentTimeMillis) + settings.claimIntervalMs
        continue
      }
      // Blocks no longer than until the next claim pass is due.
      const entries = yield* readGroup(reader, ">", count, Math.max(1, Math.min(settings.blockMs, nextClaim - now)))
      if (entries.length > 0) yield* queueForAdmission(reader, entries, "new")
    }
  })

/**
 * Creates the group, then starts reading, admitting and the heartbeat in the current scope. Closing the scope stops
 * it (`Shutdown.stopReader`), giving back what was read and never handed out.
 */
export const start = Effect.fnUntraced(function* (ledger: Ledger.Ledger, limit: number | undefined) {
  const scope = yield* Scope.Scope
  yield* Ledger.retrying(ledger, ledger.store.createGroup(ledger.settings.startId))
  const reader: Reader = {
    ledger,
    limit,
    traced: (yield* Tracer.Tracer) !== Tracer.nativeTracer,
    messages: yield* Queue.unbounded<Message, ConsumerError | Cause.Done>(),
    room: yield* Latch.make(false),
    reads: yield* Queue.unbounded<readonly [ReadonlyArray<ReadEntry>, Delivery]>(),
    failure: yield* Deferred.make<never, ConsumerError>(),
    admitted: 0,
    admitting: 0,
    readLoop: undefined,
    admitLoop: undefined
  }
  const failQueue = (cause: Cause.Cause<ConsumerError>) =>
    Effect.andThen(Deferred.failCause(reader.failure, cause), Queue.failCause(reader.messages, cause))
  reader.readLoop = yield* readLoop(reader).pipe(Effect.catchCause(failQueue), Effect.forkIn(scope))
  reader.admitLoop = yield* admitLoop(reader).pipe(Effect.catchCause(failQueue), Effect.forkIn(scope))
  yield* Ledger.heartbeat(ledger).pipe(
    Effect.andThen(Ledger.updatePending(ledger)),
    Effect.catch((error) => Effect.logWarning(`heartbeat failed: ${error._tag}: ${error.message}`)),
    Effect.repeat(Schedule.spaced(Duration.millis(Math.max(1, ledger.settings.minIdleMs / 4)))),
    Effect.forkIn(scope)
  )
  yield* Effect.addFinalizer(() => Shutdown.stopReader(reader, Shutdown.GIVE_BACK_TIMEOUT_MS))
  return reader
})

/**
 * Starts a reader in the current scope and returns its messages as a stream: see `RedisStreamConsumer.messages`.
 * What the stream emits has reached the application; what is still queued when the scope closes is given back.
 */
export const openMessages = (
  ledger: Ledger.Ledger
): Effect.Effect<Stream.Stream<Message, ConsumerError>, RedisError, Scope.Scope> =>
  Effect.map(start(ledger, undefined), (reader) =>
    Stream.fromPull(
      Effect.succeed(
        Effect.map(Queue.takeAll(reader.messages), (chunk) => {
          handOutAll(reader, chunk)
          return chunk
        })
      )
    )
  )
