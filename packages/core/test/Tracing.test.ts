/**
 * Tracing.layer against a real OTLP/HTTP receiver (a node:http server collecting the JSON bodies): spans reach it
 * with their parent links and the service name; unconfigured, `none` or disabled, no tracer is installed.
 */
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, Option, Tracer } from "effect"
import * as TraceContext from "../src/TraceContext.ts"
import * as Tracing from "../src/Tracing.ts"

interface OtlpSpan {
  readonly name: string
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
}

/** An OTLP/HTTP receiver on a free port; `bodies` are the JSON documents POSTed to /v1/traces. */
const receiver = Effect.acquireRelease(
  Effect.promise(
    () =>
      new Promise<{ url: string; bodies: Array<any>; close: () => Promise<void> }>((resolve) => {
        const bodies: Array<any> = []
        const server = createServer((req, res) => {
          let data = ""
          req.on("data", (chunk) => (data += chunk))
          req.on("end", () => {
            if (req.url === "/v1/traces") bodies.push(JSON.parse(data))
            res.writeHead(200, { "content-type": "application/json" }).end("{}")
          })
        })
        server.listen(0, "127.0.0.1", () => {
          const { port } = server.address() as AddressInfo
          resolve({
            url: `http://127.0.0.1:${port}`,
            bodies,
            close: () => new Promise((done) => server.close(() => done()))
          })
        })
      })
  ),
  (r) => Effect.promise(r.close)
)

const withEnv = (env: Record<string, string>) => ConfigProvider.layer(ConfigProvider.fromEnv({ env }))

const spansOf = (bodies: ReadonlyArray<any>): Array<OtlpSpan> =>
  bodies.flatMap((b) => b.resourceSpans.flatMap((rs: any) => rs.scopeSpans.flatMap((ss: any) => ss.spans)))

const serviceNames = (bodies: ReadonlyArray<any>): Array<string> =>
  bodies.flatMap((b) =>
    b.resourceSpans.map(
      (rs: any) => rs.resource.attributes.find((a: any) => a.key === "service.name")?.value.stringValue
    )
  )

describe("Tracing.layer", () => {
  it.live("exports spans with their parent links to OTEL_EXPORTER_OTLP_ENDPOINT", () =>
    Effect.gen(function* () {
      const otlp = yield* receiver
      const env = {
        OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_SERVICE_NAME: "orders-cdc"
      }
      // Across Redis, as the consumer does it: the producer's traceparent becomes the handler span's parent.
      const traceparent = yield* Effect.scoped(
        Layer.build(Tracing.layer.pipe(Layer.provide(withEnv(env)))).pipe(
          Effect.flatMap((context) =>
            Effect.gen(function* () {
              const tp = yield* Effect.flatMap(TraceContext.current, Effect.fromOption).pipe(
                Effect.withSpan("producer.write")
              )
              const parent = Option.getOrThrow(yield* TraceContext.fromTraceparent(tp))
              yield* Effect.void.pipe(Effect.withSpan("redflow.consume.handle", { parent }))
              return tp
            }).pipe(Effect.provideContext(context))
          )
        )
      )
      // the layer's scope closed: the exporter flushed what it buffered
      const spans = spansOf(otlp.bodies)
      const producer = spans.find((s) => s.name === "producer.write")!
      const handler = spans.find((s) => s.name === "redflow.consume.handle")!
      expect(traceparent).toBe(`00-${producer.traceId}-${producer.spanId}-01`)
      expect(handler.traceId).toBe(producer.traceId)
      expect(handler.parentSpanId).toBe(producer.spanId)
      expect(serviceNames(otlp.bodies)).toContain("orders-cdc")
    })
  )

  it.effect(
    "off unless configured: no endpoint, OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED leave the native tracer",
    () =>
      Effect.gen(function* () {
        const configs = [
          {},
          { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318", OTEL_TRACES_EXPORTER: "none" },
          { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318", OTEL_SDK_DISABLED: "true" }
        ]
        for (const env of configs) {
          expect(yield* Tracing.settings.pipe(Effect.provide(withEnv(env)))).toBeUndefined()
          const tracer = yield* Effect.gen(function* () {
            return yield* Tracer.Tracer
          }).pipe(Effect.provide(Tracing.layer.pipe(Layer.provide(withEnv(env)))))
          expect(tracer).toBe(Tracer.nativeTracer)
        }
      })
  )

  it.effect("settings: the traces endpoint wins, /v1/traces is appended to the base one; grpc is a ConfigError", () =>
    Effect.gen(function* () {
      const base = yield* Tracing.settings.pipe(
        Effect.provide(
          withEnv({
            OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/",
            OTEL_EXPORTER_OTLP_HEADERS: "api-key=a%20b"
          })
        )
      )
      expect(base).toMatchObject({
        url: "http://collector:4318/v1/traces",
        protocol: "http/protobuf",
        headers: { "api-key": "a b" }
      })
      const traces = yield* Tracing.settings.pipe(
        Effect.provide(
          withEnv({
            OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318",
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://other:4318/traces"
          })
        )
      )
      expect(traces?.url).toBe("http://other:4318/traces")
      const error = yield* Effect.flip(
        Tracing.settings.pipe(
          Effect.provide(
            withEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4317", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" })
          )
        )
      )
      expect(error).toMatchObject({ _tag: "ConfigError", component: "Tracing" })
      expect(error.field).toBe("OTEL_EXPORTER_OTLP_PROTOCOL")
    })
  )
})
