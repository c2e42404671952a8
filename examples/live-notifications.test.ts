import * as Http from "node:http"
import { expect, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as PostgresTestServer from "@redflow/testing/PostgresTestServer"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Harness from "./harness.ts"
import {
  duplicates,
  latencies,
  type Notification,
  openPage,
  placeOrders,
  type Received,
  setup,
  start
} from "./live-notifications.ts"
import * as Chromium from "./web/chromium.ts"

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
    readonly body: () => string
    readonly messages: Array<SseMessage>
    readonly close: () => void
  }>((resolve, reject) => {
    const request = Http.get({ host: "127.0.0.1", port, path, headers: { accept: "text/event-stream", ...headers } })
    request.on("error", reject)
    request.on("response", (response) => {
      const messages: Array<SseMessage> = []
      let all = ""
      let buffer = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => {
        all += chunk
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
        body: () => all,
        messages,
        close: () => request.destroy()
      })
    })
  })

/** A WebSocket client (Node 24's built-in): the messages it got, and how the server closed it. */
const openSocket = (port: number, first: string) =>
  new Promise<{
    readonly messages: Array<{ type: string; entry?: string; change?: Notification; message?: string }>
    readonly closed: () => { code: number; reason: string } | undefined
    readonly close: () => void
  }>((resolve, reject) => {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/ws`)
    const messages: Array<{ type: string; entry?: string; change?: Notification; message?: string }> = []
    let closed: { code: number; reason: string } | undefined
    socket.onerror = () => reject(new Error(`WebSocket to 127.0.0.1:${port}/ws failed`))
    socket.onclose = (e) => (closed = { code: e.code, reason: e.reason })
    socket.onmessage = (e) => messages.push(JSON.parse(String(e.data)))
    socket.onopen = () => {
      socket.send(first)
      resolve({ messages, closed: () => closed, close: () => socket.close() })
    }
  })

const waitFor = (label: string, check: () => boolean) =>
  Effect.gen(function* () {
    const deadline = Date.now() + 20_000
    while (!check()) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for ${label}`))
      yield* Effect.sleep("20 millis")
    }
  })

const entryOrder = (id: string) => id.split("-").map(BigInt) as [bigint, bigint]
const increasing = (ids: ReadonlyArray<string>) =>
  ids.every((id, i) => {
    if (i === 0) return true
    const [a, b] = entryOrder(ids[i - 1]!)
    const [c, d] = entryOrder(id)
    return c > a || (c === a && d > b)
  })

/** The orders table rebuilt from the changes a client received, as PostgreSQL returns it. */
const rebuild = (changes: ReadonlyArray<{ op: string; row: Record<string, unknown> | null }>) => {
  const rows = new Map<number, Record<string, unknown>>()
  for (const c of changes) {
    if (c.op === "d") rows.delete(Number(c.row?.id))
    else rows.set(Number(c.row!.id), { ...c.row })
  }
  return [...rows.values()].sort((a, b) => Number(a.id) - Number(b.id))
}

const ordersTable = (example: Harness.Example) =>
  example.sql.query(`SELECT id, customer, total::text AS total, status FROM ${example.tables.orders} ORDER BY id`)

layer(Layer.mergeAll(PostgresTestServer.layer(), RedisTestServer.layer()), { excludeTestServices: true })(
  "live notifications fed by PostgreSQL",
  (it) => {
    it.effect(
      "SSE and WebSocket clients get the changes of their table, resume after the last entry they had, and are " +
        "told what is wrong with a bad subscription",
      () =>
        Effect.gen(function* () {
          const postgres = yield* PostgresTestServer.PostgresTestServer
          const redis = yield* RedisTestServer.RedisTestServer
          const example = yield* Harness.make(setup, { databaseUrl: postgres.url, redisUrl: redis.url })
          yield* example.supervise(
            Effect.gen(function* () {
              const streams = { orders: example.stream("orders"), customers: example.stream("customers") }
              // Changes made before a client connects are history, not notifications.
              const history = yield* placeOrders(example, 6)
              yield* example.written.atLeast(history + 2)
              const { port } = yield* start({ streams, port: 0, host: "127.0.0.1" })

              const browser = yield* Effect.promise(() => connect(port, "/events?table=orders"))
              expect(browser.status).toBe(200)
              expect(browser.contentType).toMatch(/^text\/event-stream/)
              const socket = yield* Effect.promise(() => openSocket(port, JSON.stringify({ subscribe: "orders" })))
              yield* waitFor("the WebSocket subscription", () => socket.messages.length >= 1)
              expect(socket.messages[0]).toMatchObject({ type: "subscribed", table: "orders" })

              const live = yield* placeOrders(example, 12)
              expect(live).toBe(16)
              yield* waitFor("the live orders changes", () => browser.messages.length >= live)
              yield* waitFor("the live orders changes over the WebSocket", () => socket.messages.length >= live + 1)
              const received = browser.messages.map((m) => ({ ...m, notification: JSON.parse(m.data) as Notification }))
              expect(received.map((m) => m.event)).toEqual(received.map(() => "orders"))
              expect(received.every((m) => /^\d+-\d+$/.test(m.id!))).toBe(true)
              expect(increasing(received.map((m) => m.id!))).toBe(true)
              // The SSE messages and the WebSocket messages carry the same entries and changes.
              const overSocket = socket.messages.slice(1)
              expect(overSocket.map((m) => m.entry)).toEqual(received.map((m) => m.id))
              expect(overSocket.map((m) => m.change)).toEqual(received.map((m) => m.notification))
              // Rows 7..18 as the table holds them: the six earlier ones were not sent, the customers never.
              const table = yield* ordersTable(example)
              expect(rebuild(received.map((m) => m.notification))).toEqual(table.slice(6))
              expect(received.map((m) => m.notification.op)).toEqual(
                Array.from({ length: 12 }, (_, i) => (i % 3 === 2 ? ["c", "u"] : ["c"])).flat()
              )
              for (const m of received) {
                expect(m.notification.table).toBe("orders")
                expect(m.notification.id).toBe(m.notification.row!.id)
                expect(m.notification.commit_ms).toBeLessThanOrEqual(Date.now())
              }

              // The connections drop; changes go on; the clients come back with the last id they saw.
              browser.close()
              socket.close()
              const missed = yield* placeOrders(example, 9)
              const again = yield* Effect.promise(() =>
                connect(port, "/events?table=orders", { "last-event-id": received.at(-1)!.id! })
              )
              const resumed = yield* Effect.promise(() =>
                openSocket(port, JSON.stringify({ subscribe: "orders", after: overSocket.at(-1)!.entry }))
              )
              yield* waitFor("the changes made while disconnected", () => again.messages.length >= missed)
              yield* waitFor("the changes made while disconnected (WebSocket)", () => resumed.messages.length > missed)
              yield* example.written.atLeast(history + 2 + live + 3 + missed + 2)
              yield* Effect.sleep("200 millis")
              expect(again.messages).toHaveLength(missed)
              expect(resumed.messages.slice(1).map((m) => m.entry)).toEqual(again.messages.map((m) => m.id))
              expect(
                rebuild([...received.map((m) => m.notification), ...again.messages.map((m) => JSON.parse(m.data))])
              ).toEqual((yield* ordersTable(example)).slice(6))
              again.close()
              resumed.close()

              // The customers table has its own subscription; a table that is not served is refused, naming them.
              const customers = yield* Effect.promise(() => connect(port, "/events?table=customers"))
              yield* example.sql.query(`INSERT INTO ${example.tables.customers} (name) VALUES ('alan')`)
              yield* waitFor("the new customer", () => customers.messages.length >= 1)
              expect(customers.messages.map((m) => m.event)).toEqual(["customers"])
              expect(JSON.parse(customers.messages[0]!.data)).toMatchObject({ op: "c", row: { name: "alan" } })
              customers.close()
              const wrong = yield* Effect.promise(() => connect(port, "/events?table=payments"))
              yield* waitFor("the refusal", () => wrong.body().length > 0)
              expect(wrong.status).toBe(400)
              expect(wrong.body()).toBe('no table "payments": subscribe to one of orders, customers')
              const badSocket = yield* Effect.promise(() => openSocket(port, JSON.stringify({ subscribe: "payments" })))
              yield* waitFor("the WebSocket refusal", () => badSocket.closed() !== undefined)
              expect(badSocket.messages).toEqual([
                { type: "error", message: 'no table "payments": subscribe to one of orders, customers' }
              ])
              expect(badSocket.closed()?.code).toBe(1008)
              const garbled = yield* Effect.promise(() => openSocket(port, "hello"))
              yield* waitFor("the WebSocket refusal of a garbled message", () => garbled.closed() !== undefined)
              expect(garbled.messages[0]?.message).toMatch(/^the first message must be \{"subscribe"/)
            }).pipe(Effect.provide(RedisConnection.layer({ url: redis.url })))
          )
        })
    )

    it.effect(
      "in Chromium, a row committed in PostgreSQL appears on the page over a WebSocket and over SSE; rows committed " +
        "while the server is down appear after the reconnect, none twice",
      () =>
        Effect.gen(function* () {
          const postgres = yield* PostgresTestServer.PostgresTestServer
          const redis = yield* RedisTestServer.RedisTestServer
          const example = yield* Harness.make(setup, { databaseUrl: postgres.url, redisUrl: redis.url })
          // No Chromium is a failure naming the package to install, never a skip.
          const browser = yield* Chromium.launch
          yield* example.supervise(
            Effect.gen(function* () {
              const streams = { orders: example.stream("orders"), customers: example.stream("customers") }
              const first = yield* start({ streams, port: 0, host: "127.0.0.1" })
              const pages = [yield* openPage(browser, first.port, "ws"), yield* openPage(browser, first.port, "sse")]
              yield* Effect.forEach(pages, (p) => p.live, { discard: true })

              // One row: on both pages, as committed.
              const [row] = yield* example.sql.query<{ id: number }>(
                `INSERT INTO ${example.tables.orders} (customer, total) VALUES ('ada', 12.50) RETURNING id`
              )
              for (const p of pages) {
                const [shown] = yield* p.receivedAtLeast(1)
                expect(shown, p.via).toMatchObject({
                  op: "c",
                  key: row!.id,
                  row: { id: row!.id, customer: "ada", total: "12.50", status: "placed" }
                })
                const text = yield* Chromium.attempt("to read the table", () => p.page.textContent("#changes"))
                expect(text, p.via).toContain(`#${row!.id}`)
                expect(text, p.via).toContain("customer: ada, total: 12.50, status: placed")
              }
              const live = 1 + (yield* placeOrders(example, 30))
              for (const p of pages) yield* p.receivedAtLeast(live)

              // The server goes away: every connection drops, the pages retry, rows are committed meanwhile.
              yield* first.stop
              const whileDown = yield* placeOrders(example, 15)
              yield* example.written.atLeast(live + whileDown + 9)
              for (const p of pages) expect((yield* p.state).status, p.via).toBe("reconnecting")
              yield* start({ streams, port: first.port, host: "127.0.0.1" })
              const after = yield* placeOrders(example, 6)
              const total = live + whileDown + after
              const table = yield* ordersTable(example)
              for (const p of pages) {
                yield* p.receivedAtLeast(total)
                yield* Effect.sleep("300 millis")
                const state = yield* p.state
                expect(state.status, p.via).toBe("live")
                expect(state.reconnects, p.via).toBeGreaterThan(0)
                expect(state.received, p.via).toHaveLength(total)
                expect(duplicates(state.received), p.via).toBe(0)
                expect(increasing(state.received.map((r: Received) => r.entry)), p.via).toBe(true)
                expect(rebuild(state.received), p.via).toEqual(table)
                const before = state.received.slice(0, live)
                console.log(
                  `${p.via === "ws" ? "WebSocket" : "SSE"} page, commit → page: ` +
                    `${Harness.latencyText(latencies(before), "live changes")}; of which commit → Redis ` +
                    `${Harness.latencyText(before.map((r) => Number(r.entry.split("-")[0]) - r.commit_ms))}`
                )
              }
              const path = Chromium.screenshotPath("notifications")
              yield* Chromium.attempt("to take a screenshot", () => pages[0]!.page.screenshot({ path }))
              console.log(`screenshot: ${path}`)
            }).pipe(Effect.provide(RedisConnection.layer({ url: redis.url })))
          )
        })
    )
  }
)
