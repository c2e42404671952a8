/**
 * `redflow produce`: the synthetic source into Redis Streams through the sink, resumable from a checkpoint file.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Stream from "effect/Stream"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import type * as Envelope from "@redflow/core/Envelope"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as Position from "@redflow/core/Position"
import * as Routing from "@redflow/core/Routing"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisCheckpointStore from "@redflow/redis/RedisCheckpointStore"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import {
  addBatch,
  announceStandby,
  emptyTally,
  sequenceOf,
  sourceOptions,
  streamLengths,
  validateSink
} from "./delivery.ts"
import * as Flags from "./flags.ts"
import * as Monitoring from "./monitoring.ts"
import * as OperatorFlags from "./operatorFlags.ts"
import * as Output from "./output.ts"
import * as Redis from "./redis.ts"
import * as Shutdown from "./shutdown.ts"

export interface ProduceInput extends OperatorFlags.OperatorFlags {
  readonly redis: Option.Option<string>
  readonly stream: string
  readonly events: number
  readonly rate: Option.Option<number>
  readonly tables: Option.Option<ReadonlyArray<string>>
  readonly payloadBytes: Option.Option<number>
  readonly guarantee: "at-least-once" | "exactly-once"
  readonly envelope: Envelope.Format
  readonly checkpoint: Option.Option<string>
  readonly batchSize: Option.Option<number>
  readonly maxlen: Option.Option<number>
  readonly key: Option.Option<string>
  readonly pipeline: string
  readonly seed: number
  readonly metricsPort: Option.Option<number>
  readonly lease: Option.Option<string>
}

/** Stream names the run writes to, known up front when the template depends only on the table. */
const streamsOfTables = (template: string, options: SyntheticSource.Options): Array<string> => {
  const router = Routing.makeSync(template)
  const tables = new Set(options.tables ?? SyntheticSource.defaults.tables)
  const streams = new Set<string>()
  const { count: _c, ratePerSecond: _r, from: _f, ...identity } = options
  for (let n = 1; n <= 1000 && tables.size > 0; n++) {
    const event = SyntheticSource.eventAt(n, identity)
    if (!tables.delete(event.source.table)) continue
    const rendered = router.render(event)
    if (Result.isSuccess(rendered)) streams.add(rendered.success)
  }
  return [...streams]
}

/** Where `--checkpoint` keeps checkpoints, as a phrase: the file, or the Redis hash for `redis`. */
const checkpointPlace = (value: string): string =>
  value === "redis" ? `Redis hash ${Flags.DEFAULT_CHECKPOINT_HASH}` : value

/**
 * The summary's checkpoint line. Without --checkpoint the checkpoint lived in memory and is gone with the process:
 * it is not reported as a checkpoint a re-run could resume from.
 */
export const checkpointLine = (file: Option.Option<string>, at: string | undefined): string =>
  Option.match(Option.map(file, checkpointPlace), {
    onNone: () =>
      `checkpoint: not saved (no --checkpoint FILE: running the command again starts from the first event)` +
      (at === undefined ? "" : `; delivered through ${at}`),
    onSome: (path) => `checkpoint: ${at ?? "none"} (${path})`
  })

/** The command's work, once its flags are parsed. */
export const run = (input: ProduceInput) =>
  Effect.gen(function* () {
    const json = yield* Flags.Json
    const url = yield* Flags.resolveRedisUrl(input.redis)
    const source = yield* sourceOptions(input)
    const leaseMs = Option.isSome(input.lease)
      ? Option.some(yield* Flags.leaseTtl(input.lease.value))
      : Option.none<number>()
    if (Option.isSome(leaseMs) && !Option.contains(input.checkpoint, "redis")) {
      return yield* Flags.leaseNeedsRedisCheckpoint
    }
    const base: RedisStreamSink.Options = {
      stream: input.stream,
      pipeline: input.pipeline,
      guarantee: input.guarantee,
      envelope: input.envelope,
      ...Option.match(input.batchSize, { onNone: () => ({}), onSome: (n) => ({ batch: { maxEvents: n } }) }),
      ...Option.match(input.maxlen, { onNone: () => ({}), onSome: (n) => ({ trim: { maxLen: n } }) }),
      ...Option.match(input.key, { onNone: () => ({}), onSome: (k) => ({ key: k }) }),
      ...Option.match(leaseMs, { onNone: () => ({}), onSome: (ms) => ({ lease: { ttl: Duration.millis(ms) } }) })
    }
    const sink: RedisStreamSink.Options = { ...base, ...(yield* OperatorFlags.sinkOptions(input, base.trim)) }
    yield* validateSink(sink)
    const checkpoints = Option.match(input.checkpoint, {
      onNone: () => CheckpointStore.layerMemory,
      onSome: (path) => (path === "redis" ? RedisCheckpointStore.layer() : CheckpointStore.layerFile(path))
    })
    const place = Option.getOrElse(Option.map(input.checkpoint, checkpointPlace), () => "")

    return yield* Effect.gen(function* () {
      yield* Monitoring.announce(json)
      const store = yield* CheckpointStore.CheckpointStore
      const stop = yield* Shutdown.drainOnSignal
      const startedAt = yield* Clock.currentTimeMillis
      const tally = emptyTally()
      const target = input.events
      let from = Option.none<Position.Position>()
      let resumedFrom: number | null = null
      // Where the run starts. Under a lease it is read once the sink holds the lease (the source's first pull comes
      // after it): a standby must resume from the checkpoint the active process left, not the one it found at start.
      const loadFrom = Effect.gen(function* () {
        from = yield* store.load(input.pipeline)
        resumedFrom = sequenceOf(from)
        if (Option.isSome(leaseMs)) {
          yield* Output.line(
            `redflow: pipeline ${input.pipeline}: holding the lease` +
              `${resumedFrom === null ? "" : `, resuming after event ${resumedFrom}`}`
          )
        }
        if (!json && Option.isSome(from)) {
          yield* Output.print(
            resumedFrom! >= target
              ? `checkpoint ${place} is at event ${resumedFrom}: nothing left to produce`
              : `resuming after event ${Output.count(resumedFrom!)} (checkpoint ${place})`
          )
        }
        return from
      })
      if (Option.isNone(leaseMs)) yield* loadFrom
      else yield* announceStandby(input.pipeline)
      // events/s since the line before, as in consume and demo: a stalled run shows 0, not a fading average.
      let last = { at: startedAt, events: 0 }
      yield* Output.progressLine(
        Effect.map(Clock.currentTimeMillis, (now) => {
          const done = sequenceOf(tally.position) ?? resumedFrom ?? 0
          const perSecond = Output.rate(tally.events - last.events, now - last.at)
          last = { at: now, events: tally.events }
          return `produced ${Output.count(done)}/${Output.count(target)} events · ${Output.count(perSecond)} events/s · ${tally.batches} batches`
        })
      )
      const events = (start: Option.Option<Position.Position>) =>
        SyntheticSource.make({
          ...source,
          ...Option.match(start, { onNone: () => ({}), onSome: (p) => ({ from: p }) })
        })
      yield* (Option.isNone(leaseMs) ? events(from) : Stream.unwrap(Effect.map(loadFrom, events))).pipe(
        Stream.interruptWhen(stop),
        RedisStreamSink.deliver(sink),
        Stream.runForEach((batch) => Effect.sync(() => addBatch(tally, batch))),
        PipelineHealth.track(input.pipeline)
      )
      const durationMs = (yield* Clock.currentTimeMillis) - startedAt
      const streams = new Set([...streamsOfTables(input.stream, source), ...tally.streams.keys()])
      const lengths = yield* streamLengths(streams)
      const checkpoint = Option.orElse(tally.position, () => from)
      const sequence = sequenceOf(checkpoint)
      const summary = {
        command: "produce",
        pipeline: input.pipeline,
        guarantee: input.guarantee,
        events: tally.events,
        written: tally.written,
        skipped: tally.skipped,
        deadLettered: tally.deadLettered,
        batches: tally.batches,
        target,
        resumedFrom,
        complete: (sequence ?? 0) >= target,
        stopped: yield* Shutdown.signalled,
        checkpoint: Option.match(checkpoint, {
          onNone: () => null,
          onSome: (p) => ({ position: p, sequence: Number(Position.toSequence(p)) })
        }),
        checkpointFile: Option.getOrNull(input.checkpoint),
        streams: lengths.map(({ stream, length }) => ({
          stream,
          written: tally.streams.get(stream)?.written ?? 0,
          length
        })),
        durationMs,
        eventsPerSecond: Output.rate(tally.events, durationMs)
      }
      if (json) return yield* Output.printJson(summary)
      yield* Output.print(
        `${summary.stopped ? "stopped: " : ""}${Output.count(tally.events)} events in ${tally.batches} batches, ${(durationMs / 1000).toFixed(2)} s (${Output.count(summary.eventsPerSecond)} events/s)` +
          (tally.skipped > 0 ? `, ${Output.count(tally.skipped)} already written (skipped)` : ""),
        checkpointLine(
          input.checkpoint,
          sequence === null ? undefined : `event ${Output.count(sequence)} of ${Output.count(target)}`
        ),
        ...summary.streams.map(
          (s) => `  ${s.stream}: ${Output.count(s.written)} written, XLEN ${Output.count(s.length)}`
        )
      )
    }).pipe(
      Effect.scoped,
      Effect.provide(
        Layer.mergeAll(Monitoring.layer(input.metricsPort), checkpoints).pipe(Layer.provideMerge(Redis.layer(url)))
      )
    )
  })
