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
import * as Stream from "effect/Stream"
import { Command, Flag, GlobalFlag } from "effect/cli"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as Envelope from "@redflow/core/Envelope"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as Source from "@redflow/core/Source"
import * as PostgresSource from "@redflow/postgres/PostgresSource"
import * as RedisCheckpointStore from "@redflow/redis/RedisCheckpointStore"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import * as Flags from "./flags.ts"
import * as MetricValues from "./metricValues.ts"
import * as Output from "./output.ts"
import * as PipelineConfig from "./pipelineConfig.ts"
import { addBatch, announceMetrics, emptyTally, metricsLayer, streamLengths } from "./produce.ts"
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

/** The settings in force: flags over the file, checked before anything connects. */
export const configure = (flags: PipelineConfig.RunFlags) =>
  Effect.gen(function* () {
    const env = process.env
    const file = Option.isSome(flags.config)
      ? Option.some(yield* PipelineConfig.load(flags.config.value, env))
      : Option.none<PipelineConfig.FileConfig>()
    const config = yield* Effect.fromResult(PipelineConfig.resolve(flags, file, env))
    yield* RedisStreamSink.validate(config.sink).pipe(
      Effect.mapError((e) => PipelineConfig.sinkFault(config, flags.config, e.field, e.message))
    )
    return config
  })

const run = (flags: PipelineConfig.RunFlags) =>
  Effect.gen(function* () {
    const json = yield* Flags.Json
    const config = yield* configure(flags)
    const pipeline = config.pipeline

    return yield* Effect.gen(function* () {
      yield* announceMetrics(json)
      const store = yield* CheckpointStore.CheckpointStore
      const from = yield* store.load(pipeline)
      const source = yield* PostgresSource.make(config.source)
      const tally = emptyTally()
      const attributes = { source: SOURCE_NAME }
      let readCount = 0
      const read = Effect.sync(() => readCount)
      const stop = yield* Shutdown.drain({
        waitingFor: Effect.map(read, (n) => {
          const left = Math.max(0, n - tally.events)
          return `${Output.count(left)} events read from PostgreSQL to be written and checkpointed, and the slot to be acknowledged`
        })
      })
      process.stderr.write(
        `redflow: pipeline ${pipeline}: ${source.tables.join(", ")} from ${config.sourceUrl} ` +
          `(slot ${source.slot}, publication ${source.publication}) into ${config.sink.stream}` +
          `${Option.isSome(from) ? `, resuming after checkpoint ${from.value}` : ""}; ` +
          `checkpoints: ${storeText(config.checkpoint)}; SIGTERM or Ctrl-C drains and stops\n`
      )
      if (config.checkpoint._tag === "memory") {
        process.stderr.write(
          "redflow: warn: no --checkpoint (FILE or redis): checkpoints are kept in memory only, so after a restart " +
            "the pipeline does not know what it has written\n"
        )
      }
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
      yield* source.stream(from).pipe(
        Stream.mapArray((events) => {
          readCount += events.length
          return events
        }),
        Stream.interruptWhen(stop),
        RedisStreamSink.deliver(config.sink),
        Stream.runForEach((batch) => Effect.sync(() => addBatch(tally, batch))),
        Source.acknowledgeCommits(source, pipeline),
        PipelineHealth.track(pipeline)
      )
      const durationMs = (yield* Clock.currentTimeMillis) - startedAt
      const lengths = yield* streamLengths(tally.streams.keys())
      const checkpoint = Option.orElse(tally.position, () => from)
      const summary = {
        command: "run",
        pipeline,
        source: config.sourceUrl,
        server: source.server,
        tables: source.tables,
        slot: source.slot,
        publication: source.publication,
        guarantee: config.sink.guarantee ?? "at-least-once",
        events: tally.events,
        written: tally.written,
        skipped: tally.skipped,
        deadLettered: tally.deadLettered,
        batches: tally.batches,
        stopped: Shutdown.signalled(),
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
        `slot: ${source.slot} on ${source.server} (publication ${source.publication}), acknowledged through the checkpoint`,
        ...summary.streams.map(
          (s) => `  ${s.stream}: ${Output.count(s.written)} written, XLEN ${Output.count(s.length)}`
        )
      )
    }).pipe(
      Effect.scoped,
      Effect.provide(
        Layer.mergeAll(metricsLayer(config.metricsPort), checkpointLayer(config.checkpoint)).pipe(
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

const optionalString = (name: string, metavar: string, description: string) =>
  Flag.String(name).pipe(Flag.withMetavar(metavar), Flag.withDescription(description), Flag.optional)

export const command = Command.make(
  "run",
  {
    config: optionalString(
      "config",
      "FILE",
      "Pipeline file (YAML): source, redis, sink, checkpoint, metrics; ${NAME} takes an environment variable. Flags override it"
    ),
    source: optionalString(
      "source",
      "URL",
      "PostgreSQL URL, postgres://user[:password]@host:5432/db (a password can also come from the file or PGPASSWORD; it is never printed)"
    ),
    tables: Flags.list("tables").pipe(
      Flag.withMetavar("s.t,…"),
      Flag.withDescription("Tables to capture, schema.table (or table, in schema public), comma-separated"),
      Flag.optional
    ),
    redis: Flags.redis,
    stream: optionalString(
      "stream",
      "TEMPLATE",
      "Target stream name or template, e.g. 'cdc.${source.table}' (single quotes: the shell would expand ${…})"
    ),
    key: optionalString("key", "TEMPLATE", "Entry key template, e.g. '${key.id}'"),
    guarantee: Flag.Literals("guarantee", ["at-least-once", "exactly-once"]).pipe(
      Flag.withMetavar("MODE"),
      Flag.withDescription(
        "exactly-once skips entries already written (no duplicates after a crash or a retry); default at-least-once"
      ),
      Flag.optional
    ),
    envelope: Flag.Literals("envelope", Envelope.formats).pipe(
      Flag.withMetavar("FORMAT"),
      Flag.withDescription("Encoding of each entry's event field: native (default), debezium or cloudevents"),
      Flag.optional
    ),
    checkpoint: optionalString(
      "checkpoint",
      "FILE|redis",
      `Where checkpoints are kept: a file, or redis (the hash ${PipelineConfig.DEFAULT_CHECKPOINT_HASH}); a restart resumes there. Default: memory only`
    ),
    pipeline: optionalString(
      "pipeline",
      "NAME",
      "Pipeline name: the checkpoint key, the metrics label, and the default slot and publication (default redflow)"
    ),
    slot: optionalString("slot", "NAME", "Replication slot, created when absent (default: the pipeline name)"),
    publication: optionalString(
      "publication",
      "NAME",
      "Publication, created for the tables when absent (default: the pipeline name)"
    ),
    snapshot: Flag.Literals("snapshot", ["initial", "never"]).pipe(
      Flag.withMetavar("MODE"),
      Flag.withDescription(
        "initial (default): read the tables' rows first when there is no checkpoint; never: changes only"
      ),
      Flag.optional
    ),
    batchSize: Flags.intAtLeast("batch-size", 1, "events per batch").pipe(
      Flag.withMetavar("N"),
      Flag.withDescription("Window of events written but not yet checkpointed (default 4000)"),
      Flag.optional
    ),
    maxlen: Flags.intAtLeast("maxlen", 1, "a stream length").pipe(
      Flag.withMetavar("N"),
      Flag.withDescription("Trim each stream to about N entries (MAXLEN ~)"),
      Flag.optional
    ),
    metricsPort: Flags.metricsPort.pipe(
      Flag.withDescription(
        "Serve /metrics, /health and /ready on this port (0 = a free port; a taken port is an error)"
      ),
      Flag.optional
    )
  },
  (flags) => Output.handler(withWarnings(run(flags)))
).pipe(
  Command.withDescription(
    "Run a PostgreSQL → Redis Streams pipeline until SIGTERM or Ctrl-C, then drain: what was read is written and checkpointed, the replication slot is acknowledged, and the command exits 0."
  ),
  Command.withExamples([
    {
      command:
        "redflow run --source postgres://redflow@db:5432/shop --tables public.orders,public.customers --redis redis://localhost:6379 --stream 'cdc.${source.table}' --checkpoint ./shop.ckpt",
      description: "Capture two tables into cdc.orders and cdc.customers, resumable from ./shop.ckpt"
    },
    {
      command: "redflow run --config pipeline.yaml --metrics-port 9000",
      description: "The settings of pipeline.yaml, with the metrics served on port 9000"
    }
  ])
)
