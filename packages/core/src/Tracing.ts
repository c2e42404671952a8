/**
 * Trace export over OTLP/HTTP with Effect's own OpenTelemetry integration (`effect/observability/OtlpTracer`),
 * configured by the standard `OTEL_*` variables and off unless they name an endpoint.
 *
 * | variable | effect |
 * |---|---|
 * | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | the full URL spans are POSTed to |
 * | `OTEL_EXPORTER_OTLP_ENDPOINT` | base URL; `/v1/traces` is appended (when the one above is unset) |
 * | `OTEL_TRACES_EXPORTER` | `otlp` (the default once an endpoint is set) or `none` |
 * | `OTEL_SDK_DISABLED` | `true` turns export off |
 * | `OTEL_EXPORTER_OTLP_PROTOCOL` / `…_TRACES_PROTOCOL` | `http/protobuf` (default) or `http/json`; `grpc` is not supported |
 * | `OTEL_EXPORTER_OTLP_HEADERS` / `…_TRACES_HEADERS` | `key=value,…`, percent-encoded, e.g. an API key |
 * | `OTEL_EXPORTER_OTLP_COMPRESSION` / `…_TRACES_COMPRESSION` | `gzip` or `none` |
 * | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | the resource (service name `redflow` when unset) |
 * | `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` | export interval (ms) and batch size |
 *
 * Off, {@link layer} installs no tracer: the tracer stays Effect's native one, which exports nothing, and Redflow's
 * hot paths check for it and skip their spans (no span objects, no attributes: see the consumer's handler span).
 *
 * @example
 * ```ts
 * // OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 OTEL_SERVICE_NAME=orders-cdc
 * program.pipe(Effect.provide(Tracing.layer))
 * ```
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as OtlpExporter from "effect/observability/OtlpExporter"
import * as OtlpSerialization from "effect/observability/OtlpSerialization"
import * as OtlpTracer from "effect/observability/OtlpTracer"
import * as ConfigError from "./ConfigError.ts"

const COMPONENT = "Tracing"

/**
 * The export settings the `OTEL_*` variables describe, or `undefined` when export is off.
 *
 * @since 0.1.0
 * @category models
 */
export interface Settings {
  readonly url: string
  readonly protocol: "http/protobuf" | "http/json"
  readonly headers: Readonly<Record<string, string>>
  readonly compression: "gzip" | "none"
  readonly serviceName: string | undefined
  readonly exportIntervalMs: number | undefined
  readonly maxBatchSize: number | undefined
}

const optionalString = (name: string) => Config.option(Config.String(name)).pipe(Config.map(Option.getOrUndefined))

/** The first of the signal-specific and the general variable that is set. */
const either = (suffix: string) =>
  Config.all([
    optionalString(`OTEL_EXPORTER_OTLP_TRACES_${suffix}`),
    optionalString(`OTEL_EXPORTER_OTLP_${suffix}`)
  ]).pipe(Config.map(([traces, general]) => nonBlank(traces) ?? nonBlank(general)))

const nonBlank = (s: string | undefined) => (s === undefined || s.trim() === "" ? undefined : s.trim())

const parseHeaders = (raw: string | undefined): Record<string, string> | ConfigError.ConfigError => {
  const out: Record<string, string> = {}
  if (raw === undefined) return out
  for (const pair of raw.split(",")) {
    if (pair.trim() === "") continue
    const eq = pair.indexOf("=")
    if (eq <= 0) {
      return ConfigError.make(
        COMPONENT,
        "OTEL_EXPORTER_OTLP_HEADERS",
        `"${pair}" is not key=value`,
        "e.g. api-key=secret"
      )
    }
    try {
      out[decodeURIComponent(pair.slice(0, eq).trim())] = decodeURIComponent(pair.slice(eq + 1).trim())
    } catch {
      return ConfigError.make(COMPONENT, "OTEL_EXPORTER_OTLP_HEADERS", `"${pair}" is not valid percent-encoding`)
    }
  }
  return out
}

const intOrUndefined = (name: string, raw: string | undefined): number | undefined | ConfigError.ConfigError => {
  if (raw === undefined) return undefined
  const n = Number(raw)
  return Number.isInteger(n) && n > 0
    ? n
    : ConfigError.make(COMPONENT, name, `expected a positive integer, got "${raw}"`)
}

/**
 * Reads the `OTEL_*` variables (through Effect's `ConfigProvider`, the environment by default).
 *
 * @since 0.1.0
 * @category configuration
 */
export const settings: Effect.Effect<Settings | undefined, ConfigError.ConfigError> = Effect.gen(function* () {
  const env = yield* Config.all({
    disabled: optionalString("OTEL_SDK_DISABLED"),
    exporter: optionalString("OTEL_TRACES_EXPORTER"),
    tracesEndpoint: optionalString("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    endpoint: optionalString("OTEL_EXPORTER_OTLP_ENDPOINT"),
    protocol: either("PROTOCOL"),
    headers: either("HEADERS"),
    compression: either("COMPRESSION"),
    serviceName: optionalString("OTEL_SERVICE_NAME"),
    scheduleDelay: optionalString("OTEL_BSP_SCHEDULE_DELAY"),
    batchSize: optionalString("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
  }).pipe(Effect.mapError((e) => ConfigError.make(COMPONENT, "OTEL_*", e.message)))

  if (nonBlank(env.disabled)?.toLowerCase() === "true") return undefined
  const exporters = (nonBlank(env.exporter) ?? "otlp")
    .split(",")
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== "")
  if (!exporters.includes("otlp")) {
    const others = exporters.filter((s) => s !== "none")
    if (others.length > 0) {
      yield* Effect.logWarning(`OTEL_TRACES_EXPORTER=${env.exporter}: only otlp is supported; traces are not exported`)
    }
    return undefined
  }

  let url = nonBlank(env.tracesEndpoint)
  if (url === undefined) {
    const base = nonBlank(env.endpoint)
    if (base === undefined) return undefined
    url = `${base.replace(/\/+$/, "")}/v1/traces`
  }
  if (!URL.canParse(url)) {
    return yield* ConfigError.make(COMPONENT, "OTEL_EXPORTER_OTLP_ENDPOINT", `"${url}" is not a URL`)
  }

  const protocol = env.protocol ?? "http/protobuf"
  if (protocol !== "http/protobuf" && protocol !== "http/json") {
    return yield* ConfigError.make(
      COMPONENT,
      "OTEL_EXPORTER_OTLP_PROTOCOL",
      `"${protocol}" is not supported`,
      "use http/protobuf (port 4318 of a collector) or http/json"
    )
  }
  const compression = env.compression ?? "none"
  if (compression !== "gzip" && compression !== "none") {
    return yield* ConfigError.make(COMPONENT, "OTEL_EXPORTER_OTLP_COMPRESSION", `"${compression}" is not gzip or none`)
  }
  const headers = parseHeaders(env.headers)
  if (headers instanceof ConfigError.ConfigError) return yield* headers
  const exportIntervalMs = intOrUndefined("OTEL_BSP_SCHEDULE_DELAY", nonBlank(env.scheduleDelay))
  if (exportIntervalMs instanceof ConfigError.ConfigError) return yield* exportIntervalMs
  const maxBatchSize = intOrUndefined("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", nonBlank(env.batchSize))
  if (maxBatchSize instanceof ConfigError.ConfigError) return yield* maxBatchSize
  return {
    url,
    protocol,
    headers,
    compression,
    serviceName: nonBlank(env.serviceName),
    exportIntervalMs,
    maxBatchSize
  } satisfies Settings
})

/**
 * An OTLP tracer for explicit settings. Spans are batched and sent every export interval (5 s by default) and when
 * the layer's scope closes.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFrom = (settings: Settings): Layer.Layer<OtlpExporter.Flusher> =>
  OtlpTracer.layer({
    url: settings.url,
    // OtlpResource requires a service name; OTEL_SERVICE_NAME, read by Effect itself, takes precedence when set.
    resource: { serviceName: settings.serviceName ?? "redflow" },
    headers: settings.headers,
    compression: settings.compression,
    ...(settings.exportIntervalMs === undefined ? {} : { exportInterval: settings.exportIntervalMs }),
    ...(settings.maxBatchSize === undefined ? {} : { maxBatchSize: settings.maxBatchSize })
  }).pipe(
    Layer.provide(
      Layer.mergeAll(
        FetchHttpClient.layer,
        settings.protocol === "http/json" ? OtlpSerialization.layerJson : OtlpSerialization.layerProtobuf
      )
    )
  )

/**
 * Trace export configured by the `OTEL_*` variables, with Effect's `Flusher` (to export buffered spans on demand, e.g.
 * before a process is suspended). When they name no endpoint, set
 * `OTEL_TRACES_EXPORTER=none` or `OTEL_SDK_DISABLED=true`, it installs nothing but a `Flusher` that does
 * nothing: the tracer stays the native one. A setting that cannot work (an unsupported protocol, a
 * header that does not parse) fails with a {@link ConfigError.ConfigError} naming the variable.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<OtlpExporter.Flusher, ConfigError.ConfigError> = Layer.unwrap(
  Effect.map(settings, (s): Layer.Layer<OtlpExporter.Flusher> => {
    if (s === undefined) return OtlpExporter.layerFlusher
    return layerFrom(s).pipe(Layer.tap(() => Effect.logInfo(`exporting traces to ${s.url} (${s.protocol})`)))
  })
)
