import { expect, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as PostgresTestServer from "@redflow/testing/PostgresTestServer"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Harness from "./harness.ts"
import {
  allows,
  caughtUp,
  instance,
  type Instance,
  KEYS,
  load,
  makeAgreement,
  setup,
  tableState
} from "./rate-limiting.ts"

layer(Layer.mergeAll(PostgresTestServer.layer(), RedisTestServer.layer()), { excludeTestServices: true })(
  "rate-limiting state fed by PostgreSQL",
  (it) => {
    it.effect(
      "under load three instances decide from counters in memory; once the stream is consumed they all hold the " +
        "table and make the database's decision for every key",
      () =>
        Effect.gen(function* () {
          const postgres = yield* PostgresTestServer.PostgresTestServer
          const redis = yield* RedisTestServer.RedisTestServer
          const example = yield* Harness.make(setup, { databaseUrl: postgres.url, redisUrl: redis.url })
          yield* example
            .supervise(
              Effect.gen(function* () {
                const agreement = makeAgreement()
                const instances: Array<Instance> = []
                for (const name of ["a", "b", "c"]) instances.push(yield* instance(example, name, agreement))
                // The snapshot: every key, quota 20, nothing used.
                yield* caughtUp(example, instances, KEYS.length)
                const initial = yield* tableState(example)
                expect(initial.size).toBe(KEYS.length)
                for (const i of instances) expect(new Map(i.limits), `instance ${i.name}`).toEqual(initial)

                const report = yield* load(example, instances, { requests: 3_000, rate: 3_000, windowMs: 200 })
                expect(report.requests).toBe(3_000)
                // The hot keys hit their quota: some requests were denied, and the resets ran.
                expect(report.denied).toBeGreaterThan(0)
                expect(report.resets).toBeGreaterThan(0)

                yield* caughtUp(example, instances, KEYS.length + report.changes)
                const table = yield* tableState(example)
                for (const i of instances) expect(new Map(i.limits), `instance ${i.name}`).toEqual(table)
                for (const key of KEYS) {
                  const decision = allows(table.get(key))
                  expect(
                    instances.map((i) => allows(i.limits.get(key))),
                    key
                  ).toEqual([decision, decision, decision])
                  expect(agreement.agree(key), key).toBe(true)
                }
                expect(agreement.open()).toBe(0)
                // Every allowed request is in the table's totals, every reset in its window numbers.
                const totals = [...table.values()]
                expect(totals.reduce((sum, l) => sum + l.total, 0)).toBe(report.allowed)
                expect(new Set(totals.map((l) => l.window_no))).toEqual(new Set([report.resets]))

                const pct = (n: number) => `${((100 * n) / report.requests).toFixed(2)}%`
                console.log(
                  `${report.requests} requests in ${report.seconds.toFixed(1)} s, ${report.allowed} allowed; ` +
                    `disagreeing ${report.disagreeing} (${pct(report.disagreeing)}), allowed past the quota ` +
                    `${report.overAdmitted} (${pct(report.overAdmitted)}); disagreement windows ` +
                    `${Harness.latencyText(agreement.windows(), "windows")}; widest gap in used ${agreement.widestGap()}`
                )

                // An instance started now rebuilds the same counters from the stream.
                yield* Effect.scoped(
                  Effect.gen(function* () {
                    const late = yield* instance(example, "d", makeAgreement())
                    yield* caughtUp(example, [late], KEYS.length + report.changes)
                    expect(new Map(late.limits)).toEqual(table)
                  })
                )
              })
            )
            .pipe(Effect.provide(RedisConnection.layer({ url: redis.url })))
        })
    )
  }
)
