/**
 * The monitoring endpoint over real HTTP, after a real sink run against a real Redis: the scraped counters must
 * equal what landed in Redis. Effect metrics are process-global, so every test uses its own pipeline name.
 */
import * as Net from "node:net"
import { describe, expect, layer } from "@effect/vitest"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Context, Effect, Exit, Fiber, Layer, Schedule, Scope, Stream } from "effect"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as ConfigError from "@redflow/core/ConfigError"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as MetricsServer from "@redflow/core/MetricsServer"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as Position from "@redflow/core/Position"
import * as SyntheticSource from "@redflow/core/SyntheticSource"

let counter = 0
const unique = (label: string) => `${label}_${process.pid}_${Date.now().toString(36)}_${counter++}`

interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

/** Parses the Prometheus text format (the lines this test needs: samples, not HELP/TYPE). */
const parse = (text: string): Array<Sample> =>
  text
    .split("\n")
    .filter((line) => line !== "" && !line.startsWith("#"))
    .map((line) => {
      const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
      if (match === null) throw new Error(`not a sample line: ${line}`)
      const labels: Record<string, string> = {}
      for (const m of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]!] = m[2]!
      return { name: match[1]!, labels, value: match[3] === "+Inf" ? Infinity : Number(match[3]) }
    })

const find = (samples: ReadonlyArray<Sample>, name: string, labels: Record<string, string>) =>
  samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))

const one = (samples: ReadonlyArray<Sample>, name: string, labels: Record<string, string>): number => {
  const found = find(samples, name, labels)
  if (found.length !== 1) throw new Error(`expected one ${name}${JSON.stringify(labels)}, found ${found.length}`)
  return found[0]!.value
}

const get = (url: string) =>
  Effect.promise(async () => {
    const response = await fetch(url)
    return { status: response.status, type: response.headers.get("content-type"), body: await response.text() }
  })

const redisPing: PipelineHealth.Check<RedisConnection.RedisConnection> = {
  name: "redis",
  run: RedisConnection.RedisConnection.use((redis) => redis.run((client) => client.ping()))
}

/** A connection, a memory checkpoint store, and the metrics server on a free port with a Redis PING check. */
const appLayer = (
  url: string,
  server: MetricsServer.Options = {},
  connectionOptions: Omit<RedisConnection.Options, "url"> = {}
) => {
  const connection = RedisConnection.layer({ url, ...connectionOptions })
  return Layer.mergeAll(
    MetricsServer.layer({ port: 0, host: "127.0.0.1", ...server }).pipe(
      Layer.provideMerge(PipelineHealth.layer({ checks: [redisPing] }))
    ),
    CheckpointStore.layerMemory
  ).pipe(Layer.provideMerge(connection))
}

/** {@link appLayer} on the surrounding test server. */
const appLayerFromServer = (server: MetricsServer.Options = {}) =>
  Layer.unwrap(RedisTestServer.RedisTestServer.use(({ url }) => Effect.succeed(appLayer(url, server))))

layer(RedisTestServer.layer(), { excludeTestServices: true })("MetricsServer against a real Redis", (it) => {
  it.effect("after a sink run, /metrics over HTTP matches what landed in Redis, batch for batch", () =>
    Effect.gen(function* () {
      const pipeline = unique("metrics")
      const prefix = `${pipeline}.`
      const server = yield* MetricsServer.MetricsServer
      const batches = yield* SyntheticSource.make({ count: 3_000, chunkSize: 100 }).pipe(
        RedisStreamSink.deliver({
          stream: `${prefix}\${source.table}`,
          pipeline,
          sinkName: "redis",
          batch: { maxEvents: 250 }
        }),
        Stream.runCollect,
        PipelineHealth.track(pipeline)
      )
      const streams = new Set(batches.flatMap((b) => b.streams.map((s) => s.stream)))
      expect(streams.size).toBe(3)
      const redis = yield* RedisConnection.RedisConnection
      let landed = 0
      for (const stream of streams) landed += yield* redis.run((client) => client.xlen(stream))
      expect(landed).toBe(3_000)
      expect(batches.length).toBeGreaterThanOrEqual(12)

      const metrics = yield* get(`${server.url}/metrics`)
      expect(metrics.status).toBe(200)
      expect(metrics.type).toContain("text/plain")
      expect(metrics.body).toContain("# TYPE deltaforge_sink_events_total counter")
      expect(metrics.body).toContain("# TYPE deltaforge_sink_latency_seconds histogram")
      const samples = parse(metrics.body)
      const sink = { pipeline, sink: "redis" }
      expect(one(samples, "deltaforge_sink_events_total", sink)).toBe(landed)
      expect(one(samples, "deltaforge_sink_batch_total", sink)).toBe(batches.length)
      expect(one(samples, "deltaforge_sink_latency_seconds_count", sink)).toBe(batches.length)
      expect(one(samples, "deltaforge_sink_latency_seconds_bucket", { ...sink, le: "+Inf" })).toBe(batches.length)
      expect(find(samples, "deltaforge_sink_latency_seconds_bucket", sink).length).toBeGreaterThan(10)
      const stage = { pipeline, stage: "sink" }
      expect(one(samples, "deltaforge_stage_latency_seconds_count", stage)).toBe(batches.length)
      expect(one(samples, "deltaforge_stage_latency_seconds_sum", stage)).toBeGreaterThan(0)
      expect(one(samples, "deltaforge_sink_bytes_total", sink)).toBe(batches.reduce((n, b) => n + b.bytes, 0))
      expect(one(samples, "deltaforge_sink_checkpoint_position", sink)).toBe(
        Number(Position.toSequence(batches[batches.length - 1]!.position))
      )
      const age = one(samples, "deltaforge_sink_checkpoint_age_seconds", sink)
      expect(age).toBeGreaterThanOrEqual(0)
      expect(age).toBeLessThan(30)
      expect(one(samples, "deltaforge_sink_inflight_batches", sink)).toBe(0)
      // Only this pipeline's series carry its name: nothing leaks between label sets.
      expect(samples.filter((s) => s.labels.pipeline === pipeline && s.name.includes("events_total")).length).toBe(1)

      const health = yield* get(`${server.url}/health`)
      expect(health.status).toBe(200)
      expect(health.type).toContain("application/json")
      const healthBody = JSON.parse(health.body)
      expect(healthBody.status).toBe("ok")
      expect(healthBody.components[pipeline].state).toBe("stopped")

      // The sink has finished: Redis answers, but nothing runs, so the app is not ready.
      const ready = yield* get(`${server.url}/ready`)
      expect(ready.status).toBe(503)
      const readyBody = JSON.parse(ready.body)
      expect(readyBody.status).toBe("not-ready")
      expect(readyBody.checks.redis.ok).toBe(true)
      expect(readyBody.reasons).toEqual([`${pipeline} is stopped`])
    }).pipe(Effect.provide(appLayerFromServer()))
  )

  it.effect("/ready is 200 while the sink runs and Redis answers; /health is 503 once a component failed", () =>
    Effect.gen(function* () {
      const server = yield* MetricsServer.MetricsServer
      const health = yield* PipelineHealth.PipelineHealth
      const pipeline = unique("ready")

      const before = yield* get(`${server.url}/ready`)
      expect(before.status).toBe(503)
      expect(JSON.parse(before.body).reasons).toEqual(["no pipeline component has started"])

      yield* health.set(pipeline, "running")
      const ready = yield* get(`${server.url}/ready`)
      expect(ready.status).toBe(200)
      const body = JSON.parse(ready.body)
      expect(body).toMatchObject({ status: "ready", reasons: [], checks: { redis: { ok: true } } })
      expect(body.components[pipeline].state).toBe("running")

      const failing = yield* PipelineHealth.track(`${pipeline}-2`)(
        Effect.fail(ConfigError.make("RedisStreamSink", ["stream"], "stream is required"))
      ).pipe(Effect.exit)
      expect(Exit.isFailure(failing)).toBe(true)
      const failed = yield* get(`${server.url}/health`)
      expect(failed.status).toBe(503)
      const failedBody = JSON.parse(failed.body)
      expect(failedBody.status).toBe("failed")
      expect(failedBody.components[`${pipeline}-2`]).toMatchObject({
        state: "failed",
        lastError: "ConfigError: RedisStreamSink option stream: stream is required"
      })
      expect((yield* get(`${server.url}/ready`)).status).toBe(503)
    }).pipe(Effect.provide(appLayerFromServer()))
  )

  it.effect("custom prefix: the same series under acme_, none under deltaforge_", () =>
    Effect.gen(function* () {
      const pipeline = unique("prefix")
      const server = yield* MetricsServer.MetricsServer
      expect(server.prefix).toBe("acme")
      const summary = yield* SyntheticSource.make({ count: 500 }).pipe(
        Stream.run(RedisStreamSink.make({ stream: `${pipeline}.events`, pipeline }))
      )
      const metrics = yield* get(`${server.url}/metrics`)
      const samples = parse(metrics.body)
      expect(one(samples, "acme_sink_events_total", { pipeline, sink: "redis" })).toBe(500)
      expect(one(samples, "acme_sink_batch_total", { pipeline, sink: "redis" })).toBe(summary.batches)
      expect(one(samples, "acme_stage_latency_seconds_count", { pipeline, stage: "sink" })).toBe(summary.batches)
      expect(samples.some((s) => s.name.startsWith("deltaforge_"))).toBe(false)
      const redis = yield* RedisConnection.RedisConnection
      expect(yield* redis.run((client) => client.xlen(`${pipeline}.events`))).toBe(500)
    }).pipe(Effect.provide(appLayerFromServer({ prefix: "acme" })))
  )
})

/** Polls `/ready` until `until` holds for its status and body (every 100 ms, for up to `seconds`). */
const readyUntil = (
  url: string,
  until: (status: number, body: { status: string; reasons: ReadonlyArray<string> }) => boolean,
  seconds = 60
) =>
  get(`${url}/ready`).pipe(
    Effect.map((r) => ({ status: r.status, body: JSON.parse(r.body) })),
    Effect.repeat({
      until: (r) => until(r.status, r.body),
      schedule: Schedule.spaced("100 millis"),
      times: seconds * 10
    }),
    Effect.filterOrFail(
      (r) => until(r.status, r.body),
      (r) => new Error(`/ready never matched; last: ${r.status} ${JSON.stringify(r.body)}`)
    )
  )

describe("MetricsServer through a Redis outage", () => {
  layer(Layer.empty, { excludeTestServices: true })("readiness", (it) => {
    it.effect(
      "/ready: 200 while the sink writes, 503 (retrying) while Redis is down, 200 once it writes again",
      () =>
        Effect.gen(function* () {
          const pipeline = unique("outage")
          const stream = `${pipeline}.events`
          // Redis with an fsync'ed append-only file in a directory of the test's, so a restart keeps what it had
          // acknowledged (the sink checks that), on a port of the test's, so it comes back where the client expects.
          const dir = yield* Effect.acquireRelease(
            Effect.sync(() => mkdtempSync(join(tmpdir(), "redflow-outage-"))),
            (d) => Effect.sync(() => rmSync(d, { recursive: true, force: true }))
          )
          const port = yield* Effect.promise(() => RedisTestServer.freePort())
          const serve = RedisTestServer.spawn({
            port,
            args: ["--dir", dir, "--appendonly", "yes", "--appendfsync", "always"]
          })
          const firstLife = yield* Scope.make()
          const redis = yield* Scope.provide(serve, firstLife)
          const app = yield* Layer.build(appLayer(redis.url))
          const server = Context.get(app, MetricsServer.MetricsServer)
          // A paced source that outlasts the test: the sink keeps writing before, during and after the outage.
          const sink = yield* SyntheticSource.make({ count: 10_000_000, ratePerSecond: 200, chunkSize: 10 }).pipe(
            Stream.run(RedisStreamSink.make({ stream, pipeline, batch: { maxEvents: 100 } })),
            PipelineHealth.track(pipeline),
            Effect.provideContext(app),
            Effect.forkScoped
          )
          const xlen = RedisConnection.RedisConnection.use((r) => r.run((client) => client.xlen(stream))).pipe(
            Effect.provideContext(app)
          )

          yield* readyUntil(server.url, (status) => status === 200)
          // Entries land before the outage.
          const before = yield* xlen.pipe(
            Effect.repeat({ until: (n) => n > 0, schedule: Schedule.spaced("100 millis"), times: 600 })
          )
          expect(before).toBeGreaterThan(0)

          // Redis dies (SIGKILL): the writes fail and are retried; not ready, and it says why.
          yield* Effect.sync(() => process.kill(redis.pid, "SIGKILL"))
          const outage = yield* readyUntil(
            server.url,
            (status, body) =>
              status === 503 && body.reasons.some((r) => r.startsWith(`${pipeline} is retrying after Redis`))
          )
          expect(outage.body.status).toBe("not-ready")
          yield* Scope.close(firstLife, Exit.void)

          // Redis is back: readiness returns once the sink writes again, and it goes on writing.
          yield* serve
          const back = yield* readyUntil(server.url, (status) => status === 200)
          expect(back.body).toMatchObject({ status: "ready", reasons: [] })
          const written = yield* xlen
          yield* xlen.pipe(
            Effect.repeat({ until: (n) => n > written, schedule: Schedule.spaced("100 millis"), times: 600 })
          )
          expect(yield* xlen).toBeGreaterThan(written)
          const health = JSON.parse((yield* get(`${server.url}/health`)).body)
          expect(health.components[pipeline]).toMatchObject({
            state: "running",
            lastError: expect.stringMatching(/^Redis/)
          })
          // One component, under the name the application tracks: the sink registered nothing else.
          expect(Object.keys(health.components)).toEqual([pipeline])
          yield* Fiber.interrupt(sink)
        }),
      180_000
    )
  })
})

describe("MetricsServer without Redis", () => {
  layer(Layer.empty, { excludeTestServices: true })("checks and options", (it) => {
    it.effect("/ready reports an unreachable Redis as a failed check, with the reason", () =>
      Effect.gen(function* () {
        const server = yield* MetricsServer.MetricsServer
        const health = yield* PipelineHealth.PipelineHealth
        yield* health.set(unique("unreachable"), "running")
        const ready = yield* get(`${server.url}/ready`)
        expect(ready.status).toBe(503)
        const body = JSON.parse(ready.body)
        expect(body.checks.redis.ok).toBe(false)
        expect(body.checks.redis.error).toMatch(/^RedisUnavailable/)
        expect(body.reasons[0]).toMatch(/^check redis failed: RedisUnavailable/)
        // Liveness does not depend on Redis: the process is up and nothing failed.
        expect((yield* get(`${server.url}/health`)).status).toBe(200)
      }).pipe(
        Effect.provide(
          Layer.unwrap(
            Effect.map(
              Effect.promise(() => RedisTestServer.freePort()),
              (port) =>
                MetricsServer.layer({ port: 0, host: "127.0.0.1" }).pipe(
                  Layer.provideMerge(PipelineHealth.layer({ checks: [redisPing] })),
                  Layer.provide(
                    RedisConnection.layer({ url: `redis://127.0.0.1:${port}`, connectTimeout: "200 millis" })
                  )
                )
            )
          )
        )
      )
    )

    it.effect("a taken port fails with address-in-use; bad options name the field", () =>
      Effect.gen(function* () {
        const blocker = yield* Effect.acquireRelease(
          Effect.promise(
            () =>
              new Promise<Net.Server>((resolve) => {
                const s = Net.createServer()
                s.listen(0, "127.0.0.1", () => resolve(s))
              })
          ),
          (s) => Effect.promise(() => new Promise<void>((resolve) => s.close(() => resolve())))
        )
        const port = (blocker.address() as Net.AddressInfo).port
        const start = (options: MetricsServer.Options) =>
          Layer.build(MetricsServer.layer(options).pipe(Layer.provide(PipelineHealth.layer()))).pipe(
            Effect.scoped,
            Effect.flip
          )
        const inUse = yield* start({ port, host: "127.0.0.1" })
        expect(inUse.reason).toBe("address-in-use")
        expect(inUse.message).toBe(`port ${port} is already in use on 127.0.0.1`)
        const badPort = yield* start({ port: 70_000 })
        expect(badPort).toMatchObject({ reason: "invalid-option", field: "port" })
        const badPrefix = yield* start({ prefix: "my-app" })
        expect(badPrefix).toMatchObject({ reason: "invalid-option", field: "prefix" })
      })
    )
  })
})
