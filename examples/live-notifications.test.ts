import * as Http from "node:http"
import { expect, layer } from "@effect/vitest"
import { Effect, Layer, Stream } from "effect"
import { HttpServer } from "effect/http"
import { Position } from "@redflow/core"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { server, type Notification } from "./live-notifications.ts"
import { publish } from "./shared.ts"

interface SseMessage {
  readonly id: string | undefined
  readonly event: string | undefined
  readonly data: string
}

/** A real HTTP client on `/events`: collects the SSE messages as they arrive. */
const connect = (port: number, path: string, headers: Record<string, string> = {}) =>
  new Promise<{
    readonly status: number | undefined
    readonly contentType: string | undefined
    readonly messages: Array<SseMessage>
    readonly close: () => void
  }>((resolve, reject) => {
    const request = Http.get({ host: "127.0.0.1", port, path, headers: { accept: "text/event-stream", ...headers } })
    request.on("error", reject)
    request.on("response", (response) => {
      const messages: Array<SseMessage> = []
      let buffer = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => {
        buffer += chunk
        let end: number
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          const fields = new Map<string, Array<string>>()
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue
            const colon = line.indexOf(":")
            const name = line.slice(0, colon)
            fields.set(name, [...(fields.get(name) ?? []), line.slice(colon + 1).replace(/^ /, "")])
          }
          if (fields.has("data")) {
            messages.push({
              id: fields.get("id")?.[0],
              event: fields.get("event")?.[0],
              data: fields.get("data")!.join("\n")
            })
          }
        }
      })
      resolve({
        status: response.statusCode,
        contentType: response.headers["content-type"],
        messages,
        close: () => request.destroy()
      })
    })
  })

const waitFor = (label: string, check: () => boolean) =>
  Effect.gen(function* () {
    const deadline = Date.now() + 10_000
    while (!check()) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for ${label}`))
      yield* Effect.sleep("20 millis")
    }
  })

layer(RedisTestServer.layer(), { excludeTestServices: true })("live notifications over Server-Sent Events", (it) => {
  it.effect("a browser receives the changes of its table live, and resumes after a reconnect with Last-Event-ID", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const stream = `examples.sse.${Date.now().toString(36)}.changes`
      const events = Array.from(
        yield* Stream.runCollect(SyntheticSource.make({ count: 40, tables: ["customers", "orders"] }))
      )
      const ordersOf = (from: number, to: number) => events.slice(from, to).filter((e) => e.source.table === "orders")

      yield* Effect.gen(function* () {
        // Changes made before the browser connects are history, not notifications.
        yield* publish(stream, Stream.fromIterable(events.slice(0, 10)))
        const { address } = yield* HttpServer.HttpServer
        const port = address._tag === "UnixPathAddress" ? 0 : address.port

        const browser = yield* Effect.promise(() => connect(port, "/events?table=orders"))
        expect(browser.status).toBe(200)
        expect(browser.contentType).toMatch(/^text\/event-stream/)
        yield* publish(
          stream,
          SyntheticSource.make({ count: 25, tables: ["customers", "orders"], from: Position.fromSequence(10) })
        )
        const live = ordersOf(10, 25)
        yield* waitFor("the live orders changes", () => browser.messages.length >= live.length)
        const received = browser.messages.map((m) => ({ ...m, notification: JSON.parse(m.data) as Notification }))
        expect(received.map((m) => m.event)).toEqual(live.map(() => "orders"))
        expect(received.map((m) => m.notification)).toEqual(
          live.map((e) => ({
            op: e.op,
            table: "orders",
            id: (e.after ?? e.before)!.id,
            row: e.after ?? e.before,
            ts_ms: e.ts_ms
          }))
        )
        expect(received.every((m) => /^\d+-\d+$/.test(m.id!))).toBe(true)

        // The connection drops; changes go on; the browser reconnects with the last id it saw.
        browser.close()
        yield* publish(
          stream,
          SyntheticSource.make({ count: 40, tables: ["customers", "orders"], from: Position.fromSequence(25) })
        )
        const again = yield* Effect.promise(() =>
          connect(port, "/events?table=orders", { "last-event-id": received[received.length - 1]!.id! })
        )
        const missed = ordersOf(25, 40)
        yield* waitFor("the changes made while disconnected", () => again.messages.length >= missed.length)
        yield* Effect.sleep("200 millis")
        expect(again.messages.map((m) => (JSON.parse(m.data) as Notification).ts_ms)).toEqual(
          missed.map((e) => e.ts_ms)
        )
        again.close()

        // Every table when none is asked for.
        const all = yield* Effect.promise(() => connect(port, "/events"))
        yield* publish(
          stream,
          SyntheticSource.make({ count: 44, tables: ["customers", "orders"], from: Position.fromSequence(40) })
        )
        yield* waitFor("four changes of both tables", () => all.messages.length >= 4)
        expect(all.messages.length).toBe(4)
        all.close()
      }).pipe(
        Effect.provide(
          server({ stream, port: 0, host: "127.0.0.1" }).pipe(Layer.provideMerge(RedisConnection.layer({ url })))
        )
      )
    })
  )
})
