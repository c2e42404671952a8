/**
 * The monitoring endpoint: an HTTP server (Node's, through `@effect/platform-node`) serving
 *
 * - `GET /metrics`: every Effect metric of the process in the Prometheus text format, written by Effect's
 *   `PrometheusMetrics` formatter with the prefix `deltaforge` (so `sink_events_total` is scraped as docs/DESIGN.md's
 *   `deltaforge_sink_events_total{pipeline,sink}`);
 * - `GET /health`: 200 `{"status":"ok",…}` while no pipeline component has failed, else 503 (see {@link PipelineHealth});
 * - `GET /ready`: 200 `{"status":"ready",…}` when every component runs and every readiness check (a Redis PING)
 *   passes, else 503 with the reasons.
 *
 * Port 9000 by default (docs/DESIGN.md); `port: 0` takes a free port, which {@link MetricsServer} reports. At each
 * scrape the `sink_checkpoint_age_seconds` gauges are refreshed from the checkpoint commit times the sink records,
 * so the age is exact at scrape time rather than as of the last commit.
 *
 * @example
 * ```ts
 * const monitoring = MetricsServer.layer({ port: 9000 }).pipe(
 *   Layer.provideMerge(PipelineHealth.layer({ checks: [redisPing] }))
 * )
 * program.pipe(Effect.provide(monitoring))
 * ```
 *
 * @since 0.1.0
 */
import * as Http from "node:http"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Schema from "effect/Schema"
import { HttpRouter, HttpServer, HttpServerResponse } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import * as Metrics from "./Metrics.ts"
import { PipelineHealth } from "./PipelineHealth.ts"

/**
 * Options of {@link layer}: where the server listens and the prefix of metric names.
 *
 * @since 0.1.0
 * @category options
 */
export interface Options {
  /** TCP port. Default 9000; `0` takes a free port (read it from {@link MetricsServer}). */
  readonly port?: number
  /** Interface to listen on. Default: all interfaces, as a scrape target must be reachable from Prometheus. */
  readonly host?: string
  /** Prefix of every metric name, joined with `_`. Default `deltaforge`; `""` for none. */
  readonly prefix?: string
}

/**
 * The port the server listens on when {@link Options.port} is not given.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_PORT = 9000

/**
 * The server could not start: a bad option, or the port could not be bound.
 *
 * @since 0.1.0
 * @category errors
 */
export class MetricsServerError extends Schema.TaggedError<MetricsServerError>()("MetricsServerError", {
  reason: Schema.Literals(["invalid-option", "address-in-use", "listen-failed"]),
  /** The option at fault for `invalid-option`. */
  field: Schema.optionalKey(Schema.String),
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/**
 * Where the running server listens.
 *
 * @since 0.1.0
 * @category models
 */
export interface MetricsServerInfo {
  readonly host: string
  readonly port: number
  /** `http://host:port`, with `localhost` for a wildcard address. */
  readonly url: string
  readonly prefix: string
}

/**
 * The running metrics server: where it listens ({@link MetricsServerInfo}). Provided by {@link layer}.
 *
 * @since 0.1.0
 * @category services
 */
export class MetricsServer extends Context.Service<MetricsServer, MetricsServerInfo>()("@redflow/core/MetricsServer") {}

/**
 * Age of the last checkpoint commit, per sink: what an operator alerts on when a pipeline stalls.
 *
 * @since 0.1.0
 * @category metrics
 */
export const checkpointAge = Metric.gauge("sink_checkpoint_age_seconds", {
  description: "Seconds since the last checkpoint commit, as of the scrape"
})

const PROMETHEUS_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/

/**
 * Sets every sink's checkpoint-age gauge from its last commit time (the `sink_checkpoint_timestamp_seconds` gauge).
 *
 * @since 0.1.0
 * @category metrics
 */
export const refreshCheckpointAge: Effect.Effect<void> = Effect.gen(function* () {
  const now = (yield* Clock.currentTimeMillis) / 1000
  const snapshot = yield* Metric.snapshot
  for (const m of snapshot) {
    if (m.id !== Metrics.checkpointTimestamp.id || m.type !== "Gauge") continue
    const committedAt = Number(m.state.value)
    if (!(committedAt > 0)) continue
    yield* Metric.update(
      Metric.withAttributes(checkpointAge, m.attributes ?? {}),
      Math.max(0, Math.round((now - committedAt) * 1000) / 1000)
    )
  }
})

/**
 * The `/metrics` body: the checkpoint ages refreshed, then every metric formatted by Effect's Prometheus formatter.
 *
 * @since 0.1.0
 * @category utils
 */
export const scrape = (prefix: string = Metrics.DEFAULT_PREFIX): Effect.Effect<string> =>
  Effect.andThen(refreshCheckpointAge, PrometheusMetrics.format(prefix === "" ? {} : { prefix }))

const validate = (options: Options) =>
  Effect.gen(function* () {
    const port = options.port ?? DEFAULT_PORT
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      return yield* new MetricsServerError({
        reason: "invalid-option",
        field: "port",
        message: `port must be an integer from 0 to 65535 (0 = a free port), got ${port}`
      })
    }
    const prefix = options.prefix ?? Metrics.DEFAULT_PREFIX
    if (prefix !== "" && !PROMETHEUS_NAME.test(prefix)) {
      return yield* new MetricsServerError({
        reason: "invalid-option",
        field: "prefix",
        message: `prefix must be a Prometheus name ([a-zA-Z_:][a-zA-Z0-9_:]*) or empty, got ${JSON.stringify(prefix)}`
      })
    }
    if (options.host === "") {
      return yield* new MetricsServerError({
        reason: "invalid-option",
        field: "host",
        message: "host must be an address or a name such as 127.0.0.1, or left out for all interfaces"
      })
    }
    return { port, prefix, host: options.host }
  })

const routes = (prefix: string) =>
  Layer.unwrap(
    Effect.gen(function* () {
      const health = yield* PipelineHealth
      const json = (body: object, ok: boolean) =>
        HttpServerResponse.jsonUnsafe(body, {
          status: ok ? 200 : 503,
          headers: { "cache-control": "no-store" }
        })
      return Layer.mergeAll(
        HttpRouter.add(
          "GET",
          "/metrics",
          Effect.map(scrape(prefix), (body) =>
            HttpServerResponse.text(body, { contentType: "text/plain; version=0.0.4; charset=utf-8" })
          )
        ),
        HttpRouter.add(
          "GET",
          "/health",
          Effect.map(health.health, (report) => json(report, report.status === "ok"))
        ),
        HttpRouter.add(
          "GET",
          "/ready",
          Effect.map(health.readiness, (report) => json(report, report.status === "ready"))
        )
      )
    })
  )

const errnoOf = (cause: unknown): string | undefined => {
  const inner = (cause as { cause?: unknown } | null)?.cause ?? cause
  const code = (inner as { code?: unknown } | null)?.code
  return typeof code === "string" ? code : undefined
}

/**
 * Serves `/metrics`, `/health` and `/ready` for as long as the layer lives. Needs a {@link PipelineHealth}; fails
 * with {@link MetricsServerError} (`address-in-use` when the port is taken) before anything is served.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<MetricsServer, MetricsServerError, PipelineHealth> =>
  Layer.unwrap(
    Effect.map(validate(options), ({ host, port, prefix }) => {
      const listen = NodeHttpServer.make(() => Http.createServer(), {
        port,
        ...(host !== undefined ? { host } : {}),
        // A scrape or a probe is short: do not hold shutdown for idle keep-alive connections.
        gracefulShutdownTimeout: "1 second"
      }).pipe(
        Effect.mapError((error) => {
          const inUse = errnoOf(error.cause) === "EADDRINUSE"
          return new MetricsServerError({
            reason: inUse ? "address-in-use" : "listen-failed",
            message: inUse
              ? `port ${port} is already in use${host !== undefined ? ` on ${host}` : ""}`
              : `cannot listen on ${host ?? "*"}:${port}: ${describe(error.cause)}`,
            cause: error
          })
        })
      )
      const server = Layer.merge(Layer.effect(HttpServer.HttpServer, listen), NodeHttpServer.layerHttpServices)
      const info = Layer.effect(
        MetricsServer,
        HttpServer.HttpServer.use(({ address }) => {
          const boundPort = address._tag === "UnixPathAddress" ? port : address.port
          const wildcard = host === undefined || host === "0.0.0.0" || host === "::"
          const urlHost = wildcard ? "localhost" : host.includes(":") ? `[${host}]` : host
          return Effect.succeed<MetricsServerInfo>({
            host: host ?? "0.0.0.0",
            port: boundPort,
            url: `http://${urlHost}:${boundPort}`,
            prefix
          })
        })
      )
      const app = HttpRouter.serve(routes(prefix), { disableLogger: true, disableListenLog: true })
      return Layer.merge(app, info).pipe(Layer.provide(server))
    })
  )

const describe = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))
