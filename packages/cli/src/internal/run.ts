/**
 * `redflow run`: a PostgreSQL → Redis Streams pipeline as a long-running command. It reads the changes of chosen
 * tables by logical replication, writes them through the sink, checkpoints them and acknowledges them to the
 * replication slot, until SIGTERM or Ctrl-C; it then drains (what was read is written and checkpointed, the slot is
 * acknowledged up to it) and exits 0. Settings come from flags, a YAML file (`--config`) or both: see
 * `pipelineConfig.ts`.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { GlobalFlag } from "effect/cli"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as Source from "@redflow/core/Source"
import type * as Position from "@redflow/core/Position"
import * as PostgresSource from "@redflow/postgres/PostgresSource"
import * as RedisCheckpointStore from "@redflow/redis/RedisCheckpointStore"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import * as Flags from "./flags.ts"
import * as MetricValues from "./metricValues.ts"
import * as Monitoring from "./monitoring.ts"
import * as Output from "./output.ts"
import * as PipelineConfig from "./pipelineConfig.ts"
import { addBatch, announceStandby, emptyTally, streamLengths } from "./delivery.ts"
import * as Redis from "./redis.ts"
import * as Shutdown from "./shutdown.ts"

/** The source's name in events and metrics (the library's default). */
const SOURCE_NAME = "postgres"

/** Where the checkpoints are, as a phrase. */
const storeText = (checkpoint: PipelineConfig.Checkpoint): string => {
  switch (checkpoint._tag) {
    case "file":
      return checkpoint.path
    case "redis":
      return `Redis hash ${checkpoint.key}`
    case "memory":
      return "memory"
  }
}

const checkpointLayer = (checkpoint: PipelineConfig.Checkpoint) => {
  switch (checkpoint._tag) {
    case "file":
      return CheckpointStore.layerFile(checkpoint.path)
    case "redis":
      return RedisCheckpointStore.layer({ key: checkpoint.key })
    case "memory":
      return CheckpointStore.layerMemory
  }
}

const seconds = (s: number) => (s < 10 ? s.toFixed(1) : Math.round(s).toString())

const bytes = (n: number) =>
  n < 1024 ? `${n} B` : n < 1024 ** 2 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 ** 2).toFixed(1)} MiB`

const pipeline = (flags: PipelineConfig.RunFlags) =>
  Effect.gen(function* () {
    const json = yield* Flags.Json
    const config = yield* PipelineConfig.configure(flags)
    const pipeline = config.pipeline

    return yield* Effect.gen(function* () {
      yield* Monitoring.announce(json)
      const store = yield* CheckpointStore.CheckpointStore
      const scope = yield* Effect.scope
      const leased = config.sink.lease !== undefined
      let readCount = 0
      let from = Option.none<Position.Position>()
      let source: PostgresSource.PostgresSource | undefined
      // Where the run starts, and the source (the slot opened, the snapshot or the stream begun). Under a lease both
      // wait until the sink holds it (the source's first pull comes after it): a standby must not open the slot the
      // active process streams from, and must resume from the checkpoint that process left, not the one it found.
      // The source lives in the command's scope either way, so the slot is acknowledged until the very end.
      const open = Effect.gen(function* () {
        from = yield* store.load(pipeline)
        const opened = yield* Effect.provideService(PostgresSource.make(config.source), Scope.Scope, scope)
        source = opened
        yield* Output.line(
          `redflow: pipeline ${pipeline}: ${opened.tables.join(", ")} from ${config.sourceUrl} ` +
            `(slot ${opened.slot}, publication ${opened.publication}) into ${config.sink.stream}` +
            `${Option.isSome(from) ? `, resuming after checkpoint ${from.value}` : ""}; ` +
            `checkpoints: ${storeText(config.checkpoint)}; SIGTERM or Ctrl-C drains and stops` +
            `${leased ? "; holding the lease" : ""}`
        )
        if (config.checkpoint._tag === "memory") {
          yield* Output.line(
            "redflow: warn: no --checkpoint (FILE or redis): checkpoints are kept in memory only, so after a restart " +
              "the pipeline does not know what it has written"
          )
        }
        return opened.stream(from)
      })
      const changes = leased ? Stream.unwrap(open) : yield* open
      if (leased) yield* announceStandby(pipeline, " (the slot is opened once this process holds the lease)")
      const tally = emptyTally()
      const attributes = { source: SOURCE_NAME }
      const read = Effect.sync(() => readCount)
      const stop = yield* Shutdown.drain({
        waitingFor: Effect.map(read, (n) => {
          const left = Math.max(0, n - tally.events)
          return `${Output.count(left)} events read from PostgreSQL to be written and checkpointed, and the slot to be acknowledged`
        })
      })
      const startedAt = yield* Clock.currentTimeMillis
      let last = { at: startedAt, events: 0 }
      yield* Output.progressLine(
        Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis
          const readNow = yield* read
          const lagSeconds = yield* MetricValues.sum("source_replication_lag_seconds", attributes)
          const lagBytes = yield* MetricValues.sum("source_replication_lag_bytes", attributes)
          const perSecond = Output.rate(tally.events - last.events, now - last.at)
          last = { at: now, events: tally.events }
          return (
            `read ${Output.count(readNow)} · written ${Output.count(tally.events)} events · ` +
            `${Output.count(perSecond)} events/s · replication lag ${seconds(lagSeconds)} s (${bytes(lagBytes)} of WAL)`
          )
        })
      )
      yield* changes.pipe(
        Stream.mapArray((events) => {
          readCount += events.length
          return events
        }),
        Stream.interruptWhen(stop),
        RedisStreamSink.deliver(config.sink),
        Stream.runForEach((batch) => Effect.sync(() => addBatch(tally, batch))),
        Source.acknowledgeCommits(
          { acknowledge: (position) => (source === undefined ? Effect.void : source.acknowledge(position)) },
          pipeline
        ),
        PipelineHealth.track(pipeline)
      )
      const durationMs = (yield* Clock.currentTimeMillis) - startedAt
      // A standby stopped before it held the lease opened no source (nothing was read): the settings name it.
      const opened = source ?? {
        server: config.sourceUrl,
        tables: config.source.tables,
        slot: config.source.slot,
        publication: config.source.publication
      }
      const lengths = yield* streamLengths(tally.streams.keys())
      const checkpoint = Option.orElse(tally.position, () => from)
      const summary = {
        command: "run",
        pipeline,
        source: config.sourceUrl,
        server: opened.server,
        tables: opened.tables,
        slot: opened.slot,
        publication: opened.publication,
        guarantee: config.sink.guarantee ?? "at-least-once",
        events: tally.events,
        written: tally.written,
        skipped: tally.skipped,
        deadLettered: tally.deadLettered,
        batches: tally.batches,
        stopped: yield* Shutdown.signalled,
        resumedFrom: Option.getOrNull(from),
        checkpoint: Option.getOrNull(checkpoint),
        checkpointStore:
          config.checkpoint._tag === "file"
            ? { type: "file", path: config.checkpoint.path }
            : config.checkpoint._tag === "redis"
              ? { type: "redis", key: config.checkpoint.key }
              : { type: "memory" },
        streams: lengths.map(({ length, stream }) => ({
          stream,
          written: tally.streams.get(stream)?.written ?? 0,
          length
        })),
        durationMs,
        eventsPerSecond: Output.rate(tally.events, durationMs)
      }
      if (json) return yield* Output.printJson(summary)
      yield* Output.print(
        `${summary.stopped ? "stopped: " : ""}${Output.count(tally.events)} events written in ${tally.batches} batches, ` +
          `${(durationMs / 1000).toFixed(2)} s (${Output.count(summary.eventsPerSecond)} events/s)` +
          (tally.skipped > 0 ? `, ${Output.count(tally.skipped)} already written (skipped)` : "") +
          (tally.deadLettered > 0 ? `, ${Output.count(tally.deadLettered)} dead-lettered` : ""),
        config.checkpoint._tag === "memory"
          ? `checkpoint: not saved (no --checkpoint)${Option.isSome(checkpoint) ? `; delivered through ${checkpoint.value}` : ""}`
          : `checkpoint: ${Option.getOrElse(checkpoint, () => "none")} (${storeText(config.checkpoint)})`,
        `slot: ${opened.slot} on ${opened.server} (publication ${opened.publication}), acknowledged through the checkpoint`,
        ...summary.streams.map(
          (s) => `  ${s.stream}: ${Output.count(s.written)} written, XLEN ${Output.count(s.length)}`
        )
      )
    }).pipe(
      Effect.scoped,
      Effect.provide(
        Layer.mergeAll(Monitoring.layer(config.metricsPort), checkpointLayer(config.checkpoint)).pipe(
          Layer.provideMerge(Redis.layer(config.redisUrl))
        )
      )
    )
  })

/** A long-running pipeline's warnings matter (a slot retaining WAL, a retried write): shown unless --log-level says. */
const withWarnings = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const verbose = yield* Flags.Verbose
    const logLevel = yield* GlobalFlag.LogLevel
    if (verbose || Option.isSome(logLevel)) return yield* self
    return yield* Effect.provideService(self, References.MinimumLogLevel, "Warn")
  })

/** The command's work: the pipeline until a signal drains it, with the warnings a long-running process shows. */
export const run = (flags: PipelineConfig.RunFlags) => withWarnings(pipeline(flags))
