import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as PostgresMetrics from "../src/PostgresMetrics.ts"

describe("PostgresMetrics", () => {
  it.effect("a series keyed once (eventsOf, transactionsOf) is the series withAttributes reads", () =>
    Effect.gen(function* () {
      const attributes = { source: "metrics-test", op: "c" }
      yield* Metric.update(PostgresMetrics.eventsOf(attributes), 3)
      yield* Metric.update(Metric.withAttributes(PostgresMetrics.events, attributes), 2)
      yield* Metric.update(PostgresMetrics.eventsOf(attributes), 1)
      const events = yield* Metric.value(Metric.withAttributes(PostgresMetrics.events, attributes))
      assert.strictEqual(events.count, 6)
      yield* Metric.update(PostgresMetrics.transactionsOf({ source: "metrics-test" }), 4)
      const transactions = yield* Metric.value(
        Metric.withAttributes(PostgresMetrics.transactions, { source: "metrics-test" })
      )
      assert.strictEqual(transactions.count, 4)
    })
  )
})
