/**
 * `redflow demo`: a source, the sink and a consumer group running together in one process, with a live progress
 * line, the metrics endpoint, and a summary of what landed and what was consumed. The source is PostgreSQL when it
 * can be (`DATABASE_URL`, else a server started for the demo): a schema of its own, seeded rows read by the initial
 * snapshot, then a live writer of inserts, updates and deletes captured by logical replication, wired as
 * `redflow run` wires it. Without PostgreSQL server binaries it runs the synthetic source, and says so first.
 */
import * as Clock from "effect/Clock"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import type * as Envelope from "@redflow/core/Envelope"
import * as MetricsServer from "@redflow/core/MetricsServer"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as Source from "@redflow/core/Source"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as PostgresSource from "@redflow/postgres/PostgresSource"
import { ConfigError } from "@redflow/core/ConfigError"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import * as RedisUrl from "@redflow/redis/RedisUrl"
import * as StreamAdmin from "@redflow/redis/StreamAdmin"
import { DEFAULTS } from "./commands/demo.ts"
import { namingFlags } from "./optionFlags.ts"
import { addBatch, emptyTally, sequenceOf, sourceOptions, type Tally, validateSink } from "./delivery.ts"
import * as DemoPostgres from "./demoPostgres.ts"
import * as DemoServers from "./demoServers.ts"
import { NoRedis } from "./errors.ts"
import * as Flags from "./flags.ts"
import * as Monitoring from "./monitoring.ts"
import * as Output from "./output.ts"
import * as PipelineConfig from "./pipelineConfig.ts"
import * as Redis from "./redis.ts"
import * as Shutdown from "./shutdown.ts"

export interface DemoInput {
  readonly source: DemoPostgres.Mode
  readonly redis: Option.Option<string>
  readonly events: Option.Option<number>
  readonly rate: Option.Option<number>
  readonly tables: Option.Option<ReadonlyArray<string>>
  readonly payloadBytes: number
  readonly guarantee: "at-least-once" | "exactly-once"
  readonly envelope: Envelope.Format
  readonly metricsPort: Option.Option<number>
}

const PIPELINE = "demo"
const GROUP = "demo"
const CONSUMER = "demo-1"

/** Where the demo's Redis came from. */
type RedisSource = "option" | "env" | "process"

const describeUrl = (url: string) => {
  const parsed = RedisUrl.parse(url)
  return parsed instanceof ConfigError ? url : RedisUrl.describe(parsed)
}

/** `--redis`, else `REDIS_URL`, else a `redis-server` started for the demo and stopped after it. */
const redisServer = (flag: Option.Option<string>) =>
  Effect.gen(function* () {
    const url = yield* Flags.redisUrlOption(flag)
    if (Option.isSome(url)) {
      return { url: url.value, source: (Option.isSome(flag) ? "option" : "env") as RedisSource, pid: undefined }
    }
    const server = yield* DemoServers.redis.pipe(
      Effect.catchTag("RedisNotInstalled", (e) =>
        Effect.fail(new NoRedis({ attempts: ["--redis is not given", "REDIS_URL is not set", e.message] }))
      )
    )
    return { url: server.url, source: "process" as RedisSource, pid: server.pid }
  })

/**
 * The metrics endpoint on `--metrics-port` (taken: an error, as in every command), else on the default port, or on a
 * free one when the default is taken.
 */
const monitoring = (asked: Option.Option<number>, info: (line: string) => Effect.Effect<void>) => {
  const build = (p: number) =>
    Layer.build(
      MetricsServer.layer({ port: p }).pipe(Layer.provideMerge(PipelineHealth.layer({ checks: [Redis.check] })))
    )
  return build(Option.getOrElse(asked, () => MetricsServer.DEFAULT_PORT)).pipe(
    Effect.catchIf(
      (e) => Option.isNone(asked) && e._tag === "MetricsServerError" && e.reason === "address-in-use",
      (e) =>
        Effect.flatMap(build(0), (context) =>
          Effect.as(info(`${e.message}: serving metrics on a free port instead`), context)
        )
    )
  )
}

/**
 * The command that shows the demo's streams, ready to paste: a password is never printed, so a URL with one is
 * left to `REDIS_URL` rather than shown redacted in a `--redis` that could not work.
 */
const inspectLine = (stream: string, url: string, source: RedisSource) => {
  const command = `redflow stream info ${stream}`
  if (source === "env") return `Inspect them with: ${command}`
  const parsed = RedisUrl.parse(url)
  if (!(parsed instanceof ConfigError) && parsed.password === undefined) {
    return `Inspect them with: ${command} --redis ${RedisUrl.describe(parsed)}`
  }
  return `Inspect them with: ${command} (with REDIS_URL set to the --redis URL; its password is not printed)`
}

/** What both demos share: where the commentary goes, the Redis they run on, the metrics they serve. */
interface Setting {
  readonly json: boolean
  readonly info: (line: string) => Effect.Effect<void>
  readonly redis: { readonly url: string; readonly source: RedisSource; readonly pid: number | undefined }
  readonly where: string
  readonly metrics: Context.Context<MetricsServer.MetricsServer | PipelineHealth.PipelineHealth>
  readonly metricsUrl: string
}

/** The consumer group `demo` on each stream, counting what its handler saw, op by op. */
const consumerGroup = (streams: ReadonlyArray<string>, envelope: Envelope.Format, startedAt: number) => {
  const stats = { consumed: 0, consumedAt: startedAt, ops: {} as Record<string, number> }
  const handler = (event: CdcEvent) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.sync(() => {
        stats.consumed++
        stats.consumedAt = now
        stats.ops[event.op] = (stats.ops[event.op] ?? 0) + 1
      })
    )
  const run = Effect.forEach(
    streams,
    (stream) =>
      RedisStreamConsumer.run({
        stream,
        group: GROUP,
        consumer: CONSUMER,
        envelope,
        block: "200 millis",
        handler
      }).pipe(PipelineHealth.track(`consumer:${stream}`)),
    { concurrency: "unbounded", discard: true }
  )
  const state = Effect.forEach(streams, (stream) =>
    StreamAdmin.groups(stream).pipe(
      Effect.map((groups) => groups.find((g) => g.name === GROUP)),
      Effect.map((g) => ({ stream, pending: g?.pending ?? 0, lag: g?.lag ?? 0 })),
      Effect.orElseSucceed(() => ({ stream, pending: 0, lag: 0 }))
    )
  )
  /** Entries in the streams now (XLEN summed). */
  const inRedis = (fallback: number) =>
    Effect.forEach(streams, (stream) => StreamAdmin.length(stream)).pipe(
      Effect.map((lengths) => lengths.reduce((n, l) => n + l, 0)),
      Effect.orElseSucceed(() => fallback)
    )
  return { stats, run: namingFlags(run), state, inRedis }
}

/** Waits until `done` holds (checked every 20 ms). */
const until = (done: () => boolean) =>
  Effect.sync(done).pipe(Effect.repeat({ until: (d) => d, schedule: Schedule.spaced("20 millis") }))

/** Each stream's length, what this run wrote to it, and the group's pending and lag there. */
const streamsState = (
  streams: ReadonlyArray<string>,
  tally: Tally,
  state: ReadonlyArray<{ stream: string; pending: number; lag: number }>
) =>
  Effect.forEach(streams, (stream) =>
    Effect.map(StreamAdmin.length(stream), (length) => ({
      stream,
      length,
      written: tally.streams.get(stream)?.written ?? 0,
      pending: state.find((s) => s.stream === stream)?.pending ?? 0,
      lag: state.find((s) => s.stream === stream)?.lag ?? 0
    }))
  )

const streamLines = (streams: ReadonlyArray<{ stream: string; length: number; written: number }>) => [
  "Streams:",
  ...streams.map(
    (s) => `  ${s.stream}: XLEN ${Output.count(s.length)} (${Output.count(s.written)} written by this run)`
  )
]

const redisClosing = (setting: Setting, stream: string) =>
  setting.redis.source === "process"
    ? "The demo's redis-server stops now; pass --redis or set REDIS_URL to keep the streams."
    : inspectLine(stream, setting.redis.url, setting.redis.source)

/** `: 300 snapshot reads, 2,500 inserts, …`, or nothing when there were none. */
const withOps = (ops: Readonly<Record<string, number>>) => {
  const text = DemoPostgres.opsText(ops)
  return text === "" ? "" : `: ${text}`
}

const sum = (state: ReadonlyArray<{ pending: number; lag: number }>, field: "pending" | "lag") =>
  state.reduce((n, s) => n + s[field], 0)

// ---------------------------------------------------------------------------------------------------------------
// The synthetic source
// ---------------------------------------------------------------------------------------------------------------

const synthetic = (
  input: DemoInput,
  source: SyntheticSource.Options,
  tables: ReadonlyArray<string>,
  choice: DemoPostgres.Choice,
  setting: Setting
) =>
  Effect.gen(function* () {
    const { info } = setting
    const events = source.count ?? DEFAULTS.synthetic.events
    const prefix = `demo.${Date.now().toString(36)}`
    const streams = tables.map((t) => `${prefix}.${t}`)
    const sink: RedisStreamSink.Options = {
      stream: `${prefix}.\${source.table}`,
      key: "${key.id}",
      pipeline: PIPELINE,
      guarantee: input.guarantee,
      envelope: input.envelope
    }
    yield* validateSink(sink)
    const rate = source.ratePerSecond ?? 0
    yield* info(
      `Producing ${Output.count(events)} events${rate > 0 ? ` at ${Output.count(rate)}/s` : ""} (${input.guarantee}) into ${streams.join(", ")}; consumer group "${GROUP}" reads them. Ctrl-C drains and stops.`
    )

    const startedAt = yield* Clock.currentTimeMillis
    const tally = emptyTally()
    const group = consumerGroup(streams, input.envelope, startedAt)
    let producing = true
    let producedAt = startedAt
    const stop = yield* Shutdown.drain({
      waitingFor: Effect.sync(() => {
        const unconsumed = `group "${GROUP}" to consume ${Output.count(Math.max(0, tally.written - group.stats.consumed))} of the ${Output.count(tally.written)} events written`
        return producing
          ? `the sink to write and checkpoint what it read after event ${Output.count(sequenceOf(tally.position) ?? 0)} (its last checkpoint), and ${unconsumed}`
          : unconsumed
      })
    })

    const producer = SyntheticSource.make(source).pipe(
      Stream.interruptWhen(stop),
      RedisStreamSink.deliver(sink),
      Stream.runForEach((batch) => Effect.sync(() => addBatch(tally, batch))),
      PipelineHealth.track(PIPELINE),
      Effect.ensuring(
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.sync(() => {
            producing = false
            producedAt = now
          })
        )
      )
    )
    // Everything the sink wrote to the demo's streams is consumed (the dead-letter stream is not the group's).
    const caughtUp = until(() => !producing && group.stats.consumed >= tally.written)

    let last = { at: startedAt, produced: 0, consumed: 0 }
    yield* Output.progressLine(
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const state = yield* group.state
        // Produced = in the streams (XLEN), read after the consumed count: the consumer reads entries as soon as
        // they are written, before their batch is checkpointed, so the checkpoint would show fewer than consumed.
        const consumedNow = group.stats.consumed
        const produced = yield* group.inRedis(sequenceOf(tally.position) ?? 0)
        const dt = now - last.at
        const line =
          `produced ${Output.count(produced)}/${Output.count(events)} ${Output.count(Output.rate(produced - last.produced, dt))}/s` +
          ` · consumed ${Output.count(consumedNow)} ${Output.count(Output.rate(consumedNow - last.consumed, dt))}/s` +
          ` · pending ${Output.count(sum(state, "pending"))}` +
          ` · lag ${Output.count(sum(state, "lag"))}`
        last = { at: now, produced, consumed: consumedNow }
        return line
      }),
      500
    )

    yield* Effect.raceFirst(group.run, Effect.andThen(producer, caughtUp)).pipe(Effect.provideContext(setting.metrics))

    const end = yield* Clock.currentTimeMillis
    const state = yield* group.state
    const consumed = group.stats.consumed
    const produceMs = producedAt - startedAt
    const consumeMs = group.stats.consumedAt - startedAt
    const checkpoint = tally.position
    const summary = {
      command: "demo",
      source: {
        type: "synthetic",
        reason:
          choice._tag !== "synthetic" || choice.reason === "flag"
            ? "--source"
            : choice.reason === "no-binaries"
              ? "no PostgreSQL binaries"
              : "PostgreSQL could not be started"
      },
      redis: { url: setting.where, source: setting.redis.source },
      guarantee: input.guarantee,
      events,
      produced: tally.events,
      written: tally.written,
      consumed,
      ops: group.stats.ops,
      batches: tally.batches,
      deadLettered: tally.deadLettered,
      pending: sum(state, "pending"),
      lag: sum(state, "lag"),
      streams: yield* streamsState(streams, tally, state),
      group: GROUP,
      checkpoint: Option.match(checkpoint, {
        onNone: () => null,
        onSome: (p) => ({ position: p, sequence: sequenceOf(checkpoint) })
      }),
      stopped: yield* Shutdown.signalled,
      durationMs: end - startedAt,
      producedPerSecond: Output.rate(tally.events, produceMs),
      consumedPerSecond: Output.rate(consumed, consumeMs),
      metrics: `${setting.metricsUrl}/metrics`
    }
    if (setting.json) return yield* Output.printJson(summary)
    yield* Output.print(
      "",
      `${summary.stopped ? "Stopped by Ctrl-C after draining: p" : "P"}roduced ${Output.count(tally.events)} events in ${Output.count(tally.batches)} batches in ${(produceMs / 1000).toFixed(2)} s (${Output.count(summary.producedPerSecond)} events/s, ${input.guarantee})`,
      `Consumed  ${Output.count(consumed)} events (group "${GROUP}") in ${(consumeMs / 1000).toFixed(2)} s (${Output.count(summary.consumedPerSecond)} events/s)${withOps(group.stats.ops)}`,
      `Pending ${summary.pending}, lag ${summary.lag}; checkpoint at event ${Output.count(sequenceOf(checkpoint) ?? 0)}`,
      ...streamLines(summary.streams),
      redisClosing(setting, streams[0]!)
    )
  })

// ---------------------------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------------------------

const postgres = (input: DemoInput, database: DemoPostgres.Database, setting: Setting) =>
  Effect.gen(function* () {
    const { info } = setting
    const events = Option.getOrElse(input.events, () => DEFAULTS.postgres.events)
    const rate = Option.getOrElse(input.rate, () => DEFAULTS.postgres.rate)
    const run = Date.now().toString(36)
    const prefix = `demo.${run}`
    const names = DemoPostgres.namesOf(run)
    const tables = ["customers", "orders"]
    const streams = tables.map((t) => `${prefix}.${t}`)
    // The settings `redflow run` would take from these flags, checked the same way (the password of DATABASE_URL,
    // or PGPASSWORD, becomes Redacted there).
    const config = yield* PipelineConfig.configure({
      ...PipelineConfig.noFlags,
      source: Option.some(database.url),
      tables: Option.some(tables.map((t) => `${names.schema}.${t}`)),
      redis: Option.some(setting.redis.url),
      stream: Option.some(`${prefix}.\${source.table}`),
      key: Option.some("${key.id}"),
      guarantee: Option.some(input.guarantee),
      envelope: Option.some(input.envelope),
      pipeline: Option.some(PIPELINE),
      slot: Option.some(names.slot),
      publication: Option.some(names.publication),
      snapshot: Option.some("initial")
    })
    if (Option.isSome(input.tables)) {
      yield* info(
        "--tables and --payload-bytes shape the synthetic source: PostgreSQL runs its own customers and orders."
      )
    }
    const workload = yield* DemoPostgres.prepare(database, names)
    const source = yield* PostgresSource.make(config.source).pipe(Effect.provideContext(setting.metrics))
    yield* info(
      `Seeded ${Output.count(DemoPostgres.SEED.customers)} customers and ${Output.count(DemoPostgres.SEED.orders)} orders in ${source.tables.join(", ")} (read by the initial snapshot); ` +
        `then ${Output.count(events)} live changes (inserts, updates, deletes)${rate > 0 ? ` at ${Output.count(rate)}/s` : ""}, ` +
        `through slot ${source.slot} (publication ${source.publication}) into ${streams.join(", ")} (${input.guarantee}); ` +
        `consumer group "${GROUP}" reads them. Ctrl-C drains and stops.`
    )

    const startedAt = yield* Clock.currentTimeMillis
    const tally = emptyTally()
    const group = consumerGroup(streams, input.envelope, startedAt)
    const committed = workload.committed
    /** Every event the database owes the streams: the snapshot's rows and each change committed. */
    const expected = () => workload.seeded + committed.changes
    let read = 0
    let writing = true
    let producing = true
    let writingFrom = startedAt
    let committedAt = startedAt
    const firstRead = yield* Deferred.make<void>()
    const finished = yield* Deferred.make<void>()
    const stop = yield* Shutdown.drain({
      waitingFor: Effect.sync(() => {
        const unconsumed = `group "${GROUP}" to consume ${Output.count(Math.max(0, tally.written - group.stats.consumed))} of the ${Output.count(tally.written)} events written`
        return producing
          ? `${writing ? "the writer to finish its transaction, " : ""}the pipeline to bring the ${Output.count(Math.max(0, expected() - tally.events))} changes committed but not yet written into Redis, and ${unconsumed}`
          : unconsumed
      })
    })

    // As `redflow run` wires it: source → sink → checkpoint, acknowledged to the slot, tracked for /health.
    const pipeline = source.stream(Option.none()).pipe(
      Stream.mapArray((batch) => {
        read += batch.length
        // The first row of the snapshot comes after the slot's consistent point: a change committed from now on is
        // streamed as a change, not read as a row.
        Deferred.doneUnsafe(firstRead, Effect.void)
        return batch
      }),
      Stream.interruptWhen(Deferred.await(finished)),
      RedisStreamSink.deliver(config.sink),
      Stream.runForEach((batch) => Effect.sync(() => addBatch(tally, batch))),
      Source.acknowledgeCommits(source, config.pipeline),
      PipelineHealth.track(config.pipeline),
      Effect.ensuring(
        Effect.sync(() => {
          producing = false
        })
      )
    )
    // Ctrl-C stops the writer between transactions; what it committed still goes through before the source stops.
    const writer = Effect.raceFirst(
      Deferred.await(firstRead).pipe(
        Effect.andThen(Clock.currentTimeMillis),
        Effect.flatMap((now) => {
          writingFrom = now
          return workload.write({ changes: events, rate })
        })
      ),
      stop
    ).pipe(
      Effect.ensuring(
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.sync(() => {
            writing = false
            committedAt = now
          })
        )
      )
    )
    // The source stops once the sink has written and checkpointed every event the database owes.
    const settle = writer.pipe(
      Effect.andThen(until(() => tally.events >= expected())),
      Effect.andThen(Deferred.succeed(finished, undefined))
    )
    const caughtUp = until(() => !producing && group.stats.consumed >= tally.written)

    let last = { at: startedAt, committed: 0, consumed: 0 }
    yield* Output.progressLine(
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const consumedNow = group.stats.consumed
        const changes = committed.changes
        const inRedis = yield* group.inRedis(tally.written)
        const snapshotRows = group.stats.ops.r ?? 0
        const dt = now - last.at
        const line =
          (snapshotRows < workload.seeded
            ? `snapshot ${Output.count(snapshotRows)}/${Output.count(workload.seeded)} rows · `
            : "") +
          `committed ${Output.count(changes)}/${Output.count(events)} changes ${Output.count(Output.rate(changes - last.committed, dt))}/s` +
          ` · in Redis ${Output.count(inRedis)}` +
          ` · consumed ${Output.count(consumedNow)} ${Output.count(Output.rate(consumedNow - last.consumed, dt))}/s` +
          ` · lag ${Output.count(Math.max(0, workload.seeded + changes - consumedNow))}`
        last = { at: now, committed: changes, consumed: consumedNow }
        return line
      }),
      500
    )

    yield* Effect.raceFirst(
      group.run,
      Effect.all([pipeline, settle], { concurrency: "unbounded", discard: true }).pipe(Effect.andThen(caughtUp))
    ).pipe(Effect.provideContext(setting.metrics))

    const end = yield* Clock.currentTimeMillis
    const state = yield* group.state
    const consumed = group.stats.consumed
    const commitMs = committedAt - writingFrom
    const consumeMs = group.stats.consumedAt - startedAt
    const streamsNow = yield* streamsState(streams, tally, state)
    const inRedis = streamsNow.reduce((n, s) => n + s.length, 0)
    const summary = {
      command: "demo",
      source: {
        type: "postgres",
        origin: database.origin === "started" ? "started" : "DATABASE_URL",
        url: config.sourceUrl,
        server: source.server,
        version: database.version,
        ...(database.pid === undefined ? {} : { pid: database.pid }),
        schema: names.schema,
        tables: source.tables,
        slot: source.slot,
        publication: source.publication
      },
      redis: { url: setting.where, source: setting.redis.source },
      guarantee: input.guarantee,
      events,
      snapshot: { rows: workload.seeded },
      committed: { changes: committed.changes, transactions: committed.transactions, ops: { ...committed.ops } },
      read,
      inRedis,
      written: tally.written,
      consumed,
      ops: group.stats.ops,
      batches: tally.batches,
      deadLettered: tally.deadLettered,
      pending: sum(state, "pending"),
      lag: sum(state, "lag"),
      streams: streamsNow,
      group: GROUP,
      checkpoint: Option.getOrNull(tally.position),
      stopped: yield* Shutdown.signalled,
      durationMs: end - startedAt,
      committedPerSecond: Output.rate(committed.changes, commitMs),
      consumedPerSecond: Output.rate(consumed, consumeMs),
      metrics: `${setting.metricsUrl}/metrics`
    }
    if (setting.json) return yield* Output.printJson(summary)
    yield* Output.print(
      "",
      ...(summary.stopped
        ? ["Stopped by Ctrl-C after draining: the writer stopped between transactions; what it committed went through."]
        : []),
      `Snapshot  ${Output.count(workload.seeded)} rows of ${source.tables.join(", ")} (seeded before the slot existed)`,
      `Committed ${Output.count(committed.changes)} changes in ${Output.count(committed.transactions)} transactions in ${(commitMs / 1000).toFixed(2)} s (${Output.count(summary.committedPerSecond)} changes/s)${withOps(committed.ops)}`,
      `In Redis  ${Output.count(inRedis)} events in ${Output.count(tally.batches)} batches (${input.guarantee}); slot ${source.slot} acknowledged through checkpoint ${Option.getOrElse(tally.position, () => "none")}`,
      `Consumed  ${Output.count(consumed)} events (group "${GROUP}") in ${(consumeMs / 1000).toFixed(2)} s (${Output.count(summary.consumedPerSecond)} events/s)${withOps(group.stats.ops)}`,
      `Pending ${summary.pending}, lag ${summary.lag}`,
      ...streamLines(streamsNow),
      database.origin === "started"
        ? "The demo's PostgreSQL stops now; set DATABASE_URL to capture a server of yours."
        : `The demo's slot, publication and schema ${names.schema} are dropped from ${database.server} now.`,
      redisClosing(setting, streams[0]!)
    )
  })

/** The command's work, once its flags are parsed. */
export const run = (input: DemoInput) =>
  Effect.gen(function* () {
    const json = yield* Flags.Json
    // With --json, stdout carries only the final object: the running commentary goes to stderr.
    const info = (line: string) => (json ? Console.error(line) : Console.log(line))
    // The synthetic source's flags are checked first (exit 2 before anything starts), whichever source runs.
    const tables = Option.getOrElse(input.tables, () => [...SyntheticSource.defaults.tables])
    const syntheticSource = yield* sourceOptions({
      events: Option.getOrElse(input.events, () => DEFAULTS.synthetic.events),
      rate: Option.some(Option.getOrElse(input.rate, () => DEFAULTS.synthetic.rate)),
      tables: Option.some(tables),
      payloadBytes: Option.some(input.payloadBytes),
      seed: 1
    })

    // The first line says which source runs.
    const choice = yield* DemoPostgres.choose(input.source)
    yield* info(DemoPostgres.sourceLine(choice))

    const redis = yield* redisServer(input.redis)
    const where = describeUrl(redis.url)
    yield* info(
      redis.source === "process"
        ? `No --redis and no REDIS_URL: started redis-server at ${where} (pid ${redis.pid}); it stops when the demo ends.`
        : `Redis: ${where} (${redis.source === "option" ? "--redis" : "REDIS_URL"})`
    )

    return yield* Effect.gen(function* () {
      const metrics = yield* monitoring(input.metricsPort, info)
      const server = Context.get(metrics, MetricsServer.MetricsServer)
      yield* info(`Metrics: ${server.url}/metrics (health: ${server.url}/health, readiness: ${server.url}/ready)`)
      const setting: Setting = { json, info, redis, where, metrics, metricsUrl: server.url }
      return yield* choice._tag === "postgres"
        ? postgres(input, choice.database, setting)
        : synthetic(input, syntheticSource, tables, choice, setting)
    }).pipe(Effect.scoped, Effect.provide(CheckpointStore.layerMemory.pipe(Layer.provideMerge(Redis.layer(redis.url)))))
    // Traces by the OTEL_* variables, as in run, produce and consume: spans are flushed when the demo ends.
  }).pipe(Effect.scoped, Effect.provide(Monitoring.tracing))
