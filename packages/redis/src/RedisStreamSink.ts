/**
 * The Redis Streams sink: an Effect `Sink` of {@link CdcEvent}s that writes them to Redis Streams in batches and
 * moves the checkpoint only after every entry of a batch is acknowledged.
 *
 * Batching is group commit: events are encoded as they arrive and wait in a bounded queue; the writer takes
 * everything waiting (up to the batch bounds) the moment the previous batch is acknowledged. An idle pipeline
 * therefore ships each event at once, a busy one ships large batches, and while Redis is down the queue fills and
 * the source is no longer pulled (backpressure, bounded memory).
 *
 * Each batch is one round trip: per target stream, one script call carrying all its entries (see
 * `internal/scripts.ts`), all of them pipelined. `at-least-once` writes every entry; `exactly-once` skips entries
 * at or below the stream's high-water mark, so a retry after an unknown outcome (timeout, dropped connection,
 * crash before the checkpoint) never duplicates.
 *
 * @example
 * ```ts
 * const program = SyntheticSource.make({ count: 10_000 }).pipe(
 *   Stream.run(RedisStreamSink.make({ stream: "cdc.${source.db}.${source.table}" }))
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as Arr from "effect/Array"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Pull from "effect/Pull"
import * as Queue from "effect/Queue"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import * as CdcEvent from "@redflow/core/CdcEvent"
import * as Metrics from "@redflow/core/Metrics"
import * as Position from "@redflow/core/Position"
import { CheckpointStore, type CheckpointError } from "@redflow/core/CheckpointStore"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as Envelope from "@redflow/core/Envelope"
import * as Routing from "@redflow/core/Routing"
import * as FailurePolicy from "./FailurePolicy.ts"
import { Cluster } from "ioredis"
import calculateSlot from "cluster-key-slot"
import { type Client, RedisConnection, type RedisConnectionService } from "./RedisConnection.ts"
import { classify, RedisAuthFailed, type RedisError, RedisReadOnly } from "./RedisError.ts"
import { highWaterKey } from "./internal/highWater.ts"
import * as Commands from "./internal/commands.ts"
import * as Scripts from "./internal/scripts.ts"

// ---------------------------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------------------------

export interface BatchOptions {
  /**
   * The window: most events written but not yet checkpointed (what a crash can make at-least-once replay). Writes
   * carry a quarter of it each, so up to four are in flight. Default 4000, chosen by measurement (bench/RESULTS.md).
   */
  readonly maxEvents?: number
  /**
   * Most encoded bytes in one batch. Default 4 MiB. An event whose encoding alone is larger goes to the dead-letter
   * stream (without its body), as no batch could carry it.
   */
  readonly maxBytes?: number
  /**
   * Most encoded bytes held at once: waiting for a write, and written but not yet checkpointed. With `maxEvents`, it
   * bounds the sink's memory whatever the events' size; when it is reached the source is no longer pulled. At least
   * `maxBytes`. Default 8 × `maxBytes` (32 MiB).
   */
  readonly maxBufferedBytes?: number
  /**
   * Extra time to wait for a batch to fill once its first event is there. Default 0: group commit alone, which
   * gives the lowest latency; a linger only helps when Redis round trips are expensive (a remote server).
   */
  readonly linger?: Duration.Input
  /**
   * Least time between the starts of two checkpoint writes. Default 50 ms. Batches written meanwhile share the next
   * checkpoint, so a busy pipeline with small batches (a transaction each, at 1,000 a second) writes about 20
   * checkpoints a second instead of one per batch: a file checkpoint costs about a millisecond of CPU and two fsyncs
   * each. Writes to Redis do not wait for it: only the checkpoint, and what follows it (a source's acknowledgement,
   * room in the window), lags by up to this much, and not at all once half the window waits for a checkpoint. A
   * checkpoint after a quiet spell is written at once. 0 checkpoints every batch as soon as it is written.
   */
  readonly checkpointInterval?: Duration.Input
}

export interface TrimOptions {
  /** Keep about this many entries per stream (`MAXLEN ~`), or exactly this many with `exact`. */
  readonly maxLen?: number
  /** Drop entries with ids below this one (`MINID`), or older than `maxAge` at each batch. */
  readonly minId?: string | { readonly maxAge: Duration.Input }
  /** Exact trimming (`=`) instead of the default approximate (`~`), which is much cheaper. */
  readonly exact?: boolean
}

export interface Options {
  /** Stream name template, e.g. `orders.events` or `cdc.${source.db}.${source.table}`, or per-table templates. */
  readonly stream: string | { readonly default: string; readonly tables?: Readonly<Record<string, string>> }
  /** Optional entry `key` template, e.g. `${after.id}`. */
  readonly key?: string
  /** Envelope of the `event` field. Default `native`. */
  readonly envelope?: Envelope.Format
  /** Default `at-least-once`. */
  readonly guarantee?: "at-least-once" | "exactly-once"
  /** Pipeline name: the checkpoint key, the high-water field and the `pipeline` metric label. Default `redflow`. */
  readonly pipeline?: string
  /** The `sink` metric label. Default `redis`. */
  readonly sinkName?: string
  readonly batch?: BatchOptions
  readonly trim?: TrimOptions
  /** Where events that cannot be routed or encoded go, with the reason. Default `redflow.dead-letter`. */
  readonly deadLetterStream?: string
  /** Overrides of the failure-policy table. */
  readonly policies?: Partial<FailurePolicy.FailurePolicies>
  /** WAIT for this many replicas (up to `timeout`) after each batch, before the checkpoint moves. */
  readonly waitForReplicas?: { readonly replicas: number; readonly timeout: Duration.Input }
  /**
   * What to do when a stream's high-water mark goes back (or vanishes, or moves) under the running sink: Redis lost
   * writes it had acknowledged (a restart without persistence, an AOF that missed its last second, a failover to a
   * replica that was behind), so the checkpoint is past events that are no longer in Redis. `fail` (default) stops
   * the sink with a {@link HighWaterMarkError}; `continue` counts it (`sink_data_loss_total`), reports it in health,
   * logs it as an error and writes on from the mark it found (the lost events stay lost unless you rewind).
   */
  readonly onDataLoss?: "fail" | "continue"
}

/** Configuration that cannot work, found before anything is written. */
export class SinkConfigError extends Schema.TaggedError<SinkConfigError>()("SinkConfigError", {
  field: Schema.String,
  message: Schema.String
}) {}

/**
 * A high-water mark the sink cannot trust; it stops rather than skip events by it or write past a loss unnoticed.
 * - `malformed`: the mark is not `<position> <entry id>` of this pipeline's width;
 * - `unverified`: the mark lies past the checkpoint and the stream does not hold the entry it names with that
 *   position, so exactly-once would skip events no run wrote;
 * - `lost`: the mark went back, or vanished, while the sink was writing: Redis lost acknowledged writes;
 * - `moved`: the mark moved ahead of what this sink wrote: another writer uses the same pipeline name.
 */
export class HighWaterMarkError extends Schema.TaggedError<HighWaterMarkError>()("HighWaterMarkError", {
  reason: Schema.Literals(["malformed", "unverified", "lost", "moved"]),
  stream: Schema.String,
  /** The high-water hash and its field (the pipeline). */
  key: Schema.String,
  field: Schema.String,
  /** What the mark holds ("" when it is absent). */
  found: Schema.String,
  /** What the sink expected it to hold ("" when nothing, or not known). */
  expected: Schema.String,
  message: Schema.String
}) {}

export type SinkError = RedisError | CheckpointError | SinkConfigError | HighWaterMarkError

export interface Config {
  readonly pipeline: string
  readonly sinkName: string
  readonly guarantee: "at-least-once" | "exactly-once"
  readonly envelope: Envelope.Envelope
  readonly route: Routing.Router
  readonly key: Routing.Template | undefined
  readonly maxEvents: number
  readonly maxBytes: number
  readonly maxBufferedBytes: number
  readonly lingerMs: number
  readonly checkpointIntervalMs: number
  readonly trim: {
    readonly strategy: "" | "MAXLEN" | "MINID"
    readonly operator: "~" | "="
    readonly threshold: (now: number) => string
  }
  readonly deadLetterStream: string
  readonly policies: Partial<FailurePolicy.FailurePolicies>
  readonly waitForReplicas: { readonly replicas: number; readonly timeoutMs: number } | undefined
  readonly onDataLoss: "fail" | "continue"
  /** Stream names known before any event: constant templates and the dead-letter stream, checked at start. */
  readonly fixedStreams: ReadonlyArray<string>
}

const positiveInt = (field: string, value: number | undefined, fallback: number, hint: string) => {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new SinkConfigError({ field, message: `${field} must be a positive integer (${hint}), got ${value}` })
  }
  return value
}

const durationMs = (field: string, value: Duration.Input | undefined, fallback: number) => {
  if (value === undefined) return fallback
  const d = Duration.fromInput(value)
  if (Option.isNone(d) || !Duration.isFinite(d.value) || Duration.toMillis(d.value) < 0) {
    throw new SinkConfigError({
      field,
      message: `${field} must be a finite duration such as "5 millis", got ${String(value)}`
    })
  }
  return Duration.toMillis(d.value)
}

const STREAM_ID = /^\d+(-\d+)?$/

const routing = <A>(field: string, compile: () => A): A => {
  try {
    return compile()
  } catch (e) {
    if (e instanceof Routing.RoutingConfigError) throw new SinkConfigError({ field, message: `${field}: ${e.message}` })
    throw e
  }
}

const tableRoutes = (route: Routing.Router) =>
  [...route.tables].map(([table, template]) => [`stream.tables[${JSON.stringify(table)}]`, template] as const)

/** The stream names a router gives whatever the event: its constant templates. */
const fixedStreams = (route: Routing.Router): Array<string> =>
  [route.default, ...route.tables.values()].filter((t) => t.isConstant).map((t) => t.template)

/**
 * Validates options into a {@link Config}. Every rejection names the option and what it expects.
 */
export const validate = (options: Options): Effect.Effect<Config, SinkConfigError> =>
  Effect.try({
    try: (): Config => {
      const guarantee = options.guarantee ?? "at-least-once"
      if (guarantee !== "at-least-once" && guarantee !== "exactly-once") {
        throw new SinkConfigError({
          field: "guarantee",
          message: `guarantee must be "at-least-once" or "exactly-once", got ${JSON.stringify(guarantee)}`
        })
      }
      const format = options.envelope ?? "native"
      if (!Envelope.formats.includes(format)) {
        throw new SinkConfigError({
          field: "envelope",
          message: `envelope must be one of ${Envelope.formats.join(", ")}, got ${JSON.stringify(format)}`
        })
      }
      const route = routing("stream", () => Routing.makeSync(options.stream))
      // A constant name that no high-water key can share a slot with would dead-letter every event at run time.
      for (const [field, template] of [["stream", route.default] as const, ...tableRoutes(route)]) {
        if (template.isConstant && highWaterKey(template.template) === undefined) {
          throw new SinkConfigError({
            field,
            message:
              `${field}: stream name "${template.template}" has "}" without a hash tag before it, so no high-water ` +
              `key can live in its hash slot; use a name without "}", or give it a hash tag such as "{orders}.events"`
          })
        }
      }
      const key = options.key === undefined ? undefined : routing("key", () => Routing.compileSync(options.key!))
      const maxEvents = positiveInt("batch.maxEvents", options.batch?.maxEvents, 4000, "events per batch, e.g. 4000")
      const maxBytes = positiveInt(
        "batch.maxBytes",
        options.batch?.maxBytes,
        4 * 1024 * 1024,
        "bytes per batch, e.g. 4194304"
      )
      const maxBufferedBytes = positiveInt(
        "batch.maxBufferedBytes",
        options.batch?.maxBufferedBytes,
        8 * maxBytes,
        "encoded bytes queued and in flight, e.g. 33554432"
      )
      if (maxBufferedBytes < maxBytes) {
        throw new SinkConfigError({
          field: "batch.maxBufferedBytes",
          message: `batch.maxBufferedBytes (${maxBufferedBytes}) must be at least batch.maxBytes (${maxBytes}), or no full batch could be held; raise it or lower batch.maxBytes`
        })
      }
      const lingerMs = durationMs("batch.linger", options.batch?.linger, 0)
      const checkpointIntervalMs = durationMs("batch.checkpointInterval", options.batch?.checkpointInterval, 50)

      const t = options.trim ?? {}
      if (t.maxLen !== undefined && t.minId !== undefined) {
        throw new SinkConfigError({ field: "trim", message: "trim takes maxLen or minId, not both" })
      }
      const operator = t.exact === true ? "=" : "~"
      let trim: Config["trim"] = { strategy: "", operator, threshold: () => "" }
      if (t.maxLen !== undefined) {
        const maxLen = positiveInt("trim.maxLen", t.maxLen, 0, "entries to keep per stream")
        trim = { strategy: "MAXLEN", operator, threshold: () => String(maxLen) }
      } else if (typeof t.minId === "string") {
        if (!STREAM_ID.test(t.minId)) {
          throw new SinkConfigError({
            field: "trim.minId",
            message: `trim.minId must be a stream id such as "1700000000000-0", got ${JSON.stringify(t.minId)}`
          })
        }
        const minId = t.minId
        trim = { strategy: "MINID", operator, threshold: () => minId }
      } else if (t.minId !== undefined) {
        const maxAge = durationMs("trim.minId.maxAge", t.minId.maxAge, 0)
        if (maxAge <= 0)
          throw new SinkConfigError({
            field: "trim.minId.maxAge",
            message: "trim.minId.maxAge must be a positive duration"
          })
        trim = { strategy: "MINID", operator, threshold: (now) => String(Math.max(0, Math.floor(now - maxAge))) }
      }

      const deadLetterStream = options.deadLetterStream ?? "redflow.dead-letter"
      if (deadLetterStream === "")
        throw new SinkConfigError({ field: "deadLetterStream", message: "deadLetterStream must not be empty" })
      if (highWaterKey(deadLetterStream) === undefined) {
        throw new SinkConfigError({
          field: "deadLetterStream",
          message: `deadLetterStream "${deadLetterStream}" has "}" without a hash tag: no high-water key can share its slot`
        })
      }
      const pipeline = options.pipeline ?? "redflow"
      const onDataLoss = options.onDataLoss ?? "fail"
      if (onDataLoss !== "fail" && onDataLoss !== "continue") {
        throw new SinkConfigError({
          field: "onDataLoss",
          message: `onDataLoss must be "fail" or "continue", got ${JSON.stringify(onDataLoss)}`
        })
      }
      if (pipeline === "") throw new SinkConfigError({ field: "pipeline", message: "pipeline must not be empty" })

      let waitForReplicas: Config["waitForReplicas"]
      if (options.waitForReplicas !== undefined) {
        const replicas = positiveInt(
          "waitForReplicas.replicas",
          options.waitForReplicas.replicas,
          1,
          "replicas that must acknowledge each batch"
        )
        const timeoutMs = durationMs("waitForReplicas.timeout", options.waitForReplicas.timeout, 1000)
        if (timeoutMs <= 0)
          throw new SinkConfigError({
            field: "waitForReplicas.timeout",
            message: "waitForReplicas.timeout must be a positive duration"
          })
        waitForReplicas = { replicas, timeoutMs }
      }

      return {
        pipeline,
        sinkName: options.sinkName ?? "redis",
        guarantee,
        envelope: Envelope.make(format),
        route,
        key,
        maxEvents,
        maxBytes,
        maxBufferedBytes,
        lingerMs,
        checkpointIntervalMs,
        trim,
        deadLetterStream,
        policies: options.policies ?? {},
        waitForReplicas,
        onDataLoss,
        fixedStreams: [...new Set([...fixedStreams(route), deadLetterStream])]
      }
    },
    catch: (e) =>
      e instanceof SinkConfigError
        ? e
        : new SinkConfigError({ field: "options", message: String((e as Error)?.message ?? e) })
  })

// ---------------------------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------------------------

export interface StreamResult {
  readonly stream: string
  /** Entries appended. */
  readonly written: number
  /** Entries skipped as already written (exactly-once after a retry or a restart). */
  readonly skipped: number
  /** Id of the last entry appended, or "" when none. */
  readonly lastId: string
}

/** One batch, acknowledged by Redis and checkpointed. */
export interface CommittedBatch {
  readonly events: number
  readonly bytes: number
  readonly deadLettered: number
  /** The position of the batch's last event. */
  readonly position: Position.Position
  /**
   * The checkpoint committed for this batch: its own position, or a later one when batches written behind it shared
   * the same checkpoint write.
   */
  readonly checkpoint: Position.Position
  readonly streams: ReadonlyArray<StreamResult>
  /** Tries it took (1 when nothing failed). */
  readonly attempts: number
  /** From the batch leaving the queue to its checkpoint, in milliseconds. */
  readonly durationMs: number
  /** Creation time (ms) of the oldest event of the batch, as seen by the sink when it arrived. */
  readonly enqueuedAt: number
}

/** What a finished sink reports. */
export interface Summary {
  readonly events: number
  readonly batches: number
  readonly bytes: number
  readonly written: number
  readonly skipped: number
  readonly deadLettered: number
  readonly position: Option.Option<Position.Position>
}

// ---------------------------------------------------------------------------------------------------------------
// Preparing entries (on the producing fiber, overlapping the previous batch's write)
// ---------------------------------------------------------------------------------------------------------------

interface Entry {
  readonly stream: string
  /** The stream's high-water key (same hash slot). */
  readonly markKey: string
  readonly position: Position.Position
  /**
   * position, id, op, table, key, event, error: the script's per-entry arguments. Emptied once copied into a write's
   * command, so the encoded event is not held longer than the write needs it (see internal/commands.ts).
   */
  readonly args: Array<string>
  readonly bytes: number
  readonly deadLetter: boolean
  readonly arrivedAt: number
}

/**
 * An entry made by a constructor, with its arguments in an array filled by index, rather than from object and array
 * literals: V8 tracks a literal's allocation site, and entries wait in the queue long enough that it decided to
 * allocate them straight in the old generation. Their encoded events, referenced from there, then all outlived the
 * young generation: about 800 bytes per event promoted, most of the promoted garbage in the PostgreSQL memory bench
 * (bench/RESULTS.md). Entries made this way die young.
 */
class EntryImpl implements Entry {
  readonly stream: string
  readonly markKey: string
  readonly position: Position.Position
  readonly args: Array<string>
  readonly bytes: number
  readonly deadLetter: boolean
  readonly arrivedAt: number
  constructor(
    stream: string,
    markKey: string,
    position: Position.Position,
    args: Array<string>,
    bytes: number,
    deadLetter: boolean,
    arrivedAt: number
  ) {
    this.stream = stream
    this.markKey = markKey
    this.position = position
    this.args = args
    this.bytes = bytes
    this.deadLetter = deadLetter
    this.arrivedAt = arrivedAt
  }
}

/** What an entry costs besides its event and key: its other fields (position, id, op, table) and their framing. */
const ENTRY_OVERHEAD = 64

const makePrepare = (config: Config) => {
  let previous: Position.Position | undefined
  // Stream names repeat: find each one's high-water key once.
  const markKeys = new Map<string, string | undefined>()
  const markKeyOf = (stream: string) => {
    if (markKeys.has(stream)) return markKeys.get(stream)
    const key = highWaterKey(stream)
    markKeys.set(stream, key)
    return key
  }
  const deadLetterMarkKey = highWaterKey(config.deadLetterStream)!
  const deadLetter = (event: CdcEvent.CdcEvent, why: string, encoded: string | undefined, now: number): Entry => {
    let reason = why
    let body = encoded
    if (body === undefined) {
      try {
        body = JSON.stringify(event)
      } catch {
        body = JSON.stringify({ id: event.id, position: event.position })
      }
    }
    // A dead-letter entry must fit a batch too: an event too large to write is named, not copied.
    if (body.length + reason.length + ENTRY_OVERHEAD > config.maxBytes) {
      reason = `${reason} (body left out: ${body.length} bytes)`
      body = JSON.stringify({ id: event.id, position: event.position, op: event.op, table: event.source.table })
    }
    const args = [event.position, event.id, event.op, event.source.table, "", body, reason]
    return {
      stream: config.deadLetterStream,
      markKey: deadLetterMarkKey,
      position: event.position,
      args,
      bytes: body.length + reason.length + ENTRY_OVERHEAD,
      deadLetter: true,
      arrivedAt: now
    }
  }
  return (event: CdcEvent.CdcEvent, now: number): Entry => {
    if (config.guarantee === "exactly-once" && previous !== undefined && !Position.isAfter(event.position, previous)) {
      return deadLetter(
        event,
        `position ${event.position} is not after the previous event's ${previous}; exactly-once needs increasing positions`,
        undefined,
        now
      )
    }
    previous = event.position
    let encoded: string
    try {
      encoded = config.envelope.encode(event)
    } catch (e) {
      return deadLetter(event, `cannot encode the event: ${(e as Error)?.message ?? e}`, undefined, now)
    }
    const routed = config.route.render(event)
    if (Result.isFailure(routed)) return deadLetter(event, routed.failure.message, encoded, now)
    const stream = routed.success
    let key = ""
    // An event without a row image (a truncate) has no key to give: it is written without one. A row whose key
    // cannot be resolved is a routing problem and goes to the dead-letter stream.
    if (config.key !== undefined && (event.after !== null || event.before !== null)) {
      const k = config.key.render(event)
      if (Result.isFailure(k)) return deadLetter(event, k.failure.message, encoded, now)
      key = k.success
    }
    const markKey = markKeyOf(stream)
    if (markKey === undefined) {
      return deadLetter(
        event,
        `stream name "${stream}" has "}" without a hash tag; the sink cannot place its high-water mark in the stream's slot`,
        encoded,
        now
      )
    }
    const bytes = encoded.length + key.length + ENTRY_OVERHEAD
    if (bytes > config.maxBytes) {
      return deadLetter(
        event,
        `event is ${bytes} bytes encoded, more than batch.maxBytes (${config.maxBytes}): no batch can carry it to ` +
          `stream "${stream}"; raise batch.maxBytes (and batch.maxBufferedBytes) or make the event smaller`,
        encoded,
        now
      )
    }
    const args = new Array<string>(7)
    args[0] = event.position
    args[1] = event.id
    args[2] = event.op
    args[3] = event.source.table
    args[4] = key
    args[5] = encoded
    args[6] = ""
    return new EntryImpl(stream, markKey, event.position, args, bytes, false, now)
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Writing one batch
// ---------------------------------------------------------------------------------------------------------------

/** written, skipped, lastId, and the mark found (see internal/scripts.ts). */
type ScriptReply = [number, number, string, string]

/**
 * Writes are cut at `maxEvents / WRITES_PER_WINDOW` events, so that several are in flight at once within the window
 * of `maxEvents` events written but not yet checkpointed: Redis works on one while the client checkpoints another and
 * encodes the next.
 */
const WRITES_PER_WINDOW = 4

/** A batch handed to Redis and not yet acknowledged. */
interface InFlight {
  /** Completed once every stream of the batch is written (before its checkpoint). */
  readonly written: Deferred.Deferred<void>
  /** The mark each of its writes leaves, by stream: unsettled until the batch is checkpointed. */
  readonly leaves: Array<readonly [stream: string, mark: Position.Position]>
}

/**
 * The marks this sink's writes leave that are not yet checkpointed, counted by stream. A write retried after a lost
 * reply may find one of them: its own (it applied), or a later write's, which applied after it (each write expects
 * the mark of the one before). Either means it applied. Any other mark moved under the sink.
 */
type Unsettled = Map<string, Map<Position.Position, number>>

const unsettle = (unsettled: Unsettled, stream: string, mark: Position.Position) => {
  let marks = unsettled.get(stream)
  if (marks === undefined) unsettled.set(stream, (marks = new Map()))
  marks.set(mark, (marks.get(mark) ?? 0) + 1)
}

const settle = (unsettled: Unsettled, stream: string, mark: Position.Position) => {
  const marks = unsettled.get(stream)
  const n = marks?.get(mark) ?? 0
  if (n > 1) marks!.set(mark, n - 1)
  else {
    marks?.delete(mark)
    if (marks?.size === 0) unsettled.delete(stream)
  }
}

/** One call of the script. */
interface ScriptCall {
  readonly stream: string
  /** The stream and its high-water hash. */
  readonly keys: ReadonlyArray<string>
  /** The script's ARGV; `argv[EXPECTED]` is the mark this call expects to find ("" for none). */
  readonly argv: Array<string>
}

/** A write: a stream's share of a batch. */
interface Command extends ScriptCall {
  /** The earlier batch still in flight that writes this stream too: this call expects the mark it leaves. */
  predecessor: InFlight | undefined
  /** The highest position among this call's entries. */
  readonly top: Position.Position
  /** The mark this call leaves: the larger of the one it expects and `top`. */
  leaves: Position.Position
}

const EXPECTED = Scripts.Header.expected

/**
 * Up to `max` items already in the queue, without waiting: none when it is empty or has ended (its next take reports
 * the end). `Queue.takeBetween(queue, 0, max)` is not that: it returns nothing even when items wait.
 */
const takeAvailable = <A, E>(queue: Queue.Dequeue<A, E>, max: number): Effect.Effect<ReadonlyArray<A>> =>
  Effect.flatMap(Queue.size(queue), (size) =>
    size > 0 ? Queue.takeBetween(queue, 1, max) : Effect.succeed([] as ReadonlyArray<A>)
  ).pipe(Effect.catchCause(() => Effect.succeed([] as ReadonlyArray<A>)))

/**
 * Most events, and about the most encoded bytes (the event that crosses it is kept), encoded between two yields of
 * the producing fiber: 64 small events, or a few large ones.
 */
const ENCODE_SLICE = 64
const ENCODE_SLICE_BYTES = 256 * 1024

/**
 * What the sink knows of each stream's mark: the position it has after the last batch sent to the stream ("" when
 * none), and that batch while it is in flight. A stream is entered on first contact (see `learnMarks`), before its
 * first write, so every write states the mark it expects.
 */
type Marks = Map<string, { readonly mark: Position.Position | ""; readonly by: InFlight | undefined }>

/** The script's header for a write, or for a check (no entries) with `mode: "check"`. */
const header = (config: Config, now: number, width: number, mode: "" | "check"): Array<string> => {
  const h = new Array<string>(Scripts.HEADER_ARITY)
  h[Scripts.Header.pipeline] = config.pipeline
  h[Scripts.Header.trimStrategy] = config.trim.strategy
  h[Scripts.Header.trimOperator] = config.trim.operator
  h[Scripts.Header.trimThreshold] = config.trim.threshold(now)
  h[Scripts.Header.expected] = ""
  h[Scripts.Header.skip] = config.guarantee === "exactly-once" ? "1" : ""
  h[Scripts.Header.width] = String(width)
  h[Scripts.Header.mode] = mode
  return h
}

const buildCommands = (
  config: Config,
  entries: ReadonlyArray<Entry>,
  now: number,
  marks: Marks,
  unsettled: Unsettled,
  self: InFlight
): Array<Command> => {
  const byStream = new Map<string, { argv: Array<string>; top: Position.Position; markKey: string }>()
  const base = header(config, now, entries[0]!.position.length, "")
  for (const entry of entries) {
    let group = byStream.get(entry.stream)
    if (group === undefined) {
      group = { argv: base.slice(), top: entry.position, markKey: entry.markKey }
      byStream.set(entry.stream, group)
    }
    for (const a of entry.args) group.argv.push(a)
    entry.args.length = 0
    group.top = Position.max(group.top, entry.position)
  }
  const commands: Array<Command> = []
  for (const [stream, { argv, top, markKey }] of byStream) {
    const prior = marks.get(stream)!
    const predecessor = prior.by !== undefined && !Deferred.isDoneUnsafe(prior.by.written) ? prior.by : undefined
    argv[EXPECTED] = prior.mark
    const leaves = prior.mark === "" ? top : Position.max(prior.mark, top)
    marks.set(stream, { mark: leaves, by: self })
    unsettle(unsettled, stream, leaves)
    self.leaves.push([stream, leaves])
    commands.push({ stream, keys: [stream, markKey], argv, predecessor, top, leaves })
  }
  return commands
}

const markLabel = (mark: string) => (mark === "" ? "no mark" : mark)

/** The error for a mark that is malformed, went back or moved, with what to do about it. */
const markError = (
  config: Config,
  call: { readonly stream: string; readonly keys: ReadonlyArray<string>; readonly argv: ReadonlyArray<string> },
  reason: "malformed" | "lost" | "moved",
  found: string
): HighWaterMarkError => {
  const key = call.keys[1]!
  const expected = call.argv[EXPECTED] ?? ""
  const where = `high-water mark ${key} (field ${JSON.stringify(config.pipeline)}) of stream ${call.stream}`
  const message =
    reason === "malformed"
      ? `${where} holds ${JSON.stringify(found)}, not "<position> <entry id>" with a position of this pipeline's ` +
        `width: it is corrupt, or was written by something else. The sink stopped rather than skip events by it. ` +
        `If the stream holds nothing past the checkpoint, delete it (HDEL ${key} ${config.pipeline}) and restart.`
      : reason === "lost"
        ? `${where} went back from ${markLabel(expected)} to ${markLabel(found)} while the sink was writing: Redis ` +
          `lost writes it had acknowledged (a restart without persistence, an AOF that missed its last writes, a ` +
          `failover to a replica that was behind), so the checkpoint is past events that are no longer in the ` +
          `stream. Rewind the checkpoint to ${found === "" ? "the start" : found} and restart to write them again, ` +
          `or set onDataLoss: "continue" to write on without them.`
        : `${where} moved from ${markLabel(expected)} to ${found} under the sink, past what it wrote: another ` +
          `writer uses pipeline ${JSON.stringify(config.pipeline)} on this stream. Give each writer its own pipeline ` +
          `name (one writer per stream and pipeline), or set onDataLoss: "continue" to write on from the new mark.`
  return new HighWaterMarkError({ reason, stream: call.stream, key, field: config.pipeline, found, expected, message })
}

/** The position an entry's `event` field carries, in any envelope (or a dead-letter body), if it carries one. */
const positionOf = (text: string): string | undefined => {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return undefined
  }
  const read = (o: unknown) =>
    typeof o === "object" && o !== null && typeof (o as { position?: unknown }).position === "string"
      ? (o as { position: string }).position
      : undefined
  const o = value as { payload?: unknown; data?: unknown } | null
  return read(o) ?? read(o?.payload) ?? read(o?.data)
}

/** Severity when several streams of one batch fail differently: the most final error decides the policy. */
const SEVERITY: Record<RedisError["_tag"], number> = {
  RedisAuthFailed: 7,
  RedisCommandError: 6,
  RedisReadOnly: 5,
  RedisOutOfMemory: 4,
  RedisClusterRedirect: 3,
  RedisTimeout: 2,
  RedisUnavailable: 1
}

/** The more final of two errors (the one whose policy decides for a write that failed in several ways). */
const worse = (a: RedisError | undefined, b: RedisError): RedisError =>
  a === undefined || SEVERITY[b._tag] > SEVERITY[a._tag] ? b : a

const isNoScript = (error: unknown) => error instanceof Error && /^NOSCRIPT\b/.test(error.message)

type Reply = Commands.Reply

const evalsha = (script: Scripts.Script, c: ScriptCall) =>
  Commands.make("evalsha", [script.sha, c.keys.length, ...c.keys, ...c.argv])

/** One pipeline: every command in one round trip. */
const pipelined = (
  client: Client,
  script: Scripts.Script,
  commands: ReadonlyArray<ScriptCall>
): Promise<Array<Reply>> =>
  Commands.pipeline(
    client,
    commands.map((c) => evalsha(script, c))
  )

/**
 * On a cluster, a pipeline must stay on one node: group the commands by the node that owns their slot (from the
 * client's slot map) and send one pipeline per node, all at once. A command whose slot moved meanwhile comes back
 * with MOVED/ASK and is retried alone after the slot map is refreshed.
 */
const perNode = async (
  cluster: Cluster,
  script: Scripts.Script,
  commands: ReadonlyArray<ScriptCall>
): Promise<Array<Reply>> => {
  const groups = new Map<string, Array<number>>()
  commands.forEach((c, i) => {
    const node = cluster.slots[calculateSlot(c.keys[0]!)]?.[0] ?? "?"
    const group = groups.get(node)
    if (group === undefined) groups.set(node, [i])
    else group.push(i)
  })
  const replies = new Array<Reply>(commands.length)
  await Promise.all(
    [...groups.values()].map(async (indexes) => {
      const group = indexes.map((i) => commands[i]!)
      const results = await pipelined(cluster, script, group).catch((e: Error) =>
        // The slot map changed between grouping and sending (a migration): ioredis refused the pipeline before
        // sending anything. Send each command alone; ioredis routes it and follows its redirects.
        /same slots allocation group/.test(e.message)
          ? Promise.all(group.map((c) => pipelined(cluster, script, [c]).then((r) => r[0]!)))
          : indexes.map((): Reply => [e, null])
      )
      indexes.forEach((commandIndex, k) => (replies[commandIndex] = results[k] ?? [new Error("no reply"), null]))
    })
  )
  return replies
}

/**
 * Redis refuses a script whose declared keys the user may not touch before it runs, without naming them
 * (`NOPERM … one of the keys used as arguments`): say which keys, and what the sink needs on them.
 */
const withKeys = (error: RedisError, call: ScriptCall): RedisError =>
  error._tag === "RedisAuthFailed" && error.code === "NOPERM" && !error.message.includes(call.stream)
    ? new RedisAuthFailed({
        ...error,
        message:
          `${error.message} (the sink's write script on stream ${call.stream} and its high-water key ` +
          `${call.keys[1]}: the user needs EVALSHA and EVAL, HGET and HSET on the high-water key, XADD on the stream)`
      })
    : error

/**
 * Sends the commands (one pipeline per node) and returns one reply or error per command. A node that lost its
 * script cache (restart, failover) answers NOSCRIPT without running anything: the source is sent once with EVAL,
 * which also caches it there.
 */
const send = (
  redis: RedisConnectionService,
  script: Scripts.Script,
  commands: ReadonlyArray<ScriptCall>
): Effect.Effect<Array<ScriptReply | RedisError>, RedisError> =>
  redis.run(async (client): Promise<Array<ScriptReply | RedisError>> => {
    const results =
      client instanceof Cluster ? await perNode(client, script, commands) : await pipelined(client, script, commands)
    const out: Array<ScriptReply | RedisError> = []
    let redirected = false
    for (let i = 0; i < commands.length; i++) {
      let [err, reply] = results[i] ?? [new Error("no reply"), null]
      if (isNoScript(err)) {
        const c = commands[i]!
        try {
          reply = await Commands.send(
            client,
            Commands.make("eval", [script.source, c.keys.length, ...c.keys, ...c.argv])
          )
          err = null
        } catch (e) {
          err = e as Error
        }
      }
      const result = err
        ? withKeys(classify(err, { command: "EVALSHA", key: commands[i]!.stream }), commands[i]!)
        : (reply as ScriptReply)
      if (!Array.isArray(result) && result._tag === "RedisClusterRedirect") redirected = true
      out.push(result)
    }
    if (redirected && client instanceof Cluster) client.refreshSlotsCache()
    return out
  })

// ---------------------------------------------------------------------------------------------------------------
// The pipeline: producer fiber → bounded queue → writer
// ---------------------------------------------------------------------------------------------------------------

/**
 * Starts the write pipeline in the current scope. `feed` pushes the source's chunks through `offer`; the returned
 * effect yields the next committed batch, or fails with `Cause.Done` once the source ended and all is written.
 */
const start = <E, R>(
  config: Config,
  feed: (offer: (chunk: ReadonlyArray<CdcEvent.CdcEvent>) => Effect.Effect<void>) => Effect.Effect<void, E, R>
) =>
  Effect.gen(function* () {
    const redis = yield* RedisConnection
    const checkpoint = yield* CheckpointStore
    const scope = yield* Scope.Scope
    const policies = FailurePolicy.make(config.policies, redis.topology)
    const prepare = makePrepare(config)
    const attributes = Metrics.sinkAttributes(config.pipeline, config.sinkName)
    const metric = {
      events: Metric.withAttributes(Metrics.sinkEvents, attributes),
      batches: Metric.withAttributes(Metrics.sinkBatches, attributes),
      latency: Metric.withAttributes(Metrics.sinkLatency, attributes),
      stage: Metric.withAttributes(Metrics.stageLatency, { pipeline: config.pipeline, stage: "sink" }),
      bytes: Metric.withAttributes(Metrics.sinkBytes, attributes),
      deadLettered: Metric.withAttributes(Metrics.sinkDeadLettered, attributes),
      inFlight: Metric.withAttributes(Metrics.sinkInFlight, attributes),
      checkpoint: Metric.withAttributes(Metrics.checkpointSequence, attributes),
      checkpointAt: Metric.withAttributes(Metrics.checkpointTimestamp, attributes)
    }
    const onRetry = (error: RedisError) =>
      Metric.update(Metric.withAttributes(Metrics.sinkRetries, { ...attributes, reason: error._tag }), 1)
    // When the application tracks health, the component named after the pipeline (what `track(pipeline)` reports)
    // is `retrying` (not ready) from a failed write until a write goes through again.
    const health = yield* Effect.serviceOption(PipelineHealth.PipelineHealth)
    const component = config.pipeline
    let failing = false
    const reportRetrying = (error: RedisError) =>
      Option.isSome(health)
        ? Effect.suspend(() => {
            failing = true
            return health.value.retrying(component, `${error._tag}: ${error.message}`)
          })
        : Effect.void
    const onError = (error: RedisError) =>
      Metric.update(Metric.withAttributes(Metrics.sinkErrors, { ...attributes, kind: error._tag }), 1).pipe(
        Effect.andThen(reportRetrying(error))
      )
    const onWritten = Effect.suspend(() => {
      if (!failing || Option.isNone(health)) return Effect.void
      failing = false
      return health.value.recovered(component)
    })
    /** A Redis call retried by the failure policies; each failure is logged, counted and shown in health. */
    const retried = <A, X>(
      what: string,
      annotations: () => Record<string, unknown>,
      effect: Effect.Effect<A, RedisError, X>
    ) =>
      effect.pipe(
        Effect.tapError((error) =>
          Effect.logWarning(`${what} failed: ${error._tag}: ${error.message}`).pipe(
            Effect.annotateLogs({ pipeline: config.pipeline, ...annotations() }),
            Effect.andThen(onError(error))
          )
        ),
        // Backoff by the policies, cut short when the connection comes back (see FailurePolicy.retryWaking).
        (tried) => FailurePolicy.retryWaking(tried, policies, redis.nextReconnect, onRetry),
        Effect.mapError((error) => explainGiveUp(redis, error))
      )
    const marks: Marks = new Map()
    const unsettled: Unsettled = new Map()
    const onDataLoss = (stream: string, error: HighWaterMarkError) =>
      Metric.update(Metric.withAttributes(Metrics.sinkDataLoss, { ...attributes, stream }), 1).pipe(
        Effect.andThen(
          Effect.logError(
            config.onDataLoss === "fail" ? error.message : `${error.message} (onDataLoss: "continue": writing on)`
          )
        ),
        Effect.andThen(
          Option.isSome(health) ? health.value.recordError(component, `data loss: ${error.message}`) : Effect.void
        )
      )

    /**
     * Runs check-mode calls of the script (permissions, the mark read and its form checked, nothing written), with
     * the failure policies; a malformed mark is returned, as no retry mends it.
     */
    const check = (calls: ReadonlyArray<ScriptCall>) =>
      Effect.gen(function* () {
        const replies = yield* send(redis, Scripts.write, calls)
        const out: Array<ScriptReply> = []
        let worst: RedisError | undefined
        for (let i = 0; i < calls.length; i++) {
          const reply = replies[i]!
          if (!Array.isArray(reply)) {
            worst = worse(worst, reply)
          } else if (Number(reply[0]) === Scripts.MARK_MALFORMED) {
            return markError(config, calls[i]!, "malformed", String(reply[3]))
          } else out.push(reply)
        }
        if (worst !== undefined) return yield* Effect.fail(worst)
        return out
      }).pipe(
        (tried) => retried("high-water check", () => ({ streams: calls.map((c) => c.stream).join(",") }), tried),
        Effect.tap(() => onWritten)
      )

    // Before anything is written: may this user run the script's commands on the streams known now (constant names
    // and the dead-letter stream)? A stream named by a template is checked the same way at its first write.
    const atStart = yield* check(
      config.fixedStreams.map((stream) => ({
        stream,
        keys: [stream, highWaterKey(stream)!],
        argv: header(config, 0, 0, "check")
      }))
    )
    if (!Array.isArray(atStart)) return yield* Effect.fail(atStart)

    // The checkpoint this run resumes from: in exactly-once, a mark past it makes the run skip events up to the mark.
    const resumedFrom = config.guarantee === "exactly-once" ? yield* checkpoint.load(config.pipeline) : Option.none()

    /**
     * A mark past the checkpoint claims that an earlier run wrote up to it, and exactly-once will skip every event up
     * to it. The claim must hold: the entry the mark names is in the stream and carries that position. Anything else
     * (a mark set by hand, another pipeline's, a stream deleted or trimmed past it) stops the sink.
     */
    const verify = (call: ScriptCall, mark: string, entryId: string) =>
      Effect.gen(function* () {
        const entries = yield* redis
          .run((client) => client.xrange(call.stream, entryId, entryId) as Promise<Array<[string, Array<string>]>>, {
            command: "XRANGE",
            key: call.stream
          })
          .pipe((tried) => retried("high-water entry read", () => ({ streams: call.stream }), tried))
        let why: string | undefined
        if (!Array.isArray(entries) || entries.length === 0) {
          why = `the stream has no entry ${entryId} (deleted, or trimmed away)`
        } else {
          const fields = entries[0]![1]
          let position: string | undefined
          for (let f = 0; Array.isArray(fields) && f + 1 < fields.length; f += 2) {
            if (fields[f] === "event") position = positionOf(String(fields[f + 1]))
          }
          if (position !== mark) {
            why = `its entry ${entryId} carries ${position === undefined ? "no readable position" : `position ${position}`}`
          }
        }
        if (why === undefined) return
        const key = call.keys[1]!
        const from = Option.match(resumedFrom, { onNone: () => "no checkpoint", onSome: (p) => `checkpoint ${p}` })
        return yield* Effect.fail(
          new HighWaterMarkError({
            reason: "unverified",
            stream: call.stream,
            key,
            field: config.pipeline,
            found: mark,
            expected: "",
            message:
              `high-water mark ${key} (field ${JSON.stringify(config.pipeline)}) says stream ${call.stream} holds ` +
              `position ${mark}, past the ${from}, but ${why}: exactly-once would skip every event up to ${mark} ` +
              `that no run wrote. The mark is corrupt, belongs to another pipeline, or its entries are gone. If the ` +
              `stream holds nothing past the checkpoint, delete it (HDEL ${key} ${config.pipeline}) and restart.`
          })
        )
      })

    /** First contact with the streams of a batch not seen yet: their marks, checked, before their first write. */
    const learnNewMarks = (entries: ReadonlyArray<Entry>) =>
      Effect.gen(function* () {
        const calls: Array<ScriptCall> = []
        for (const e of entries) {
          if (marks.has(e.stream) || calls.some((c) => c.stream === e.stream)) continue
          calls.push({
            stream: e.stream,
            keys: [e.stream, e.markKey],
            argv: header(config, 0, e.position.length, "check")
          })
        }
        if (calls.length === 0) return
        const replies = yield* check(calls)
        if (!Array.isArray(replies)) return yield* Effect.fail(replies)
        for (let i = 0; i < calls.length; i++) {
          const [, , entryId, mark] = replies[i]!
          const past = Option.match(resumedFrom, {
            onNone: () => true,
            onSome: (from) => Position.isAfter(mark as Position.Position, from)
          })
          if (config.guarantee === "exactly-once" && mark !== "" && past) yield* verify(calls[i]!, mark, entryId)
          marks.set(calls[i]!.stream, { mark: mark as Position.Position | "", by: undefined })
        }
      })

    const learnMarks = (entries: ReadonlyArray<Entry>): ReturnType<typeof learnNewMarks> => {
      // Every batch but a stream's first: no generator holding the batch (see EntryImpl on what V8 does with those).
      for (const e of entries) if (!marks.has(e.stream)) return learnNewMarks(entries)
      return Effect.succeed(undefined)
    }

    // At most maxEvents encoded events wait for a write. This bound, with the window of events written but not yet
    // checkpointed, is what turns a Redis outage into backpressure on the source instead of memory growth.
    const queue = yield* Queue.bounded<Entry, E | Cause.Done>(config.maxEvents)
    // Entries taken from the queue that did not fit the previous batch's bounds.
    let leftover: ReadonlyArray<Entry> = []

    // And at most maxBufferedBytes encoded bytes are queued or in flight, taken before an entry is queued and given
    // back when its batch is checkpointed: the event bounds alone let 4000 large events fill the heap. An entry counts
    // at most the whole bound (only a dead-letter stub under a tiny maxBytes can be larger), so it always fits.
    const buffered = yield* Semaphore.make(config.maxBufferedBytes)
    const held = (entry: Entry) => Math.min(entry.bytes, config.maxBufferedBytes)
    const offerEntries = (entries: ReadonlyArray<Entry>, from: number): Effect.Effect<void> => {
      let bytes = 0
      let to = from
      while (to < entries.length && bytes + held(entries[to]!) <= config.maxBufferedBytes) bytes += held(entries[to++]!)
      const offered = Semaphore.take(buffered, bytes).pipe(
        Effect.andThen(Queue.offerAll(queue, from === 0 && to === entries.length ? entries : entries.slice(from, to)))
      )
      return to < entries.length ? Effect.andThen(offered, offerEntries(entries, to)) : Effect.asVoid(offered)
    }

    // Encode a slice at a time, yielding in between: a source that emits huge chunks (Stream.fromIterable of an
    // array emits it whole) must not get ahead of the queue, and the event loop must stay free to hear Redis replies
    // and checkpoint I/O completions while the next batch is encoded (one slice takes about 0.3 ms). A slice is cut
    // by bytes too, so what waits for room in the queue is one slice, not 64 events whatever their size.
    const offerSlice = (chunk: ReadonlyArray<CdcEvent.CdcEvent>, from: number): Effect.Effect<void> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const entries: Array<Entry> = []
        let bytes = 0
        let to = from
        while (to < chunk.length && entries.length < ENCODE_SLICE && bytes < ENCODE_SLICE_BYTES) {
          const entry = prepare(chunk[to++]!, now)
          entries.push(entry)
          // A dead letter may stand for an event too large to write, encoded at a cost its stub does not show.
          bytes += entry.deadLetter ? ENCODE_SLICE_BYTES : entry.bytes
        }
        const offered = offerEntries(entries, 0)
        return to < chunk.length
          ? offered.pipe(Effect.andThen(Effect.yieldNow), Effect.andThen(offerSlice(chunk, to)))
          : offered
      })
    yield* feed((chunk) => offerSlice(chunk, 0)).pipe(
      Effect.onExit((exit) => (Exit.isSuccess(exit) ? Queue.end(queue) : Queue.failCause(queue, exit.cause))),
      Effect.forkIn(scope)
    )

    /** Everything now waiting, without blocking; nothing once the source has ended (the next take reports it). */
    const takeWaiting = (max: number) => takeAvailable(queue, max)

    // At most maxEvents events are written but not checkpointed (what a crash can make at-least-once replay); each
    // write carries a part of that window.
    const batchEvents = Math.max(1, Math.ceil(config.maxEvents / WRITES_PER_WINDOW))

    /** Takes the next batch: whatever is waiting, within the event and byte bounds (group commit). */
    const takeBatch: Effect.Effect<Array<Entry>, E | Cause.Done> = Effect.gen(function* () {
      let taken: ReadonlyArray<Entry> = leftover
      leftover = []
      if (taken.length === 0) taken = yield* Queue.takeBetween(queue, 1, batchEvents)
      if (taken.length < batchEvents) {
        if (config.lingerMs > 0) yield* Effect.sleep(Duration.millis(config.lingerMs))
        const more = yield* takeWaiting(batchEvents - taken.length)
        if (more.length > 0) taken = [...taken, ...more]
      }
      const batch: Array<Entry> = []
      let bytes = 0
      let i = 0
      for (; i < taken.length; i++) {
        const e = taken[i]!
        if (batch.length > 0 && (batch.length >= batchEvents || bytes + e.bytes > config.maxBytes)) break
        batch.push(e)
        bytes += e.bytes
      }
      if (i < taken.length) leftover = taken.slice(i)
      return batch
    })

    /**
     * Writes one batch, retrying failed streams by the failure policies. A stream refused because an earlier batch
     * in flight has not applied yet (`written = -1`) is sent again, unconditionally, once that batch is through.
     */
    const writeBatch = (commands: ReadonlyArray<Command>, self: InFlight) =>
      Effect.gen(function* () {
        const startedAt = yield* Clock.currentTimeMillis
        const results = new Map<string, StreamResult>()
        let pending = commands
        let attempts = 0
        const record = (stream: string, written: number, skipped: number, lastId: string) => {
          const prior = results.get(stream)
          results.set(stream, {
            stream,
            written: (prior?.written ?? 0) + written,
            skipped: (prior?.skipped ?? 0) + skipped,
            lastId: lastId || prior?.lastId || ""
          })
        }
        // A mark the sink cannot trust is returned, not failed: no failure policy applies to it.
        const attempt: Effect.Effect<HighWaterMarkError | undefined, RedisError> = Effect.gen(function* () {
          attempts++
          const replies = yield* send(redis, Scripts.write, pending)
          const failed: Array<Command> = []
          const refused: Array<Command> = []
          let worst: RedisError | undefined
          for (let i = 0; i < pending.length; i++) {
            const reply = replies[i]!
            const command = pending[i]!
            if (!Array.isArray(reply)) {
              failed.push(command)
              worst = worse(worst, reply)
              continue
            }
            const written = Number(reply[0])
            if (written >= 0) {
              record(command.stream, written, Number(reply[1]), String(reply[2]))
              continue
            }
            const found = String(reply[3])
            if (written === Scripts.MARK_MALFORMED) return markError(config, command, "malformed", found)
            if (command.predecessor !== undefined) {
              // The earlier write to this stream had not applied when this one ran: send it again once it has.
              yield* Deferred.await(command.predecessor.written)
              command.predecessor = undefined
              refused.push(command)
            } else if (
              unsettled.get(command.stream)?.has(found as Position.Position) === true &&
              !Position.isAfter(command.leaves, found as Position.Position)
            ) {
              // This write applied on an earlier try whose reply was lost (a timeout, a dropped connection); later
              // writes of this sink may have applied after it.
              record(command.stream, (command.argv.length - Scripts.HEADER_ARITY) / Scripts.ENTRY_ARITY, 0, "")
            } else {
              const expected = command.argv[EXPECTED]!
              const reason =
                found === "" || Position.isAfter(expected as Position.Position, found as Position.Position)
                  ? "lost"
                  : "moved"
              const error = markError(config, command, reason, found)
              yield* onDataLoss(command.stream, error)
              if (config.onDataLoss === "fail") return error
              // Write on from the mark found: what it no longer covers is lost unless the checkpoint is rewound.
              command.argv[EXPECTED] = found
              settle(unsettled, command.stream, command.leaves)
              command.leaves = found === "" ? command.top : Position.max(found as Position.Position, command.top)
              unsettle(unsettled, command.stream, command.leaves)
              const i = self.leaves.findIndex(([stream]) => stream === command.stream)
              if (i >= 0) self.leaves[i] = [command.stream, command.leaves]
              const known = marks.get(command.stream)
              if (known?.by === self) marks.set(command.stream, { mark: command.leaves, by: self })
              refused.push(command)
            }
          }
          // Streams that succeeded are done: a retry sends only what failed or was refused.
          pending = [...failed, ...refused]
          if (worst !== undefined) return yield* Effect.fail(worst)
          if (refused.length > 0) return yield* attempt
          return undefined
        })
        const untrusted = yield* retried(
          "batch write",
          () => ({ streams: pending.map((c) => c.stream).join(","), attempt: attempts }),
          attempt
        )
        if (untrusted !== undefined) return yield* Effect.fail(untrusted)
        yield* Deferred.succeed(self.written, undefined)
        yield* onWritten
        // Written: the encoded events can go (see internal/commands.ts for why holding them costs memory).
        for (const command of commands) command.argv.length = 0
        return { results, attempts, startedAt }
      })

    // The sender keeps writing while the window has room, so Redis never waits while the client checkpoints and
    // encodes; the committer checkpoints in order and gives the room back.
    const window = yield* Semaphore.make(config.maxEvents)
    // And at most WRITES_PER_WINDOW writes: when Redis is slow or down, events gather into full writes rather than
    // into many small ones.
    const writes = yield* Semaphore.make(WRITES_PER_WINDOW)
    let inFlight = 0
    /** Events in batches cut and not yet checkpointed; `pressure` ends a checkpoint's wait once they are half the window. */
    let uncommitted = 0
    let pressure: Deferred.Deferred<void> | undefined
    type Handle = {
      readonly batch: ReadonlyArray<Entry>
      readonly self: InFlight
      readonly fiber: Fiber.Fiber<Written, RedisError | HighWaterMarkError>
    }
    const handles = yield* Queue.unbounded<Handle, E | Cause.Done | RedisError | HighWaterMarkError>()
    yield* Effect.gen(function* () {
      // Room for a whole write first, so the batch is cut as late (and as full) as possible; unused room goes back.
      yield* Semaphore.take(writes, 1)
      yield* Semaphore.take(window, batchEvents)
      const batch = yield* takeBatch
      if (batch.length < batchEvents) yield* Semaphore.release(window, batchEvents - batch.length)
      yield* learnMarks(batch)
      const self: InFlight = { written: yield* Deferred.make<void>(), leaves: [] }
      const commands = buildCommands(config, batch, yield* Clock.currentTimeMillis, marks, unsettled, self)
      inFlight++
      uncommitted += batch.length
      if (pressure !== undefined && uncommitted * 2 >= config.maxEvents) Deferred.doneUnsafe(pressure, Exit.void)
      yield* Metric.update(metric.inFlight, inFlight)
      // The write's slot is free again once Redis has answered: the checkpoint that follows is not a write, and
      // the next batch must not wait for its I/O (a file store's fsync would then add to every event's latency).
      // Started at once, so the batch is on the socket before this fiber goes on, not a scheduler turn later.
      const fiber = yield* Effect.forkIn(
        writeBatch(commands, self).pipe(Effect.ensuring(Semaphore.release(writes, 1))),
        scope,
        { startImmediately: true }
      )
      yield* Queue.offer(handles, { batch, self, fiber })
    }).pipe(
      Effect.forever,
      Effect.onExit((exit) => (Exit.isSuccess(exit) ? Queue.end(handles) : Queue.failCause(handles, exit.cause))),
      Effect.forkIn(scope)
    )

    // Handles taken from the queue but not yet committed: batches written behind the one being committed.
    const lookahead: Array<Handle> = []
    let lastCheckpointAt = Number.NEGATIVE_INFINITY

    /**
     * Waits for the oldest batch in flight to be written, then checkpoints it together with every batch behind it
     * that is already written: under load one checkpoint write covers several batches. Returns them in order.
     */
    const commit = Effect.gen(function* () {
      const head = lookahead.shift() ?? (yield* Queue.take(handles))
      const group: Array<{ readonly handle: Handle; readonly written: Written }> = [
        { handle: head, written: yield* Fiber.join(head.fiber) }
      ]
      // Checkpoints at most every checkpointInterval: the batches written meanwhile join this one. Not while half
      // the window waits for a checkpoint, though: the writes would soon stop for room.
      const wait = lastCheckpointAt + config.checkpointIntervalMs - (yield* Clock.currentTimeMillis)
      if (wait > 0 && uncommitted * 2 < config.maxEvents) {
        const full = Deferred.makeUnsafe<void>()
        pressure = full
        yield* Effect.raceFirst(Effect.sleep(Duration.millis(wait)), Deferred.await(full))
        pressure = undefined
      }
      lastCheckpointAt = yield* Clock.currentTimeMillis
      for (const h of yield* takeAvailable(handles, config.maxEvents)) {
        lookahead.push(h)
      }
      while (lookahead.length > 0) {
        const exit = lookahead[0]!.fiber.pollUnsafe()
        if (exit === undefined || Exit.isFailure(exit)) break
        group.push({ handle: lookahead.shift()!, written: exit.value })
      }
      // Under load, a write is usually still in flight behind this one: wait for it, so one checkpoint write covers
      // both. Checkpoint I/O then costs half as much of the client's time; the window leaves Redis other work.
      if (group.length === 1 && lookahead.length > 0) {
        const next = lookahead.shift()!
        group.push({ handle: next, written: yield* Fiber.join(next.fiber) })
      }
      if (config.waitForReplicas !== undefined) {
        yield* waitReplicas(redis, config.waitForReplicas, policies, onRetry)
      }
      let checkpointPosition: Position.Position | undefined
      const positions = group.map(({ handle: { batch } }) => {
        let position = batch[batch.length - 1]!.position
        if (config.guarantee === "at-least-once") for (const e of batch) position = Position.max(position, e.position)
        checkpointPosition = checkpointPosition === undefined ? position : Position.max(checkpointPosition, position)
        return position
      })
      yield* checkpoint.commit(config.pipeline, checkpointPosition!)
      for (const { handle } of group) for (const [stream, mark] of handle.self.leaves) settle(unsettled, stream, mark)
      inFlight -= group.length
      yield* Metric.update(metric.inFlight, inFlight)
      let events = 0
      let heldBytes = 0
      for (const { handle } of group) {
        events += handle.batch.length
        for (const e of handle.batch) heldBytes += held(e)
      }
      uncommitted -= events
      yield* Semaphore.release(window, events)
      yield* Semaphore.release(buffered, heldBytes)
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
          checkpoint: checkpointPosition!,
          streams: [...written.results.values()],
          attempts: written.attempts,
          durationMs: committedAt - written.startedAt,
          enqueuedAt: batch[0]!.arrivedAt
        }
      })
      for (const batch of committed) {
        yield* Metric.update(metric.events, batch.events)
        yield* Metric.update(metric.batches, 1)
        yield* Metric.update(metric.bytes, batch.bytes)
        if (batch.deadLettered > 0) yield* Metric.update(metric.deadLettered, batch.deadLettered)
        yield* Metric.update(metric.latency, (committedAt - batch.enqueuedAt) / 1000)
        yield* Metric.update(metric.stage, batch.durationMs / 1000)
      }
      yield* Metric.update(metric.checkpoint, Number(BigInt(`0x${checkpointPosition!}`) & 0x1fffffffffffffn))
      yield* Metric.update(metric.checkpointAt, committedAt / 1000)
      return committed as unknown as Arr.NonEmptyReadonlyArray<CommittedBatch>
    })

    return commit
  })

interface Written {
  readonly results: Map<string, StreamResult>
  readonly attempts: number
  readonly startedAt: number
}

/** The error a sink fails with when its policy gives up, with the likely fix where there is one. */
const explainGiveUp = (redis: RedisConnectionService, error: RedisError): RedisError =>
  error._tag === "RedisReadOnly" && redis.topology === "standalone"
    ? new RedisReadOnly({
        message:
          `${redis.description} points at a read-only replica (${error.message}). ` +
          "Point the URL at the master, or use redis+sentinel://… so the sink follows the master.",
        cause: error
      })
    : error

const waitReplicas = (
  redis: RedisConnectionService,
  wait: { readonly replicas: number; readonly timeoutMs: number },
  policies: FailurePolicy.FailurePolicies,
  onRetry: (error: RedisError) => Effect.Effect<void>
) =>
  redis
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
      Effect.retry(FailurePolicy.schedule(policies, onRetry))
    )

// ---------------------------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------------------------

/**
 * Writes a stream of events and emits each committed batch. Use this form to observe progress or to act after
 * each checkpoint; use {@link make} to just run the source into Redis.
 */
export const deliver =
  (options: Options) =>
  <E, R>(
    self: Stream.Stream<CdcEvent.CdcEvent, E, R>
  ): Stream.Stream<CommittedBatch, E | SinkError, R | RedisConnection | CheckpointStore> =>
    Stream.unwrap(
      Effect.gen(function* () {
        const config = yield* validate(options)
        const next = yield* start(config, (offer) => Stream.runForEachArray(self, offer))
        return Stream.fromPull(Effect.succeed(next))
      })
    )

/**
 * The sink: runs until the source ends, and returns a {@link Summary}. Fails with a typed {@link SinkError} when a
 * failure policy gives up (authentication, a fatal command error, an exhausted schedule).
 */
export const make = (
  options: Options
): Sink.Sink<Summary, CdcEvent.CdcEvent, never, SinkError, RedisConnection | CheckpointStore> =>
  Sink.fromTransform<CdcEvent.CdcEvent, Summary, SinkError, RedisConnection | CheckpointStore>((upstream, scope) =>
    Effect.gen(function* () {
      const config = yield* validate(options)
      const next = yield* start(config, (offer) =>
        Effect.forever(Effect.flatMap(upstream, offer)).pipe(Pull.catchDone(() => Effect.void))
      ).pipe(Scope.provide(scope))
      let summary: Summary = {
        events: 0,
        batches: 0,
        bytes: 0,
        written: 0,
        skipped: 0,
        deadLettered: 0,
        position: Option.none()
      }
      yield* Effect.forever(
        Effect.map(next, (batches) => {
          for (const batch of batches) {
            let written = 0
            let skipped = 0
            for (const s of batch.streams) {
              written += s.written
              skipped += s.skipped
            }
            summary = {
              events: summary.events + batch.events,
              batches: summary.batches + 1,
              bytes: summary.bytes + batch.bytes,
              written: summary.written + written,
              skipped: summary.skipped + skipped,
              deadLettered: summary.deadLettered + batch.deadLettered,
              position: Option.some(batch.checkpoint)
            }
          }
        })
      ).pipe(Pull.catchDone(() => Effect.void))
      return [summary] as const
    })
  )
