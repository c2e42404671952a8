/**
 * The commit pipeline: producer → bounded queue → sender → writes in flight → committer → checkpoint.
 *
 * - The producer (the source's fiber) prepares entries a slice at a time and queues them, within `maxEvents`
 *   entries and `maxBufferedBytes` encoded bytes: a Redis outage becomes backpressure on the source, not memory.
 * - The sender cuts a batch from whatever waits (group commit) while the window of events written but not yet
 *   checkpointed has room, and starts its write; up to {@link WRITES_PER_WINDOW} writes are in flight.
 * - The committer waits for the oldest write, checkpoints it with every write behind it that is done (at most every
 *   `checkpointInterval`), and gives the room back.
 *
 * All of it works on one {@link Writer} record, which the functions below take first (as Effect's `Pool.ts` does).
 */
import type * as Arr from "effect/Array"
import type * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Tracer from "effect/Tracer"
import type * as CdcEvent from "@redflow/core/CdcEvent"
import { type CheckpointError, CheckpointStore } from "@redflow/core/CheckpointStore"
import * as ConfigError from "@redflow/core/ConfigError"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as Position from "@redflow/core/Position"
import * as TraceContext from "@redflow/core/TraceContext"
import * as FailurePolicy from "../../FailurePolicy.ts"
import { RedisConnection, type RedisConnectionService } from "../../RedisConnection.ts"
import { classify, RedisCommandError, type RedisError } from "../../RedisError.ts"
import type { CommittedBatch, StreamResult } from "../../RedisStreamSink.ts"
import * as Durability from "../../Durability.ts"
import * as MemoryGuard from "../../MemoryGuard.ts"
import * as RedisStreamChannel from "../../RedisStreamChannel.ts"
import * as StreamAdmin from "../../StreamAdmin.ts"
import * as StreamRetention from "../../StreamRetention.ts"
import * as PipelineLease from "../../PipelineLease.ts"
import * as Gate from "../gate.ts"
import * as Scripts from "../scripts.ts"
import * as Marks from "./marks.ts"
import * as SinkOptions from "./options.ts"
import type { SinkSettings } from "./options.ts"
import * as Prepare from "./prepare.ts"
import * as Report from "./report.ts"
import { send, worse } from "./send.ts"

/**
 * Writes are cut at `maxEvents / WRITES_PER_WINDOW` events, so that several are in flight at once within the window
 * of `maxEvents` events written but not yet checkpointed: Redis works on one while the client checkpoints another and
 * encodes the next.
 */
const WRITES_PER_WINDOW = 4

/**
 * Most events, and about the most encoded bytes (the event that crosses it is kept), encoded between two yields of
 * the producing fiber: 64 small events, or a few large ones.
 */
const ENCODE_SLICE = 64
const ENCODE_SLICE_BYTES = 256 * 1024

/** What a write reports once Redis acknowledged all of it. */
interface Written {
  readonly results: Map<string, StreamResult>
  /** Each stream's share that Redis acknowledged with entries written, for what follows a write. */
  readonly acknowledged: ReadonlyArray<Acknowledged>
  readonly attempts: number
  readonly startedAt: number
}

/** What a write returns rather than fails with, as no failure policy applies to it. */
type Untrusted = Marks.HighWaterMarkError | PipelineLease.LeaseFenced

/** A batch whose write has started. */
interface Handle {
  readonly batch: ReadonlyArray<Prepare.Entry>
  readonly self: Marks.InFlight
  readonly fiber: Fiber.Fiber<Written, RedisError | Marks.HighWaterMarkError | PipelineLease.LeaseFenced>
  /** Its `redflow.sink.write` span, with tracing on. */
  readonly span: Tracer.Span | undefined
}

/** The state of one running sink. */
interface Writer<E> {
  readonly settings: SinkSettings
  readonly redis: RedisConnectionService
  readonly checkpoints: CheckpointStore["Service"]
  readonly scope: Scope.Scope
  /**
   * A tracer is installed (not Effect's native one, which exports nothing): writes and checkpoints get spans, and
   * entries a `traceparent` field. Off, the write path makes no span and entries stay as they are.
   */
  readonly traced: boolean
  readonly policies: FailurePolicy.FailurePolicies
  readonly report: Report.Report
  readonly book: Marks.MarkBook
  /** Awaited before each batch is cut: the memory guard, retention's hold and `maxLag`, or a gate that never holds. */
  readonly gate: Gate.WriteGate
  /** `trim.acked`: run after each acknowledged write of a stream. */
  readonly retention: StreamRetention.Retention | undefined
  /** Streams this sink has written to (the streams `maxLag` looks at). */
  readonly streams: Set<string>
  readonly prepare: Prepare.Prepare
  /** Prepared entries waiting for a write: at most `maxEvents`. */
  readonly queue: Queue.Queue<Prepare.Entry, E | Cause.Done>
  /** Encoded bytes queued or in flight: taken before an entry is queued, given back at its checkpoint. */
  readonly buffered: Semaphore.Semaphore
  /** Events written and not yet checkpointed: at most `maxEvents` (what a crash can make at-least-once replay). */
  readonly window: Semaphore.Semaphore
  /** Writes in flight: at most {@link WRITES_PER_WINDOW}. */
  readonly writes: Semaphore.Semaphore
  /** Writes started, in order, for the committer. */
  readonly handles: Queue.Queue<
    Handle,
    E | Cause.Done | RedisError | Marks.HighWaterMarkError | PipelineLease.LeaseFenced
  >
  /** Events per write: a part of the window. */
  readonly batchEvents: number
  /** Entries taken from the queue that did not fit the previous batch's bounds. */
  leftover: ReadonlyArray<Prepare.Entry>
  /** Writes started and not yet checkpointed (the in-flight gauge). */
  inFlight: number
  /** Events in batches cut and not yet checkpointed. */
  uncommitted: number
  /** Ends a checkpoint's wait once `uncommitted` is half the window. */
  pressure: Deferred.Deferred<void> | undefined
  /** Handles taken from `handles` but not yet committed: batches written behind the one being committed. */
  readonly lookahead: Array<Handle>
  lastCheckpointAt: number
}

// ---------------------------------------------------------------------------------------------------------------
// Producer
// ---------------------------------------------------------------------------------------------------------------

/** An entry counts at most the whole byte bound (only a dead-letter stub under a tiny maxBytes is larger). */
const held = <E>(w: Writer<E>, entry: Prepare.Entry) => Math.min(entry.bytes, w.settings.maxBufferedBytes)

/** Queues entries, taking their bytes from the byte bound first, as many at a time as the bound holds. */
const offerEntries = <E>(w: Writer<E>, entries: ReadonlyArray<Prepare.Entry>, from: number): Effect.Effect<void> => {
  let bytes = 0
  let to = from
  while (to < entries.length && bytes + held(w, entries[to]!) <= w.settings.maxBufferedBytes) {
    bytes += held(w, entries[to++]!)
  }
  const offered = Semaphore.take(w.buffered, bytes).pipe(
    Effect.andThen(Queue.offerAll(w.queue, from === 0 && to === entries.length ? entries : entries.slice(from, to)))
  )
  return to < entries.length ? Effect.andThen(offered, offerEntries(w, entries, to)) : Effect.asVoid(offered)
}

/**
 * Prepares and queues a chunk a slice at a time, yielding in between: a source that emits huge chunks must not get
 * ahead of the queue, and the event loop must stay free to hear Redis replies and checkpoint I/O while the next batch
 * is encoded. A slice is cut by bytes too, so what waits for room in the queue is one slice, whatever the events' size.
 */
const offerSlice = <E>(w: Writer<E>, chunk: ReadonlyArray<CdcEvent.CdcEvent>, from: number): Effect.Effect<void> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const entries: Array<Prepare.Entry> = []
    let bytes = 0
    let to = from
    while (to < chunk.length && entries.length < ENCODE_SLICE && bytes < ENCODE_SLICE_BYTES) {
      const entry = w.prepare(chunk[to++]!, now)
      entries.push(entry)
      // A dead letter may stand for an event too large to write, encoded at a cost its stub does not show.
      bytes += entry.deadLetter ? ENCODE_SLICE_BYTES : entry.bytes
    }
    const offered = offerEntries(w, entries, 0)
    return to < chunk.length
      ? offered.pipe(Effect.andThen(Effect.yieldNow), Effect.andThen(offerSlice(w, chunk, to)))
      : offered
  })

// ---------------------------------------------------------------------------------------------------------------
// Sender
// ---------------------------------------------------------------------------------------------------------------

/**
 * Up to `max` items already in the queue, without waiting: none when it is empty or has ended (its next take reports
 * the end). `Queue.takeBetween(queue, 0, max)` is not that: it returns nothing even when items wait.
 */
const takeAvailable = <A, E>(queue: Queue.Dequeue<A, E>, max: number): Effect.Effect<ReadonlyArray<A>> =>
  Effect.flatMap(Queue.size(queue), (size) =>
    size > 0 ? Queue.takeBetween(queue, 1, max) : Effect.succeed([] as ReadonlyArray<A>)
  ).pipe(Effect.catchCause(() => Effect.succeed([] as ReadonlyArray<A>)))

/** Takes the next batch: whatever is waiting, within the event and byte bounds (group commit). */
const takeBatch = <E>(w: Writer<E>): Effect.Effect<Array<Prepare.Entry>, E | Cause.Done> =>
  Effect.gen(function* () {
    let taken: ReadonlyArray<Prepare.Entry> = w.leftover
    w.leftover = []
    if (taken.length === 0) taken = yield* Queue.takeBetween(w.queue, 1, w.batchEvents)
    if (taken.length < w.batchEvents) {
      if (w.settings.lingerMs > 0) yield* Effect.sleep(Duration.millis(w.settings.lingerMs))
      const more = yield* takeAvailable(w.queue, w.batchEvents - taken.length)
      if (more.length > 0) taken = [...taken, ...more]
    }
    const batch: Array<Prepare.Entry> = []
    let bytes = 0
    let i = 0
    for (; i < taken.length; i++) {
      const e = taken[i]!
      if (batch.length > 0 && (batch.length >= w.batchEvents || bytes + e.bytes > w.settings.maxBytes)) break
      batch.push(e)
      bytes += e.bytes
    }
    if (i < taken.length) w.leftover = taken.slice(i)
    return batch
  })

const recordResult = (
  results: Map<string, StreamResult>,
  stream: string,
  written: number,
  skipped: number,
  lastId: string
) => {
  const prior = results.get(stream)
  results.set(stream, {
    stream,
    written: (prior?.written ?? 0) + written,
    skipped: (prior?.skipped ?? 0) + skipped,
    lastId: lastId || prior?.lastId || ""
  })
}

/**
 * Writes one batch, retrying failed streams by the failure policies. A stream refused because an earlier batch in
 * flight has not applied yet (`written = -1`) is sent again, unconditionally, once that batch is through.
 */
const writeBatch = <E>(
  w: Writer<E>,
  writes: ReadonlyArray<Marks.Write>,
  self: Marks.InFlight,
  span: Tracer.Span | undefined
) =>
  Effect.gen(function* () {
    const { book, settings } = w
    const startedAt = yield* Clock.currentTimeMillis
    if (span !== undefined) {
      const traceparent = TraceContext.format(span)
      for (const write of writes) write.header.traceparent = traceparent
    }
    const results = new Map<string, StreamResult>()
    const acknowledged: Array<Acknowledged> = []
    let pending = writes
    let attempts = 0
    // A mark the sink cannot trust, or a fenced write, is returned, not failed: no failure policy applies to it.
    const attempt: Effect.Effect<Untrusted | undefined, RedisError> = Effect.gen(function* () {
      attempts++
      const replies = yield* send(w.redis, pending)
      const failed: Array<Marks.Write> = []
      const refused: Array<Marks.Write> = []
      let worst: RedisError | undefined
      for (let i = 0; i < pending.length; i++) {
        const reply = replies[i]!
        const write = pending[i]!
        if ("_tag" in reply) {
          // A newer holder took the pipeline over: this call wrote nothing, and no retry may write it.
          const fence = Marks.fenceRefusal(book, reply)
          if (fence !== undefined) return fence
          failed.push(write)
          worst = worse(worst, reply)
          continue
        }
        if (reply.written >= 0) {
          recordResult(results, write.stream, reply.written, reply.skipped, reply.lastId)
          if (reply.written > 0) {
            acknowledged.push({ stream: write.stream, reply })
            w.streams.add(write.stream)
          }
          continue
        }
        const found = reply.mark
        if (reply.written === Scripts.MARK_MALFORMED) return Marks.markError(settings, write, "malformed", found)
        if (write.predecessor !== undefined) {
          // The earlier write to this stream had not applied when this one ran: send it again once it has.
          yield* Deferred.await(write.predecessor.written)
          write.predecessor = undefined
          refused.push(write)
        } else if (Marks.appliedEarlier(book, write, found)) {
          // This write applied on an earlier try whose reply was lost (a timeout, a dropped connection); later
          // writes of this sink may have applied after it.
          recordResult(results, write.stream, write.count, 0, "")
        } else {
          const error = Marks.markError(settings, write, Marks.lossReason(write, found), found)
          yield* w.report.onDataLoss(write.stream, error.message)
          if (settings.onDataLoss === "fail") return error
          // Write on from the mark found: what it no longer covers is lost unless the checkpoint is rewound.
          Marks.writeOnFrom(book, write, self, found)
          refused.push(write)
        }
      }
      // Streams that succeeded are done: a retry sends only what failed or was refused.
      pending = [...failed, ...refused]
      if (worst !== undefined) return yield* Effect.fail(worst)
      if (refused.length > 0) return yield* attempt
      return undefined
    })
    const retried = w.report.retried(
      "batch write",
      () => ({ streams: pending.map((c) => c.stream).join(","), attempt: attempts }),
      attempt
    )
    const untrusted = yield* span === undefined
      ? retried
      : Effect.ensuring(
          retried,
          Effect.sync(() => {
            span.attribute("redflow.attempts", attempts)
            span.attribute("redflow.retries", attempts - 1)
          })
        )
    if (untrusted !== undefined) return yield* Effect.fail(untrusted)
    yield* Deferred.succeed(self.written, undefined)
    yield* w.report.onWritten
    // Written: the encoded events can go (see internal/commands.ts for why holding them costs memory).
    for (const write of writes) write.entries.length = 0
    return { results, acknowledged, attempts, startedAt } satisfies Written
  })

/** A stream's share of a batch that Redis acknowledged. */
interface Acknowledged {
  readonly stream: string
  readonly reply: Scripts.WriteReply
}

/**
 * The channels of the entries a call wrote, in order: its entries in the batch but those skipped. Skipped entries
 * (exactly-once, at or below the mark) are a prefix, since positions increase within a batch.
 */
const writtenChannels = (batch: ReadonlyArray<Prepare.Entry>, ack: Acknowledged): Array<string | undefined> => {
  const channels: Array<string | undefined> = []
  for (const e of batch) if (e.stream === ack.stream) channels.push(e.channel)
  return channels.slice(channels.length - ack.reply.written)
}

/**
 * The notices of one call: one per channel. When every entry goes on one channel, the call's first and last ids say
 * it all; otherwise the call's entries (contiguous: a script runs atomically) are read back for their ids, and must
 * be as many as it wrote.
 */
const announce = (batch: ReadonlyArray<Prepare.Entry>, ack: Acknowledged) =>
  Effect.gen(function* () {
    const { stream, reply } = ack
    const channels = writtenChannels(batch, ack)
    const first = channels.find((c) => c !== undefined)
    if (first === undefined) return
    if (reply.firstId === "" || reply.lastId === "" || channels.length !== reply.written) {
      return yield* Effect.logWarning(
        `publish: the write script answered ${reply.written} entries from ${JSON.stringify(reply.firstId)} to ` +
          `${JSON.stringify(reply.lastId)} on ${stream}, which does not match the batch; this write is not announced`
      )
    }
    let notices: Array<RedisStreamChannel.Notice>
    if (channels.every((c) => c === first)) {
      notices = [
        { _tag: "Notice", channel: first, stream, first: reply.firstId, last: reply.lastId, count: reply.written }
      ]
    } else {
      const ids = yield* StreamAdmin.command("XRANGE", stream, [stream, reply.firstId, reply.lastId], (r) =>
        Array.isArray(r) ? r.map((entry) => String((entry as ReadonlyArray<unknown>)[0])) : []
      )
      if (ids.length !== channels.length) {
        return yield* Effect.logWarning(
          `publish: stream ${stream} holds ${ids.length} entries from ${reply.firstId} to ${reply.lastId}, where ` +
            `the sink wrote ${channels.length} (trimmed meanwhile?); this write is not announced`
        )
      }
      notices = RedisStreamChannel.noticesOf(stream, channels, ids)
    }
    yield* RedisStreamChannel.publishAll(notices)
  })

/**
 * What follows each acknowledged write of a stream: its notices (`publish`), then retention (`trim.acked`). Neither
 * can undo the write, so a failure is logged and the sink goes on: a notice is at most once, and the next write of
 * the stream runs retention again.
 */
const afterStream = <E>(w: Writer<E>, batch: ReadonlyArray<Prepare.Entry>, ack: Acknowledged) =>
  Effect.gen(function* () {
    if (w.settings.publish !== undefined) {
      yield* announce(batch, ack).pipe(
        Effect.catch((e) =>
          Effect.logWarning(`publish: notice of a write to ${ack.stream} not sent (${e._tag}: ${e.message})`)
        )
      )
    }
    if (w.retention !== undefined) {
      yield* w.retention
        .afterWrite(ack.stream)
        .pipe(
          Effect.catch((e) =>
            Effect.logWarning(
              `retention: ${ack.stream} not trimmed after a write (${e._tag}: ${e.message}); the next write tries again`
            )
          )
        )
    }
  }).pipe(Effect.provideService(RedisConnection, w.redis), Effect.annotateLogs({ pipeline: w.settings.pipeline }))

/**
 * Notices and retention for every stream a write wrote. Run once the write's slot is free again, so they do not hold
 * up the next write, but before the committer takes the batch: its events keep their room in the window until then,
 * so what passes a gate before retention finds a lagging group is still bounded by the window.
 */
const afterWrite = <E>(w: Writer<E>, batch: ReadonlyArray<Prepare.Entry>, written: Written) =>
  written.acknowledged.length === 0 || (w.settings.publish === undefined && w.retention === undefined)
    ? Effect.void
    : Effect.forEach(written.acknowledged, (ack) => afterStream(w, batch, ack), {
        concurrency: "unbounded",
        discard: true
      })

/** Cuts the next batch when there is room, learns its streams' marks and starts its write. */
const sendNext = <E>(w: Writer<E>) =>
  Effect.gen(function* () {
    // Room for a whole write first, so the batch is cut as late (and as full) as possible; unused room goes back.
    yield* Semaphore.take(w.writes, 1)
    yield* Semaphore.take(w.window, w.batchEvents)
    // A gate that holds (Redis near maxmemory, a consumer group behind) stops batches here: the queue fills and the
    // source is not pulled. Awaited with the room taken, so that what passed the gate before it held is within the
    // window: the writes it lets through after a hold began are those already in flight.
    yield* w.gate.await
    const batch = yield* takeBatch(w)
    if (batch.length < w.batchEvents) yield* Semaphore.release(w.window, w.batchEvents - batch.length)
    yield* Marks.learn(w.book, batch)
    const self: Marks.InFlight = { written: yield* Deferred.make<void>(), leaves: [] }
    const writes = Marks.planWrites(w.book, batch, yield* Clock.currentTimeMillis, self)
    const span = w.traced ? yield* writeSpan(w, batch, writes) : undefined
    w.inFlight++
    w.uncommitted += batch.length
    if (w.pressure !== undefined && w.uncommitted * 2 >= w.settings.maxEvents)
      Deferred.doneUnsafe(w.pressure, Exit.void)
    yield* w.report.inFlight(w.inFlight)
    // The write's slot is free again once Redis has answered: the checkpoint that follows is not a write, and the
    // next batch must not wait for its I/O (a file store's fsync would then add to every event's latency). Started
    // at once, so the batch is on the socket before this fiber goes on, not a scheduler turn later.
    const write = writeBatch(w, writes, self, span).pipe(Effect.ensuring(Semaphore.release(w.writes, 1)))
    // The span ends with the write, before what follows it (notices, retention).
    const written = span === undefined ? write : Effect.onExit(write, endSpan(span))
    const fiber = yield* Effect.forkIn(
      Effect.tap(written, (result) => afterWrite(w, batch, result)),
      w.scope,
      { startImmediately: true }
    )
    yield* Queue.offer(w.handles, { batch, self, fiber, span })
  })

/**
 * The span of a batch write, started as the batch is cut (its parent the sink's caller's span). Its `traceparent`
 * is what the batch's entries carry unless their event has its own. Attempts and retries are set when it ends.
 */
const writeSpan = <E>(w: Writer<E>, batch: ReadonlyArray<Prepare.Entry>, writes: ReadonlyArray<Marks.Write>) => {
  let bytes = 0
  let deadLettered = 0
  for (const e of batch) {
    bytes += e.bytes
    if (e.deadLetter) deadLettered++
  }
  const streams = writes.map((write) => write.stream)
  return Effect.makeSpan("redflow.sink.write", {
    kind: "producer",
    attributes: {
      "messaging.system": "redis",
      "redflow.pipeline": w.settings.pipeline,
      "redflow.streams": streams,
      ...(streams.length === 1 ? { "redflow.stream": streams[0] } : {}),
      "redflow.entries": batch.length,
      "redflow.bytes": bytes,
      "redflow.dead_lettered": deadLettered
    }
  })
}

const endSpan =
  (span: Tracer.Span) =>
  (exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> =>
    Effect.flatMap(Clock.currentTimeNanos, (now) => Effect.sync(() => span.end(now, exit)))

// ---------------------------------------------------------------------------------------------------------------
// Committer
// ---------------------------------------------------------------------------------------------------------------

/** `WAIT` for the configured replicas after a batch, under the failure policies. */
const waitReplicas = <E>(w: Writer<E>, wait: { readonly replicas: number; readonly timeoutMs: number }) =>
  w.redis
    .run((client) =>
      (client as { wait: (n: number, t: number) => Promise<number> }).wait(wait.replicas, wait.timeoutMs)
    )
    .pipe(
      Effect.flatMap((acknowledged) =>
        acknowledged >= wait.replicas
          ? Effect.void
          : Effect.fail(
              classify(
                new Error(
                  `NOREPLICAS ${acknowledged} of ${wait.replicas} replicas acknowledged the batch within ${wait.timeoutMs} ms`
                )
              )
            )
      ),
      Effect.retry(FailurePolicy.schedule(w.policies, w.report.onRetry))
    )

/** The position a batch's checkpoint reaches: its last event's, or in at-least-once its highest. */
const batchPosition = (settings: SinkSettings, batch: ReadonlyArray<Prepare.Entry>): Position.Position => {
  let position = batch[batch.length - 1]!.position
  if (settings.guarantee === "at-least-once") for (const e of batch) position = Position.max(position, e.position)
  return position
}

/**
 * A checkpoint commit under the lease's fence, while the sink holds one (`PipelineLease.CheckpointFence`): a store
 * that checks it (`RedisCheckpointStore`) refuses the commit once a newer holder took over, and the sink stops with
 * `LeaseFenced`, as a refused write does. Without it a process woken after its lease passed could still move the
 * shared checkpoint back to a batch it wrote before its pause.
 */
const underFence = <E>(
  w: Writer<E>,
  committing: Effect.Effect<void, CheckpointError>
): Effect.Effect<void, CheckpointError | PipelineLease.LeaseFenced> => {
  const fence = w.book.fence
  if (fence === undefined) return committing
  return committing.pipe(
    Effect.provideService(PipelineLease.CheckpointFence, Option.some(fence)),
    Effect.mapError((error): CheckpointError | PipelineLease.LeaseFenced => {
      const cause = error.cause
      if (!(cause instanceof RedisCommandError)) return error
      return Option.getOrElse(PipelineLease.fenced(w.settings.pipeline, fence.token, cause), () => error)
    })
  )
}

/**
 * Waits for the oldest batch in flight to be written, then checkpoints it together with every batch behind it that
 * is already written: under load one checkpoint write covers several batches. Returns them in order.
 */
const commit = <E>(
  w: Writer<E>
): Effect.Effect<
  Arr.NonEmptyReadonlyArray<CommittedBatch>,
  E | Cause.Done | RedisError | Marks.HighWaterMarkError | PipelineLease.LeaseFenced | CheckpointError
> =>
  Effect.gen(function* () {
    const { settings } = w
    const head = w.lookahead.shift() ?? (yield* Queue.take(w.handles))
    const group: Array<{ readonly handle: Handle; readonly written: Written }> = [
      { handle: head, written: yield* Fiber.join(head.fiber) }
    ]
    // Checkpoints at most every checkpointInterval: the batches written meanwhile join this one. Not while half the
    // window waits for a checkpoint, though: the writes would soon stop for room.
    const wait = w.lastCheckpointAt + settings.checkpointIntervalMs - (yield* Clock.currentTimeMillis)
    if (wait > 0 && w.uncommitted * 2 < settings.maxEvents) {
      const full = Deferred.makeUnsafe<void>()
      w.pressure = full
      yield* Effect.raceFirst(Effect.sleep(Duration.millis(wait)), Deferred.await(full))
      w.pressure = undefined
    }
    w.lastCheckpointAt = yield* Clock.currentTimeMillis
    for (const h of yield* takeAvailable(w.handles, settings.maxEvents)) w.lookahead.push(h)
    while (w.lookahead.length > 0) {
      const exit = w.lookahead[0]!.fiber.pollUnsafe()
      if (exit === undefined || Exit.isFailure(exit)) break
      group.push({ handle: w.lookahead.shift()!, written: exit.value })
    }
    // Under load, a write is usually still in flight behind this one: wait for it, so one checkpoint write covers
    // both, and checkpoint I/O costs half as much of the client's time.
    if (group.length === 1 && w.lookahead.length > 0) {
      const next = w.lookahead.shift()!
      group.push({ handle: next, written: yield* Fiber.join(next.fiber) })
    }
    if (settings.waitForReplicas !== undefined) yield* waitReplicas(w, settings.waitForReplicas)
    const positions = group.map(({ handle }) => batchPosition(settings, handle.batch))
    let checkpoint = positions[0]!
    for (const p of positions) checkpoint = Position.max(checkpoint, p)
    const committing = underFence(w, w.checkpoints.commit(settings.pipeline, checkpoint))
    yield* w.traced ? checkpointSpan(w, group, checkpoint, committing) : committing
    for (const { handle } of group) Marks.settleBatch(w.book, handle.self)
    w.inFlight -= group.length
    yield* w.report.inFlight(w.inFlight)
    let events = 0
    let heldBytes = 0
    for (const { handle } of group) {
      events += handle.batch.length
      for (const e of handle.batch) heldBytes += held(w, e)
    }
    w.uncommitted -= events
    yield* Semaphore.release(w.window, events)
    yield* Semaphore.release(w.buffered, heldBytes)
    const committedAt = yield* Clock.currentTimeMillis
    const committed = group.map(({ handle: { batch }, written }, i): CommittedBatch => {
      let bytes = 0
      let deadLettered = 0
      for (const e of batch) {
        bytes += e.bytes
        if (e.deadLetter) deadLettered++
      }
      return {
        events: batch.length,
        bytes,
        deadLettered,
        position: positions[i]!,
        checkpoint,
        streams: [...written.results.values()],
        attempts: written.attempts,
        durationMs: committedAt - written.startedAt,
        enqueuedAt: batch[0]!.arrivedAt
      }
    })
    yield* w.report.committed(committed, checkpoint, committedAt)
    return committed as unknown as Arr.NonEmptyReadonlyArray<CommittedBatch>
  })

/** The span of a checkpoint commit, linked to the write spans of the batches it covers. */
const checkpointSpan = <E, A, X>(
  w: Writer<E>,
  group: ReadonlyArray<{ readonly handle: Handle }>,
  checkpoint: Position.Position,
  committing: Effect.Effect<A, X>
) => {
  let entries = 0
  const links: Array<Tracer.SpanLink> = []
  for (const { handle } of group) {
    entries += handle.batch.length
    if (handle.span !== undefined) links.push({ span: handle.span, attributes: {} })
  }
  return Effect.withSpan(committing, "redflow.sink.checkpoint", {
    attributes: {
      "redflow.pipeline": w.settings.pipeline,
      "redflow.position": checkpoint,
      "redflow.batches": group.length,
      "redflow.entries": entries
    },
    links
  })
}

// ---------------------------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------------------------

/** The persistence settings could not be read: said once; with `require` the sink does not start. */
const unverified = (settings: SinkSettings, error: RedisError) =>
  settings.durability === "require"
    ? Effect.fail(error)
    : Effect.logWarning(`could not read Redis's persistence settings (${error._tag}: ${error.message})`).pipe(
        Effect.annotateLogs({ pipeline: settings.pipeline })
      )

/** The condition a standby shows in health while it waits for the lease. */
const standbyKey = (pipeline: string) => `${pipeline}/lease`

/**
 * Waits for the pipeline's lease (a standby waits here, before the sink has read anything) and holds it until the
 * sink's scope closes. The fence key lives in the pipeline's hash slot and each stream in its own, so on a cluster
 * one script call cannot check the fence with the stream: refused there.
 */
const holdLease = (settings: SinkSettings, redis: RedisConnectionService) =>
  Effect.gen(function* () {
    const { pipeline } = settings
    const lease = settings.lease!
    if (redis.topology === "cluster") {
      return yield* ConfigError.make(
        SinkOptions.COMPONENT,
        ["lease"],
        "is not supported on a Redis Cluster: the fence key and the streams live in different hash slots, so the " +
          "write script cannot check the fencing token in the same call",
        "use a standalone or Sentinel Redis for a pipeline with a standby, or run without lease"
      )
    }
    const health = yield* Effect.serviceOption(PipelineHealth.PipelineHealth)
    const holder = yield* PipelineLease.current(pipeline).pipe(Effect.orElseSucceed(() => Option.none()))
    if (Option.isSome(health) && Option.isSome(holder)) {
      yield* health.value.raise(standbyKey(pipeline), `standby: the lease is held by ${holder.value.holder}`, {
        blocksReadiness: false
      })
    }
    const held = yield* PipelineLease.acquire({
      pipeline,
      ttl: Duration.millis(lease.ttlMs),
      renewEvery: Duration.millis(lease.renewEveryMs)
    })
    if (Option.isSome(health)) yield* health.value.clear(standbyKey(pipeline))
    return held
  })

/**
 * Starts the write pipeline in the current scope. `feed` pushes the source's chunks through `offer`; the returned
 * effect yields the next committed batches, or fails with `Cause.Done` once the source ended and all is written.
 */
export const start = <E, R>(
  settings: SinkSettings,
  feed: (offer: (chunk: ReadonlyArray<CdcEvent.CdcEvent>) => Effect.Effect<void>) => Effect.Effect<void, E, R>
) =>
  Effect.gen(function* () {
    const redis = yield* RedisConnection
    const checkpoints = yield* CheckpointStore
    const scope = yield* Scope.Scope
    const policies = FailurePolicy.make(settings.policies, redis.topology)
    const report = yield* Report.make(settings, redis, policies)
    const book = Marks.makeBook(settings, redis, report)
    // Before the first call of the write script, even a check: a standby must not learn marks the holder still moves.
    const lease = settings.lease === undefined ? undefined : yield* holdLease(settings, redis)
    if (lease !== undefined) book.fence = { key: PipelineLease.fenceKey(settings.pipeline), token: lease.token }
    yield* Marks.checkFixedStreams(book)
    // Redis answered the first check, so a failure here is about CONFIG, not reachability: only `require` stops.
    if (settings.durability !== "ignore") {
      yield* Durability.check({ require: settings.durability === "require", pipeline: settings.pipeline }).pipe(
        Effect.catchTags({
          RedisUnavailable: (e) => unverified(settings, e),
          RedisTimeout: (e) => unverified(settings, e),
          RedisCommandError: (e) => unverified(settings, e)
        })
      )
    }
    // In exactly-once, a mark past the checkpoint makes the run skip events up to the mark: it is verified.
    if (settings.guarantee === "exactly-once") book.resumedFrom = yield* checkpoints.load(settings.pipeline)

    const streams = new Set<string>()
    const retention =
      settings.retention === undefined
        ? undefined
        : yield* StreamRetention.make({ pipeline: settings.pipeline, trim: settings.retention })
    const gates: Array<Gate.WriteGate> = []
    if (settings.memoryGuard !== undefined) {
      gates.push(yield* MemoryGuard.make({ ...settings.memoryGuard, pipeline: settings.pipeline }))
    }
    if (retention !== undefined) gates.push(retention.gate)
    if (settings.maxLag !== undefined) {
      gates.push(
        yield* StreamRetention.lagGate({ pipeline: settings.pipeline, maxLag: settings.maxLag, streams: () => streams })
      )
    }

    const traced = (yield* Tracer.Tracer) !== Tracer.nativeTracer
    const w: Writer<E> = {
      settings,
      redis,
      checkpoints,
      scope,
      traced,
      policies,
      report,
      book,
      gate: Gate.all(gates.filter((g) => g !== Gate.open)),
      retention,
      streams,
      prepare: Prepare.make(settings, traced),
      queue: yield* Queue.bounded<Prepare.Entry, E | Cause.Done>(settings.maxEvents),
      buffered: yield* Semaphore.make(settings.maxBufferedBytes),
      window: yield* Semaphore.make(settings.maxEvents),
      writes: yield* Semaphore.make(WRITES_PER_WINDOW),
      handles: yield* Queue.unbounded<
        Handle,
        E | Cause.Done | RedisError | Marks.HighWaterMarkError | PipelineLease.LeaseFenced
      >(),
      batchEvents: Math.max(1, Math.ceil(settings.maxEvents / WRITES_PER_WINDOW)),
      leftover: [],
      inFlight: 0,
      uncommitted: 0,
      pressure: undefined,
      lookahead: [],
      lastCheckpointAt: Number.NEGATIVE_INFINITY
    }

    yield* feed((chunk) => offerSlice(w, chunk, 0)).pipe(
      Effect.onExit((exit) => (Exit.isSuccess(exit) ? Queue.end(w.queue) : Queue.failCause(w.queue, exit.cause))),
      Effect.forkIn(scope)
    )
    yield* sendNext(w).pipe(
      Effect.forever,
      Effect.onExit((exit) => (Exit.isSuccess(exit) ? Queue.end(w.handles) : Queue.failCause(w.handles, exit.cause))),
      Effect.forkIn(scope)
    )
    // A lease lost at a renewal stops the sink at once; a write sent meanwhile is refused by the fence.
    return lease === undefined ? commit(w) : Effect.raceFirst(commit(w), lease.lost)
  })
