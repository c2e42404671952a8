/**
 * The monitoring of `produce`, `consume` and `run`: pipeline health always (the sink and the consumer report to it),
 * and the metrics endpoint when `--metrics-port` asks for one. The endpoint's HTTP server and Prometheus exposition
 * are loaded only then: a run without the flag does not pay for them at start.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
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
export const layer = (port: Option.Option<number>) => {
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
      onSome: (url) =>
        Effect.sync(() =>
          (json ? process.stderr : process.stdout).write(`Metrics: ${url}/metrics (also /health, /ready)\n`)
        )
    })
  )
