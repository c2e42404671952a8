import { expect, layer } from "@effect/vitest"
import { Effect, Layer, Schedule } from "effect"
import * as PostgresTestServer from "@redflow/testing/PostgresTestServer"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import {
  aggregator,
  CHART_MINUTES,
  databaseFigures,
  displayed,
  openDashboard,
  replay,
  setup,
  start
} from "./dashboard.ts"
import * as Harness from "./harness.ts"
import * as Chromium from "./web/chromium.ts"

layer(Layer.mergeAll(PostgresTestServer.layer(), RedisTestServer.layer()), { excludeTestServices: true })(
  "live dashboard fed by PostgreSQL",
  (it) => {
    it.effect(
      "in Chromium, after a scripted workload the page's KPIs and chart equal the database's own aggregates",
      () =>
        Effect.gen(function* () {
          const postgres = yield* PostgresTestServer.PostgresTestServer
          const redis = yield* RedisTestServer.RedisTestServer
          const example = yield* Harness.make(setup, { databaseUrl: postgres.url, redisUrl: redis.url })
          // No Chromium is a failure naming the package to install, never a skip.
          const browser = yield* Chromium.launch
          yield* example.supervise(
            Effect.gen(function* () {
              const figures = yield* aggregator(example)
              const { port } = yield* start(figures, { port: 0, host: "127.0.0.1" })
              // The page is open before the orders come: it follows them live.
              const dashboard = yield* openDashboard(browser, port)
              const first = yield* replay(example, 200)
              const second = yield* replay(example, 250)
              // Live orders of now, a price correction, a deleted test order.
              yield* example.sql.query(
                `INSERT INTO ${example.tables.orders} (customer, amount) VALUES ('ada', 19.99), ('ken', 0.01)`
              )
              yield* example.sql.query(`UPDATE ${example.tables.orders} SET amount = amount + 1.10 WHERE id % 17 = 3`)
              yield* example.sql.query(`DELETE FROM ${example.tables.orders} WHERE customer = 'ken' AND amount = 0.01`)
              const [{ corrected }] = (yield* example.sql.query<{ corrected: number }>(
                `SELECT count(*)::int AS corrected FROM ${example.tables.orders} WHERE id % 17 = 3`
              )) as [{ corrected: number }]
              const changes = first + second + 2 + corrected + 1
              yield* example.written.atLeast(changes)
              yield* Effect.sync(() => figures.version()).pipe(
                Effect.repeat({ until: (n) => n >= changes, schedule: Schedule.spaced("20 millis") })
              )
              const shown = yield* dashboard.showing(figures.figures().entry)

              const truth = yield* databaseFigures(example)
              expect(truth.orders).toBe(450 - 15 + 1)
              expect(shown.text).toEqual(displayed(truth))
              expect(shown.figures).toMatchObject({
                orders: truth.orders,
                revenueCents: truth.revenueCents,
                refunds: truth.refunds,
                perMinute: truth.perMinute
              })
              expect(shown.figures.minutes).toEqual(truth.minutes)
              expect(truth.minutes.length).toBeGreaterThanOrEqual(CHART_MINUTES - 1)
              expect(shown.chart).toEqual({
                labels: truth.minutes.map((m) => m.minute.slice(11)),
                orders: truth.minutes.map((m) => m.orders),
                revenue: truth.minutes.map((m) => m.revenueCents / 100)
              })
              // It followed the stream: several updates, not one load at the end.
              expect(shown.updates).toBeGreaterThan(1)

              // A visitor opening the page now sees the same figures at once.
              const visitor = yield* openDashboard(browser, port)
              const again = yield* visitor.showing(shown.figures.entry)
              expect(again.text).toEqual(shown.text)
              expect(again.chart).toEqual(shown.chart)

              const path = Chromium.screenshotPath("dashboard")
              yield* Chromium.attempt("to take a screenshot", () => dashboard.page.screenshot({ path }))
              console.log(
                `dashboard after ${changes} changes, ${shown.updates} page updates: ${shown.text.orders} orders, ` +
                  `${shown.text.revenue}, ${shown.text.perMinute}/min, ${shown.text.refunds} refunds; screenshot: ${path}`
              )
            })
          )
        })
    )
  }
)
