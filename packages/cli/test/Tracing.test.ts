/**
 * OTLP export from the commands, configured by the OTEL_* variables: `redflow produce`, `consume` and `demo` with
 * OTEL_EXPORTER_OTLP_ENDPOINT pointing at a local HTTP server that collects what they POST (OTLP/JSON). The sink's
 * write spans arrive, the entries carry their traceparent, and the consumer's handler spans continue those traces.
 * Without the variables nothing is exported and the entries carry no traceparent.
 */
import * as Http from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { run, unique, withClient } from "./support.ts"

interface OtlpSpan {
  readonly name: string
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly attributes: ReadonlyArray<{ readonly key: string; readonly value: Record<string, unknown> }>
}

/** An OTLP/HTTP collector on a free port: every span of every POST to /v1/traces. */
const collector = async () => {
  const spans: Array<OtlpSpan> = []
  const paths: Array<string> = []
  const server = Http.createServer((req, res) => {
    let body = ""
    req.setEncoding("utf8").on("data", (d: string) => (body += d))
    req.on("end", () => {
      paths.push(`${req.method} ${req.url} ${req.headers["content-type"]}`)
      const parsed = JSON.parse(body) as {
        resourceSpans: Array<{ scopeSpans: Array<{ spans: Array<OtlpSpan> }> }>
      }
      for (const r of parsed.resourceSpans) for (const s of r.scopeSpans) spans.push(...s.spans)
      res.writeHead(200, { "content-type": "application/json" }).end("{}")
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const { port } = server.address() as { port: number }
  return { spans, paths, url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(r)) }
}

const attribute = (span: OtlpSpan, key: string) => {
  const value = span.attributes.find((a) => a.key === key)?.value
  return value === undefined ? undefined : (Object.values(value)[0] as unknown)
}

let redis: Awaited<ReturnType<typeof RedisTestServer.start>>
beforeAll(async () => {
  redis = await RedisTestServer.start()
})
afterAll(async () => {
  await redis.stop()
})

describe("redflow produce and consume export traces when OTEL_* names an endpoint", () => {
  it("the sink's write spans, a traceparent per entry, the consumer's handler spans continuing them", async () => {
    const otlp = await collector()
    try {
      const stream = unique("otel")
      const env = {
        OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_SERVICE_NAME: "redflow-test"
      }
      const produced = await run(["produce", "--redis", redis.url, "--stream", stream, "--events", "20"], { env })
      expect(produced.code, produced.stderr).toBe(0)
      const consumed = await run(
        ["consume", "--redis", redis.url, "--stream", stream, "--group", "g", "--consumer", "c", "--count", "20"],
        { env }
      )
      expect(consumed.code, consumed.stderr).toBe(0)

      expect(otlp.paths.every((p) => p.startsWith("POST /v1/traces application/json"))).toBe(true)
      const writes = otlp.spans.filter((s) => s.name === "redflow.sink.write")
      expect(writes.length).toBeGreaterThan(0)
      expect(writes.reduce((n, w) => n + Number(attribute(w, "redflow.entries")), 0)).toBe(20)
      expect(writes.every((w) => attribute(w, "redflow.stream") === stream)).toBe(true)
      expect(otlp.spans.some((s) => s.name === "redflow.sink.checkpoint")).toBe(true)

      const entries = await withClient(
        redis.url,
        (c) => c.xrange(stream, "-", "+") as Promise<Array<[string, Array<string>]>>
      )
      expect(entries.length).toBe(20)
      const handlers = otlp.spans.filter((s) => s.name === "redflow.consume.handle")
      expect(handlers.length).toBe(20)
      for (const [id, flat] of entries) {
        const traceparent = flat[flat.indexOf("traceparent") + 1]!
        const [, traceId, spanId] = traceparent.split("-")
        const write = writes.find((w) => w.spanId === spanId)
        expect(write, `entry ${id}: ${traceparent}`).toBeDefined()
        expect(write!.traceId).toBe(traceId)
        const handler = handlers.find((h) => attribute(h, "redflow.entry.id") === id)!
        expect(handler.traceId).toBe(traceId)
        expect(handler.parentSpanId).toBe(spanId)
      }
    } finally {
      await otlp.close()
    }
  }, 120_000)

  it("redflow demo exports the same: write spans, and handler spans continuing each entry's trace", async () => {
    const otlp = await collector()
    try {
      const r = await run(
        ["demo", "--source", "synthetic", "--redis", redis.url, "--events", "30", "--metrics-port", "0", "--json"],
        { env: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" } }
      )
      expect(r.code, r.stderr).toBe(0)
      expect(JSON.parse(r.stdout)).toMatchObject({ written: 30, consumed: 30 })
      const writes = otlp.spans.filter((s) => s.name === "redflow.sink.write")
      expect(writes.reduce((n, w) => n + Number(attribute(w, "redflow.entries")), 0)).toBe(30)
      const handlers = otlp.spans.filter((s) => s.name === "redflow.consume.handle")
      expect(handlers.length).toBe(30)
      for (const h of handlers) {
        const write = writes.find((w) => w.spanId === h.parentSpanId)
        expect(write, `handler of ${String(attribute(h, "redflow.entry.id"))}`).toBeDefined()
        expect(h.traceId).toBe(write!.traceId)
      }
    } finally {
      await otlp.close()
    }
  }, 120_000)

  it("without an endpoint: nothing is exported, entries carry no traceparent", async () => {
    const otlp = await collector()
    try {
      const stream = unique("otel.off")
      const produced = await run(["produce", "--redis", redis.url, "--stream", stream, "--events", "5"], {
        env: { OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_SERVICE_NAME: "redflow-test" }
      })
      expect(produced.code, produced.stderr).toBe(0)
      const entries = await withClient(
        redis.url,
        (c) => c.xrange(stream, "-", "+") as Promise<Array<[string, Array<string>]>>
      )
      expect(entries.length).toBe(5)
      for (const [, flat] of entries) expect(flat).not.toContain("traceparent")
      expect(otlp.paths).toEqual([])
    } finally {
      await otlp.close()
    }
  }, 120_000)
})
