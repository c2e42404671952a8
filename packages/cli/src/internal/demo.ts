/**
 * `redflow demo`: the synthetic source, the sink and a consumer group running together in one process, with a live
 * progress line, the metrics endpoint, and a summary of what landed and what was consumed.
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import { Command, Flag } from "effect/cli"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import type * as Envelope from "@redflow/core/Envelope"
import * as MetricsServer from "@redflow/core/MetricsServer"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import { RedisConfigError } from "@redflow/redis/RedisError"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import * as RedisUrl from "@redflow/redis/RedisUrl"
import * as StreamAdmin from "@redflow/redis/StreamAdmin"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { namingFlags } from "./consume.ts"
import { NoRedis } from "./errors.ts"
import * as Flags from "./flags.ts"
import * as Output from "./output.ts"
import { addBatch, emptyTally, sequenceOf, sourceOptions, validateSink } from "./produce.ts"
import * as Redis from "./redis.ts"
import * as Shutdown from "./shutdown.ts"

export interface DemoInput {
  readonly redis: Option.Option<string>
  readonly events: number
  readonly rate: number
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
type RedisSource = "option" | "env" | "process" | "container"

const describeUrl = (url: string) => {
  const parsed = RedisUrl.parse(url)
  return parsed instanceof RedisConfigError ? url : RedisUrl.describe(parsed)
}

/** `--redis`, else `REDIS_URL`, else a `redis-server` (or container) started for the demo and stopped after it. */
const redisServer = (flag: Option.Option<string>) =>
  Effect.gen(function* () {
    const url = yield* Flags.redisUrlOption(flag)
    if (Option.isSome(url)) {
      return { url: url.value, source: (Option.isSome(flag) ? "option" : "env") as RedisSource, pid: undefined }
    }
    const server = yield* RedisTestServer.make({ useEnv: false }).pipe(
      Effect.catchTag("NoRedisAvailable", (e) => Effect.fail(new NoRedis({ attempts: e.attempts })))
    )
    return { url: server.url, source: server.source as RedisSource, pid: server.pid }
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
  const command = `pnpm redflow stream info ${stream}`
  if (source === "env") return `Inspect them with: ${command}`
  const parsed = RedisUrl.parse(url)
  if (!(parsed instanceof RedisConfigError) && parsed.password === undefined) {
    return `Inspect them with: ${command} --redis ${RedisUrl.describe(parsed)}`
  }
  return `Inspect them with: ${command} (with REDIS_URL set to the --redis URL; its password is not printed)`
}

const run = (input: DemoInput) =>
  Effect.gen(function* () {
    const json = yield* Flags.Json
    // With --json, stdout carries only the final object: the running commentary goes to stderr.
    const info = (line: string) => Effect.sync(() => (json ? process.stderr : process.stdout).write(`${line}\n`))
    const tables = Option.getOrElse(input.tables, () => [...SyntheticSource.defaults.tables])
    const source = yield* sourceOptions({
      events: input.events,
      rate: input.rate > 0 ? Option.some(input.rate) : Option.none(),
      tables: Option.some(tables),
      payloadBytes: Option.some(input.payloadBytes),
      seed: 1
    })
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

    const redis = yield* redisServer(input.redis)
    const where = describeUrl(redis.url)
    yield* info(
      redis.source === "process"
        ? `No --redis and no REDIS_URL: started redis-server at ${where} (pid ${redis.pid}); it stops when the demo ends.`
        : redis.source === "container"
          ? `No --redis and no REDIS_URL, and no redis-server binary: started a redis:7 container at ${where}; it stops when the demo ends.`
          : `Redis: ${where} (${redis.source === "option" ? "--redis" : "REDIS_URL"})`
    )

    return yield* Effect.gen(function* () {
      const context = yield* monitoring(input.metricsPort, info)
      const server = Context.get(context, MetricsServer.MetricsServer)
      yield* info(`Metrics: ${server.url}/metrics (health: ${server.url}/health, readiness: ${server.url}/ready)`)
      yield* info(
        `Producing ${Output.count(input.events)} events${input.rate > 0 ? ` at ${Output.count(input.rate)}/s` : ""} (${input.guarantee}) into ${streams.join(", ")}; consumer group "${GROUP}" reads them. Ctrl-C drains and stops.`
      )

      const startedAt = yield* Clock.currentTimeMillis
      const tally = emptyTally()
      let producing = true
      let producedAt = startedAt
      let consumed = 0
      let consumedAt = startedAt
      const ops: Record<string, number> = {}
      const stop = yield* Shutdown.drain({
        waitingFor: Effect.sync(() => {
          const unconsumed = `group "${GROUP}" to consume ${Output.count(Math.max(0, tally.written - consumed))} of the ${Output.count(tally.written)} events written`
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
      const handler = (event: CdcEvent) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.sync(() => {
            consumed++
            consumedAt = now
            ops[event.op] = (ops[event.op] ?? 0) + 1
          })
        )
      const consumers = Effect.forEach(
        streams,
        (stream) =>
          RedisStreamConsumer.run({
            stream,
            group: GROUP,
            consumer: CONSUMER,
            envelope: input.envelope,
            block: "200 millis",
            handler
          }).pipe(PipelineHealth.track(`consumer:${stream}`)),
        { concurrency: "unbounded", discard: true }
      )
      // Everything the sink wrote to the demo's streams is consumed (the dead-letter stream is not the group's).
      const caughtUp = Effect.sync(() => !producing && consumed >= tally.written).pipe(
        Effect.repeat({ until: (done) => done, schedule: Schedule.spaced("20 millis") })
      )

      const groupsState = Effect.forEach(streams, (stream) =>
        StreamAdmin.groups(stream).pipe(
          Effect.map((groups) => groups.find((g) => g.name === GROUP)),
          Effect.map((g) => ({ stream, pending: g?.pending ?? 0, lag: g?.lag ?? 0 })),
          Effect.orElseSucceed(() => ({ stream, pending: 0, lag: 0 }))
        )
      )
      let last = { at: startedAt, produced: 0, consumed: 0 }
      yield* Output.progressLine(
        Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis
          const state = yield* groupsState
          // Produced = in the streams (XLEN), read after the consumed count: the consumer reads entries as soon as
          // they are written, before their batch is checkpointed, so the checkpoint would show fewer than consumed.
          const consumedNow = consumed
          const produced = yield* Effect.forEach(streams, (stream) => StreamAdmin.length(stream)).pipe(
            Effect.map((lengths) => lengths.reduce((n, l) => n + l, 0)),
            Effect.orElseSucceed(() => sequenceOf(tally.position) ?? 0)
          )
          const dt = now - last.at
          const line =
            `produced ${Output.count(produced)}/${Output.count(input.events)} ${Output.count(Output.rate(produced - last.produced, dt))}/s` +
            ` · consumed ${Output.count(consumedNow)} ${Output.count(Output.rate(consumedNow - last.consumed, dt))}/s` +
            ` · pending ${Output.count(state.reduce((n, s) => n + s.pending, 0))}` +
            ` · lag ${Output.count(state.reduce((n, s) => n + s.lag, 0))}`
          last = { at: now, produced, consumed: consumedNow }
          return line
        }),
        500
      )

      yield* Effect.raceFirst(namingFlags(consumers), Effect.andThen(producer, caughtUp)).pipe(
        Effect.provideContext(context)
      )

      const end = yield* Clock.currentTimeMillis
      const state = yield* groupsState
      const lengths = yield* Effect.forEach(streams, (stream) =>
        Effect.map(StreamAdmin.length(stream), (length) => ({ stream, length }))
      )
      const produceMs = producedAt - startedAt
      const consumeMs = consumedAt - startedAt
      const checkpoint = tally.position
      const summary = {
        command: "demo",
        redis: { url: where, source: redis.source },
        guarantee: input.guarantee,
        events: input.events,
        produced: tally.events,
        written: tally.written,
        consumed,
        ops,
        batches: tally.batches,
        deadLettered: tally.deadLettered,
        pending: state.reduce((n, s) => n + s.pending, 0),
        lag: state.reduce((n, s) => n + s.lag, 0),
        streams: lengths.map(({ length, stream }) => ({
          stream,
          length,
          written: tally.streams.get(stream)?.written ?? 0,
          pending: state.find((s) => s.stream === stream)?.pending ?? 0,
          lag: state.find((s) => s.stream === stream)?.lag ?? 0
        })),
        group: GROUP,
        checkpoint: Option.match(checkpoint, {
          onNone: () => null,
          onSome: (p) => ({ position: p, sequence: sequenceOf(checkpoint) })
        }),
        stopped: Shutdown.signalled(),
        durationMs: end - startedAt,
        producedPerSecond: Output.rate(tally.events, produceMs),
        consumedPerSecond: Output.rate(consumed, consumeMs),
        metrics: `${server.url}/metrics`
      }
      if (json) return yield* Output.printJson(summary)
      yield* Output.print(
        "",
        `${summary.stopped ? "Stopped by Ctrl-C after draining: p" : "P"}roduced ${Output.count(tally.events)} events in ${Output.count(tally.batches)} batches in ${(produceMs / 1000).toFixed(2)} s (${Output.count(summary.producedPerSecond)} events/s, ${input.guarantee})`,
        `Consumed  ${Output.count(consumed)} events (group "${GROUP}") in ${(consumeMs / 1000).toFixed(2)} s (${Output.count(summary.consumedPerSecond)} events/s): ${Object.entries(
          ops
        )
          .map(
            ([op, n]) =>
              `${Output.count(n)} ${op === "c" ? "inserts" : op === "u" ? "updates" : op === "d" ? "deletes" : op}`
          )
          .join(", ")}`,
        `Pending ${summary.pending}, lag ${summary.lag}; checkpoint at event ${Output.count(sequenceOf(checkpoint) ?? 0)}`,
        "Streams:",
        ...summary.streams.map(
          (s) => `  ${s.stream}: XLEN ${Output.count(s.length)} (${Output.count(s.written)} written by this run)`
        ),
        ...(redis.source === "process" || redis.source === "container"
          ? ["The demo's redis-server stops now; pass --redis or set REDIS_URL to keep the streams."]
          : [inspectLine(streams[0]!, redis.url, redis.source)])
      )
    }).pipe(Effect.scoped, Effect.provide(CheckpointStore.layerMemory.pipe(Layer.provideMerge(Redis.layer(redis.url)))))
  }).pipe(Effect.scoped)

export const command = Command.make(
  "demo",
  {
    redis: Flags.redis,
    events: Flags.intAtLeast("events", 1, "a number of events").pipe(
      Flag.withMetavar("N"),
      Flag.withDescription("Events to produce"),
      Flag.withDefault(50_000)
    ),
    rate: Flags.rate.pipe(
      Flag.withDescription("Events per second produced (0 = as fast as Redis takes them)"),
      Flag.withDefault(20_000)
    ),
    tables: Flags.list("tables").pipe(
      Flag.withMetavar("a,b"),
      Flag.withDescription("Source tables (default customers,orders,payments)"),
      Flag.optional
    ),
    payloadBytes: Flags.intAtLeast("payload-bytes", 0, "a size in bytes").pipe(
      Flag.withMetavar("B"),
      Flag.withDescription("Approximate JSON size of each row image"),
      Flag.withDefault(256)
    ),
    guarantee: Flag.Literals("guarantee", ["at-least-once", "exactly-once"]).pipe(
      Flag.withMetavar("MODE"),
      Flag.withDescription("Write mode of the sink"),
      Flag.withDefault("exactly-once")
    ),
    envelope: Flags.envelope,
    metricsPort: Flags.metricsPort.pipe(
      Flag.withDescription(
        "Port of /metrics, /health and /ready (0 = a free port; a taken port is an error). Default 9000, or a free port when 9000 is taken"
      ),
      Flag.optional
    )
  },
  (input) => Output.handler(run(input))
).pipe(
  Command.withDescription(
    "The synthetic source, the sink and a consumer group running together: a live progress line (events/s produced and consumed, pending, lag), metrics on :9000, and a summary. Ctrl-C drains gracefully. Without --redis and REDIS_URL it starts its own redis-server."
  ),
  Command.withExamples([
    { command: "redflow demo", description: "50,000 events through a redis-server started for the demo" },
    {
      command: "redflow demo --events 1000000 --rate 0 --redis redis://localhost:6379",
      description: "A million events as fast as your Redis takes them"
    }
  ])
)
