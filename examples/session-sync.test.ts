import { expect, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as StreamAdmin from "@redflow/redis/StreamAdmin"
import * as PostgresTestServer from "@redflow/testing/PostgresTestServer"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Harness from "./harness.ts"
import { convergence, instance, type Instance, setup, tableState, workload, type Writers } from "./session-sync.ts"

layer(Layer.mergeAll(PostgresTestServer.layer(), RedisTestServer.layer()), { excludeTestServices: true })(
  "session synchronization fed by PostgreSQL",
  (it) => {
    it.effect(
      "sessions changed on any of four instances end up in the memory of all of them, as the table holds them",
      () =>
        Effect.gen(function* () {
          const postgres = yield* PostgresTestServer.PostgresTestServer
          const redis = yield* RedisTestServer.RedisTestServer
          const example = yield* Harness.make(setup, { databaseUrl: postgres.url, redisUrl: redis.url })
          yield* example
            .supervise(
              Effect.gen(function* () {
                const writers: Writers = new Map()
                const instances: Array<Instance> = []
                for (const name of ["a", "b", "c", "d"]) instances.push(yield* instance(example, name, writers))
                const committed = yield* workload(instances, { users: 60, updatesPerUser: 3, logouts: 40 })
                expect(committed).toBe(60 * 4 + 40)
                yield* Effect.forEach(instances, (i) => i.applied.atLeast(committed), { discard: true })

                const table = yield* tableState(example)
                expect(table.size).toBe(20)
                for (const i of instances) expect(new Map(i.sessions), `instance ${i.name}`).toEqual(table)
                // Requests went to every instance, and every change reached the three others.
                expect(new Set(writers.values())).toEqual(new Set(["a", "b", "c", "d"]))
                const times = convergence(instances, writers)
                expect(times).toHaveLength(committed)
                console.log(`convergence (commit → three other instances): ${Harness.latencyText(times)}`)

                // Four consumer groups, each through everything, on four connections of their own.
                const stream = example.stream("sessions")
                const groups = yield* StreamAdmin.groups(stream)
                expect(groups.map((g) => g.name.split("-")[1]).sort()).toEqual(["a", "b", "c", "d"])
                for (const g of groups) expect(g).toMatchObject({ entriesRead: committed, lag: 0, pending: 0 })
                const redisClient = yield* RedisConnection.RedisConnection
                const clients = yield* redisClient.run((c) => c.client("LIST") as Promise<string>)
                for (const name of ["a", "b", "c", "d"]) expect(clients).toContain(`name=session-sync-${name} `)

                // An instance started later rebuilds the same memory from the stream; one that stops takes its group.
                yield* Effect.scoped(
                  Effect.gen(function* () {
                    const late = yield* instance(example, "e", writers)
                    yield* late.applied.atLeast(committed)
                    expect(new Map(late.sessions)).toEqual(table)
                    expect(yield* StreamAdmin.groups(stream)).toHaveLength(5)
                  })
                )
                expect(yield* StreamAdmin.groups(stream)).toHaveLength(4)
              })
            )
            .pipe(Effect.provide(RedisConnection.layer({ url: redis.url })))
        })
    )
  }
)
