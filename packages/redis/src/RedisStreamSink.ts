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
 * Before a batch is cut, the write gates are awaited: the memory guard (`memoryGuard`), retention's hold
 * (`trim: { acked, maxLen, onLag: "hold" }`) and consumer lag (`maxLag`); while one holds, the queue fills and the
 * source is not pulled. After each acknowledged write of a stream come its notices (`publish`) and its retention
 * (`trim.acked`: trimmed below what every consumer group has processed, see `StreamRetention`).
 *
 * The machinery lives in `internal/sink/`: `options` (the options decoded and resolved), `prepare` (routing and
 * encoding, dead letters), `marks` (high-water marks and their checks), `send` (script calls pipelined per node) and
 * `writer` (queue → writes in flight → checkpoint), with `report` for metrics, logs and health.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Pull from "effect/Pull"
import * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type * as CdcEvent from "@redflow/core/CdcEvent"
import type { CheckpointError, CheckpointStore } from "@redflow/core/CheckpointStore"
import type { ConfigError } from "@redflow/core/ConfigError"
import type * as Envelope from "@redflow/core/Envelope"
import type * as Position from "@redflow/core/Position"
import type * as Duration from "effect/Duration"
import type * as FailurePolicy from "./FailurePolicy.ts"
import type { HighWaterMarkError } from "./internal/sink/marks.ts"
import * as SinkOptions from "./internal/sink/options.ts"
import * as Writer from "./internal/sink/writer.ts"
import type { DurabilityError } from "./Durability.ts"
import type * as MemoryGuard from "./MemoryGuard.ts"
import type * as RedisStreamChannel from "./RedisStreamChannel.ts"
import type * as StreamRetention from "./StreamRetention.ts"
import type { LeaseFenced, LeaseLost } from "./PipelineLease.ts"
import type { RedisConnection } from "./RedisConnection.ts"
import type { RedisError } from "./RedisError.ts"

export {
  /**
   * A high-water mark the sink cannot trust (`malformed`, `unverified`, `lost` or `moved`): it stops rather than
   * skip events by it or write past a loss unnoticed.
   *
   * @since 0.1.0
   * @category errors
   */
  HighWaterMarkError
} from "./internal/sink/marks.ts"

// ---------------------------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------------------------

/**
 * How events are batched, and how much the sink holds.
 *
 * @since 0.1.0
 * @category options
 */
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

/**
 * How the sink trims the streams it writes, at each write.
 *
 * @since 0.1.0
 * @category options
 */
export interface TrimOptions {
  /** Keep about this many entries per stream (`MAXLEN ~`), or exactly this many with `exact`. */
  readonly maxLen?: number
  /** Drop entries with ids below this one (`MINID`), or older than `maxAge` at each batch. */
  readonly minId?: string | { readonly maxAge: Duration.Input }
  /** Exact trimming (`=`) instead of the default approximate (`~`), which is much cheaper. */
  readonly exact?: boolean
  /**
   * Trim only what every consumer group of the stream has processed (read and acknowledged): after each write, the
   * stream is trimmed (`XTRIM MINID`) below the oldest entry some group still needs; nothing a group has not processed
   * is trimmed. A stream with no group is trimmed by `maxLen` alone. Not with `minId`. See `StreamRetention`.
   */
  readonly acked?: true
  /**
   * With `acked` and `maxLen`: what a group that keeps the stream past `maxLen` gets. `hold` (default): the stream
   * grows past `maxLen` and the sink holds writes (the source slows down) until the group catches up, with
   * `redflow_stream_group_lag{stream,group}` and a `/ready` reason naming the group. `trim`: `maxLen` wins, and the
   * entries trimmed before a group processed them are counted in `redflow_sink_trimmed_unread_total{stream,group}`.
   */
  readonly onLag?: "hold" | "trim"
}

/**
 * The sink's options; every field but `stream` is optional, with the defaults given here. They are checked before
 * anything is written: a rejection is a `ConfigError` whose `path` names the option.
 *
 * @since 0.1.0
 * @category options
 */
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
  /**
   * The largest encoded event an entry carries in its `event` field. Default 1 MiB (at most `batch.maxBytes`): a
   * consumer reads 100 entries at a time, so its reads stay within about 100 MiB, and a batch of 4 MiB still carries
   * four of them. A larger event is handled by `largeEvents`.
   */
  readonly maxEventBytes?: number
  /**
   * What becomes of an event larger than `maxEventBytes`. `dead-letter` (default): it goes to the dead-letter stream,
   * the reason naming its size (with its body while it fits a batch). `reference`: its body is stored under its own
   * key in the stream's hash slot (`SET key body PX largeEventTtl`, in the same script call as the entry, so both or
   * neither are written) and the entry carries that key in a `ref` field instead of `event`; `RedisStreamConsumer`
   * reads the body back. An event larger than `batch.maxBytes` goes to the dead-letter stream either way.
   */
  readonly largeEvents?: "dead-letter" | "reference"
  /**
   * How long a body stored by reference lives (`PX`). Default 7 days. Keep it longer than any consumer group may lag:
   * an entry read after its body expired goes to the consumer's dead-letter stream.
   */
  readonly largeEventTtl?: Duration.Input
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
  /**
   * Hold writes before Redis runs out of memory: above `highWater` (default 0.9) × `maxmemory` the sink stops
   * sending batches, so its bounded queue fills and the source is no longer pulled, and it resumes below `lowWater`
   * (default 0.8). `INFO memory` is read at most once per `interval` (default 1 second). With no `maxmemory`, or an
   * `allkeys-*` policy (Redis evicts instead of refusing), it never holds; a failed read never holds either. While it
   * holds, `redflow_sink_held{gate="memory"}` is 1 and `/ready` names it. Off by default (`false`); `{}` turns it on
   * with the defaults. See `MemoryGuard`.
   */
  readonly memoryGuard?: false | Omit<MemoryGuard.Options, "pipeline">
  /**
   * What the sink does with the server's persistence settings (`CONFIG GET appendonly`, `appendfsync`, `save`) at
   * start. `warn` (default): when acknowledged writes can be lost on a restart (AOF off, or `appendfsync no`), it says
   * so once, with the fix, and shows it in `/health` (readiness unaffected). `require`: that, or a server that refuses
   * `CONFIG`, fails start-up with a `DurabilityError` (`appendfsync everysec` counts as durable: a Redis restart loses
   * nothing, a power loss up to a second). `ignore`: not read. See `Durability`.
   */
  readonly durability?: "warn" | "require" | "ignore"
  /**
   * Hold writes while the consumer group `group` has `entries` or more entries to read or acknowledge on a stream the
   * sink writes (`XINFO GROUPS` lag plus pending), probed at most once a second; `redflow_sink_held{gate="lag:<group>"}`
   * and `/ready` show it. A stream without the group does not hold. See `StreamRetention.lagGate`.
   */
  readonly maxLag?: StreamRetention.MaxLag
  /**
   * After each acknowledged write, publish one notice per stream and channel, `{"stream","first","last","count"}`:
   * `XRANGE stream first last` reads the entries. `channel` is a template like `stream`'s. At most once (pub/sub);
   * dead-lettered events are not announced. See `RedisStreamChannel.subscribe`.
   */
  readonly publish?: RedisStreamChannel.PublishOptions
  /**
   * One active writer per pipeline name (a standby that takes over): before its first write the sink acquires the
   * pipeline's lease (`PipelineLease`), waiting as a standby while another process holds it (said once, with the
   * holder's name), and renews it every `renewEvery` (default `ttl / 3`). Every write carries the lease's fencing
   * token: a batch of a process whose lease was taken over (one paused past its `ttl`) is refused whole by the write
   * script, nothing written, and the sink fails with `LeaseFenced`; a lease lost at a renewal fails it with
   * `LeaseLost`. Neither is retried. Standalone and Sentinel only: on a Cluster the sink refuses it at start. Off by
   * default. Use a checkpoint store the standby shares (`RedisCheckpointStore`), or it resumes from its own.
   */
  readonly lease?: { readonly ttl: Duration.Input; readonly renewEvery?: Duration.Input }
}

/**
 * Every way the sink can fail: a Redis error its policy did not retry, a checkpoint error, an option that cannot
 * work, a high-water mark that does not match, persistence that is too weak, or a lost or fenced lease.
 *
 * @since 0.1.0
 * @category errors
 */
export type SinkError =
  RedisError | CheckpointError | ConfigError | HighWaterMarkError | DurabilityError | LeaseFenced | LeaseLost

/**
 * Checks sink options without connecting to Redis: fails with the `ConfigError` (component `RedisStreamSink`,
 * `path` the option's) that {@link make} and {@link deliver} would fail with, for a command line that reports bad
 * flags before connecting.
 *
 * @since 0.1.0
 * @category options
 */
export const validateOptions = (options: Options): Effect.Effect<void, ConfigError> =>
  Effect.asVoid(SinkOptions.decode(options))

// ---------------------------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------------------------

/**
 * What one batch did to one stream.
 *
 * @since 0.1.0
 * @category models
 */
export interface StreamResult {
  readonly stream: string
  /** Entries appended. */
  readonly written: number
  /** Entries skipped as already written (exactly-once after a retry or a restart). */
  readonly skipped: number
  /** Id of the last entry appended, or "" when none. */
  readonly lastId: string
}

/**
 * One batch, acknowledged by Redis and checkpointed.
 *
 * @since 0.1.0
 * @category models
 */
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

/**
 * What a finished sink reports.
 *
 * @since 0.1.0
 * @category models
 */
export interface Summary {
  readonly events: number
  readonly batches: number
  readonly bytes: number
  readonly written: number
  readonly skipped: number
  readonly deadLettered: number
  readonly position: Option.Option<Position.Position>
}

const emptySummary: Summary = {
  events: 0,
  batches: 0,
  bytes: 0,
  written: 0,
  skipped: 0,
  deadLettered: 0,
  position: Option.none()
}

const addBatch = (summary: Summary, batch: CommittedBatch): Summary => {
  let written = 0
  let skipped = 0
  for (const s of batch.streams) {
    written += s.written
    skipped += s.skipped
  }
  return {
    events: summary.events + batch.events,
    batches: summary.batches + 1,
    bytes: summary.bytes + batch.bytes,
    written: summary.written + written,
    skipped: summary.skipped + skipped,
    deadLettered: summary.deadLettered + batch.deadLettered,
    position: Option.some(batch.checkpoint)
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------------------------

/**
 * Writes a stream of events and emits each committed batch. Use this form to observe progress or to act after
 * each checkpoint; use {@link make} to just run the source into Redis.
 *
 * @example
 * ```ts
 * const progress = SyntheticSource.make({ count: 10_000 }).pipe(
 *   RedisStreamSink.deliver({ stream: "orders.events" }),
 *   Stream.runForEach((batch) => Effect.log(`checkpoint ${batch.checkpoint}`))
 * )
 * ```
 *
 * @since 0.1.0
 * @category sinks
 */
export const deliver =
  (options: Options) =>
  <E, R>(
    self: Stream.Stream<CdcEvent.CdcEvent, E, R>
  ): Stream.Stream<CommittedBatch, E | SinkError, R | RedisConnection | CheckpointStore> =>
    Stream.unwrap(
      Effect.gen(function* () {
        const settings = yield* SinkOptions.decode(options)
        const next = yield* Writer.start(settings, (offer) => Stream.runForEachArray(self, offer))
        return Stream.fromPull(Effect.succeed(next))
      })
    )

/**
 * The sink: runs until the source ends, and returns a {@link Summary}. Fails with a typed {@link SinkError} when a
 * failure policy gives up (authentication, a fatal command error, an exhausted schedule).
 *
 * @since 0.1.0
 * @category sinks
 */
export const make = (
  options: Options
): Sink.Sink<Summary, CdcEvent.CdcEvent, never, SinkError, RedisConnection | CheckpointStore> =>
  Sink.fromTransform<CdcEvent.CdcEvent, Summary, SinkError, RedisConnection | CheckpointStore>((upstream, scope) =>
    Effect.gen(function* () {
      const settings = yield* SinkOptions.decode(options)
      const next = yield* Writer.start(settings, (offer) =>
        Effect.forever(Effect.flatMap(upstream, offer)).pipe(Pull.catchDone(() => Effect.void))
      ).pipe(Scope.provide(scope))
      let summary = emptySummary
      yield* Effect.forever(
        Effect.map(next, (batches) => {
          for (const batch of batches) summary = addBatch(summary, batch)
        })
      ).pipe(Pull.catchDone(() => Effect.void))
      return [summary] as const
    })
  )
