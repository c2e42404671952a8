import { expect, layer } from "@effect/vitest"
import { Effect, Fiber, Layer, Option } from "effect"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as PostgresTestServer from "@redflow/testing/PostgresTestServer"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { invalidate, makeCache, setup, workload } from "./cache-invalidation.ts"
import * as Harness from "./harness.ts"

const servers = Layer.mergeAll(PostgresTestServer.layer(), RedisTestServer.layer())

/** The example against the file's servers, with the application's Redis connection. */
const withExample = <A, E>(body: (example: Harness.Example) => Effect.Effect<A, E, RedisConnection.RedisConnection>) =>
  Effect.gen(function* () {
    const postgres = yield* PostgresTestServer.PostgresTestServer
    const redis = yield* RedisTestServer.RedisTestServer
    const example = yield* Harness.make(setup, { databaseUrl: postgres.url, redisUrl: redis.url })
    return yield* example.supervise(body(example)).pipe(Effect.provide(RedisConnection.layer({ url: redis.url })))
  })

layer(servers, { excludeTestServices: true })("cache invalidation fed by PostgreSQL", (it) => {
  it.effect("a row's cached key is evicted when the row changes; the next read sees the new row", () =>
    withExample((example) =>
      Effect.gen(function* () {
        const products = example.tables.products
        const cache = yield* makeCache(example)
        const consumed = Harness.makeCounter()
        const invalidator = yield* Effect.forkChild(invalidate(example, { observe: () => consumed.add() }))
        yield* example.sql.query(
          `INSERT INTO ${products} (id, name, price) SELECT i, 'product ' || i, 10 FROM generate_series(1, 10) AS i`
        )
        yield* consumed.atLeast(10)
        for (let id = 1; id <= 10; id++) expect(Option.getOrThrow(yield* cache.get(id)).from).toBe("database")
        expect(Option.getOrThrow(yield* cache.get(2))).toMatchObject({ price: "10.00", from: "cache" })

        // Without the invalidator the cache would now serve 10.00 for an hour.
        yield* example.sql.query(`UPDATE ${products} SET price = 12.50 WHERE id = 2`)
        yield* example.sql.query(`UPDATE ${products} SET price = 13.00 WHERE id = 2`)
        yield* example.sql.query(`DELETE FROM ${products} WHERE id = 4`)
        yield* example.sql.query(`UPDATE ${products} SET name = 'renamed' WHERE id = 7`)
        yield* consumed.atLeast(14)
        expect(yield* cache.cachedIds).toEqual([1, 3, 5, 6, 8, 9, 10])
        expect(Option.getOrThrow(yield* cache.get(2))).toMatchObject({ price: "13.00", from: "database" })
        expect(yield* cache.get(4)).toEqual(Option.none())
        expect(Option.getOrThrow(yield* cache.get(7))).toMatchObject({ name: "renamed", from: "database" })
        expect(Option.getOrThrow(yield* cache.get(1))).toMatchObject({ price: "10.00", from: "cache" })

        // A truncate evicts the whole table.
        yield* example.sql.query(`TRUNCATE ${products}`)
        yield* consumed.atLeast(15)
        expect(yield* cache.cachedIds).toEqual([])
        expect(yield* cache.get(1)).toEqual(Option.none())
        yield* Fiber.interrupt(invalidator)
      })
    )
  )

  it.effect(
    "many updates of the same rows with reads in between: once a commit is consumed, no read returns the old row",
    () =>
      withExample((example) =>
        Effect.gen(function* () {
          const cache = yield* makeCache(example)
          const result = yield* workload(example, cache, { rows: 5, updates: 600, writers: 3, readers: 4 })
          expect(result.stale).toEqual([])
          expect(result.mismatched).toEqual([])
          expect(result.staleWindows).toHaveLength(600)
          // Both paths were taken: hits from the cache, and misses refilled from the database.
          expect(result.hits).toBeGreaterThan(0)
          expect(result.reads - result.hits).toBeGreaterThan(0)
          console.log(`stale window (commit → eviction): ${Harness.latencyText(result.staleWindows, "updates")}`)
        })
      )
  )
})
