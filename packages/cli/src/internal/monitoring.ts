/**
 * The monitoring of `produce`, `consume` and `run`: pipeline health always (the sink and the consumer report to it),
 * the metrics endpoint when `--metrics-port` asks for one, and OTLP trace export when the `OTEL_*` variables name an
 * endpoint (`@redflow/core/Tracing`). The endpoint's HTTP server and Prometheus exposition, and the exporter, are
 * loaded only then: a run without them does not pay for them at start.
 */
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type { ConfigError } from "@redflow/core/ConfigError"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as Redis from "./redis.ts"

/** Where the metrics are served: none unless `--metrics-port` was given. */
export const MetricsUrl = Context.Reference<Option.Option<string>>("@redflow/cli/MetricsUrl", {
  defaultValue: () => Option.none()
})

/**
 * Pipeline health, plus the metrics server when a port was given. A taken port is an error (exit 2, naming
 * --metrics-port) in every command: the user asked for that port, and a scraper looks there; only the demo's default
 * port falls back.
 */
export const layer = (port: Option.Option<number>) => Layer.merge(metricsAndHealth(port), tracing)

/**
 * Trace export by the `OTEL_*` variables, when one of them names an endpoint: the sink's and the consumer's spans,
 * and the `traceparent` of each entry. Without one, nothing is loaded and the tracer stays the native one (off).
 * Part of {@link layer}; the demo, which serves its metrics itself, provides it alone.
 */
export const tracing = Layer.unwrap(
  Effect.suspend((): Effect.Effect<Layer.Layer<never, ConfigError>> => {
    const named = (name: string) => (process.env[name] ?? "").trim() !== ""
    if (!named("OTEL_EXPORTER_OTLP_ENDPOINT") && !named("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
      return Effect.succeed(Layer.empty)
    }
    return Effect.map(
      Effect.promise(() => import("@redflow/core/Tracing")),
      (Tracing) => Tracing.layer
    )
  })
)

const metricsAndHealth = (port: Option.Option<number>) => {
  const health = PipelineHealth.layer({ checks: [Redis.check] })
  if (Option.isNone(port)) return health
  return Layer.unwrap(
    Effect.map(
      Effect.promise(() => import("@redflow/core/MetricsServer")),
      (MetricsServer) =>
        Layer.effect(
          MetricsUrl,
          Effect.map(Effect.service(MetricsServer.MetricsServer), (server) => Option.some(server.url))
        ).pipe(Layer.provideMerge(MetricsServer.layer({ port: port.value })), Layer.provideMerge(health))
    )
  )
}

/** Says where the metrics are served, when they are (on stderr with --json: stdout is the summary's). */
export const announce = (json: boolean) =>
  Effect.flatMap(Effect.service(MetricsUrl), (url) =>
    Option.match(url, {
      onNone: () => Effect.void,
      onSome: (url) => {
        const line = `Metrics: ${url}/metrics (also /health, /ready)`
        return json ? Console.error(line) : Console.log(line)
      }
    })
  )
