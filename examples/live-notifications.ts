/**
 * Use case: real-time notifications, one of the uses of the contract in docs/DESIGN.md: database changes pushed to
 * browsers as they happen, with Server-Sent Events from an Effect HTTP server.
 *
 * `GET /events` answers `text/event-stream`: every change of the CDC stream (optionally only one table,
 * `?table=orders`) as an SSE message whose `id` is the stream entry id, `event` the table and `data` the change as
 * JSON. A browser's `EventSource` reconnects by itself after a network blip and sends the last id it saw in
 * `Last-Event-ID`; the server resumes the plain `XREAD` subscription right after it, so nothing is missed across
 * reconnects (within the stream's retention). Each connection reads with its own subscription, closed when the
 * browser goes away. `GET /` is a small page that shows the changes live.
 *
 * Notifications are broadcast, not work: a plain subscription (no consumer group, no acknowledgement) is the right
 * tool, each browser seeing every change.
 *
 * Run: `pnpm exec node examples/live-notifications.ts`, then open http://localhost:8080 (PORT to change it;
 * RUN_SECONDS to stop after a while). Synthetic changes are published twice a second.
 */
import * as Http from "node:http"
import { NodeHttpServer } from "@effect/platform-node"
import { Console, Effect, Layer, Option, Stream } from "effect"
import { HttpRouter, HttpServer, HttpServerResponse } from "effect/http"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import { CdcEvent } from "@redflow/core"
import { RedisConnection } from "@redflow/redis/RedisConnection"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"
import * as StreamAdmin from "@redflow/redis/StreamAdmin"
import { isMain, publish, runExample } from "./shared.ts"

/** The JSON a browser receives for one change. */
export interface Notification {
  readonly op: CdcEvent.Op
  readonly table: string
  readonly id: unknown
  readonly row: CdcEvent.Row | null
  readonly ts_ms: number
}

/** One change as an SSE message. */
export const toSse = (entry: RedisStreamConsumer.SubscriptionEntry): string => {
  const { event } = entry
  const notification: Notification = {
    op: event.op,
    table: event.source.table,
    id: CdcEvent.row(event)?.id ?? null,
    row: CdcEvent.row(event),
    ts_ms: event.ts_ms
  }
  return `id: ${entry.id}\nevent: ${event.source.table}\ndata: ${JSON.stringify(notification)}\n\n`
}

const ENTRY_ID = /^\d+-\d+$/

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>Redflow live changes</title>
<style>body{font:14px system-ui;margin:2em}li{font-family:ui-monospace,monospace}</style>
<h1>Live changes</h1>
<ul id="changes"></ul>
<script>
  const list = document.getElementById("changes")
  const source = new EventSource("/events")
  const show = (message) => {
    const change = JSON.parse(message.data)
    const item = document.createElement("li")
    item.textContent = change.op + " " + change.table + " #" + change.id + " " + JSON.stringify(change.row)
    list.prepend(item)
    while (list.children.length > 50) list.lastChild.remove()
  }
  for (const table of ["customers", "orders", "payments"]) source.addEventListener(table, show)
</script>
`

const routes = (stream: string) =>
  Layer.mergeAll(
    HttpRouter.add("GET", "/", HttpServerResponse.html(PAGE)),
    HttpRouter.add("GET", "/events", (request) =>
      Effect.gen(function* () {
        const redis = yield* RedisConnection
        const table = new URL(request.url, "http://localhost").searchParams.get("table")
        const lastEventId = request.headers["last-event-id"]
        // Fix the starting point before answering, so a change made once the client has its response is never
        // missed: after the id the browser last saw, else after the current end of the stream.
        const from =
          lastEventId !== undefined && ENTRY_ID.test(lastEventId)
            ? lastEventId
            : Option.getOrElse(yield* StreamAdmin.lastId(stream), () => "0-0")
        const changes = RedisStreamConsumer.subscribe({ stream, from }).pipe(
          Stream.filter((entry) => table === null || entry.event.source.table === table),
          Stream.map(toSse)
        )
        // A comment now and then keeps proxies from closing an idle connection.
        const keepAlive = Stream.tick("15 seconds").pipe(
          Stream.drop(1),
          Stream.map(() => ": keep-alive\n\n")
        )
        const body = Stream.concat(Stream.succeed("retry: 1000\n\n"), Stream.merge(changes, keepAlive)).pipe(
          Stream.encodeText,
          Stream.provideService(RedisConnection, redis),
          Stream.tapError((error) => Effect.logWarning(`notification stream ended: ${error.message}`))
        )
        return HttpServerResponse.stream(body, {
          contentType: "text/event-stream",
          headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
        })
      })
    )
  )

/** The HTTP server, listening on `port` (0 = a free one; read it from `HttpServer.HttpServer`'s address). */
export const server = (options: { readonly stream: string; readonly port?: number; readonly host?: string }) =>
  HttpRouter.serve(routes(options.stream), { disableLogger: true, disableListenLog: true }).pipe(
    Layer.provideMerge(
      NodeHttpServer.layer(() => Http.createServer(), {
        port: options.port ?? 8080,
        ...(options.host !== undefined ? { host: options.host } : {}),
        // Event streams never end by themselves: do not wait for them on shutdown.
        gracefulShutdownTimeout: "1 second"
      })
    )
  )

if (isMain(import.meta)) {
  runExample(() =>
    Effect.gen(function* () {
      const stream = "cdc.shop.changes"
      const port = Number(process.env.PORT ?? 8080)
      const seconds = process.env.RUN_SECONDS === undefined ? undefined : Number(process.env.RUN_SECONDS)
      const program = Effect.gen(function* () {
        const { address } = yield* HttpServer.HttpServer
        yield* Console.log(`open http://localhost:${address._tag === "UnixPathAddress" ? port : address.port}`)
        // The "database": two changes a second, published by the sink.
        yield* publish(stream, SyntheticSource.make({ ratePerSecond: 2, seed: Date.now() % 1000 }))
      }).pipe(Effect.provide(server({ stream, port })))
      yield* seconds === undefined
        ? program
        : Effect.timeoutOrElse(program, { duration: `${seconds} seconds`, orElse: () => Effect.void })
    })
  )
}
