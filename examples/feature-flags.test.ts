import { expect, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as PostgresTestServer from "@redflow/testing/PostgresTestServer"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import {
  commitToAll,
  decide,
  type InstanceProcess,
  setup,
  startInstances,
  states,
  tableFlags,
  workload
} from "./feature-flags.ts"
import * as Harness from "./harness.ts"

layer(Layer.mergeAll(PostgresTestServer.layer(), RedisTestServer.layer()), { excludeTestServices: true })(
  "feature flags fed by PostgreSQL",
  (it) => {
    it.effect(
      "flag changes in the table reach all five instance processes, which then hold the table and decide alike",
      () =>
        Effect.gen(function* () {
          const postgres = yield* PostgresTestServer.PostgresTestServer
          const redis = yield* RedisTestServer.RedisTestServer
          const example = yield* Harness.make(setup, { databaseUrl: postgres.url, redisUrl: redis.url })
          let stopped: ReadonlyArray<InstanceProcess> = []
          yield* example.supervise(
            Effect.scoped(
              Effect.gen(function* () {
                const instances = yield* startInstances(example, 5)
                stopped = instances
                // Five processes of their own.
                expect(new Set(instances.map((i) => i.pid)).size).toBe(5)
                expect(instances.map((i) => i.pid)).not.toContain(process.pid)
                yield* Effect.forEach(instances, (i) => i.appliedCount.atLeast(4), { discard: true })
                for (const state of yield* states(instances)) expect(state).toEqual(yield* tableFlags(example))

                const seen = new Set(instances[0]!.applied.keys())
                const changes = yield* workload(example, 60, 0)
                yield* Effect.forEach(instances, (i) => i.appliedCount.atLeast(4 + changes), { discard: true })
                const table = yield* tableFlags(example)
                expect(table.map((f) => f.id)).toEqual([
                  "beta-banner",
                  "dark-mode",
                  "new-checkout",
                  "search-v2",
                  "tmp-60"
                ])
                for (const [n, state] of (yield* states(instances)).entries()) {
                  expect(state, `instance app-${n + 1}`).toEqual(table)
                }
                const events = [...instances[0]!.applied.keys()].filter((id) => !seen.has(id))
                expect(events).toHaveLength(changes)
                const times = commitToAll(instances, events)
                expect(times).toHaveLength(changes)
                console.log(`commit → all five instances: ${Harness.latencyText(times)}`)

                // The same users in the rollout on every instance, as the table's row says.
                const searchV2 = table.find((f) => f.id === "search-v2")!
                for (const answer of yield* Effect.forEach(instances, (i) => i.ask("decide search-v2 1000"))) {
                  expect(answer).toEqual({
                    type: "decided",
                    flag: "search-v2",
                    users: 1000,
                    enabled: decide(searchV2, 1000)
                  })
                }
                for (const i of instances) expect(i.stderr()).toBe("")
              })
            )
          )
          // Closing their stdin ends them, cleanly.
          expect(stopped.map((i) => i.exitCode())).toEqual([0, 0, 0, 0, 0])
        }),
      { timeout: 120_000 }
    )
  }
)
