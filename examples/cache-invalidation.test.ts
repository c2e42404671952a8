import { expect, layer } from "@effect/vitest"
import { Effect, Fiber, Option } from "effect"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { invalidate, makeCache, makeDatabase } from "./cache-invalidation.ts"
import { allAcknowledged } from "./shared.ts"

layer(RedisTestServer.layer(), { excludeTestServices: true })("cache invalidation", (it) => {
  it.effect("a row's cached key is evicted when the row changes; the next read sees the new row", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const run = Date.now().toString(36)
      const stream = `examples.cache.${run}.products`
      const prefix = `examples.cache.${run}:`
      yield* Effect.gen(function* () {
        const db = makeDatabase(stream)
        const cache = yield* makeCache(db, prefix)
        const invalidator = yield* Effect.forkChild(invalidate(stream, { prefix }))
        yield* db.write(
          Array.from({ length: 10 }, (_, i) => ({
            op: "c" as const,
            row: { id: i + 1, name: `product ${i + 1}`, price: "10.00" }
          }))
        )
        yield* allAcknowledged(stream, "cache-invalidator").pipe(Effect.timeout("10 seconds"))
        for (let id = 1; id <= 10; id++) expect(Option.getOrThrow(yield* cache.get(id)).from).toBe("database")
        expect(Option.getOrThrow(yield* cache.get(2))).toMatchObject({ price: "10.00", from: "cache" })

        // Without the invalidator the cache would now serve 10.00 for an hour.
        yield* db.write([
          { op: "u", id: 2, patch: { price: "12.50" } },
          { op: "u", id: 2, patch: { price: "13.00" } },
          { op: "d", id: 4 },
          { op: "u", id: 7, patch: { name: "renamed" } }
        ])
        yield* allAcknowledged(stream, "cache-invalidator").pipe(Effect.timeout("10 seconds"))
        expect(yield* cache.keys("products")).toEqual(
          [1, 3, 5, 6, 8, 9, 10].map((id) => `${prefix}products:${id}`).sort()
        )
        expect(Option.getOrThrow(yield* cache.get(2))).toMatchObject({ price: "13.00", from: "database" })
        expect(yield* cache.get(4)).toEqual(Option.none())
        expect(Option.getOrThrow(yield* cache.get(7))).toMatchObject({ name: "renamed", from: "database" })
        expect(Option.getOrThrow(yield* cache.get(1))).toMatchObject({ price: "10.00", from: "cache" })

        // A truncate evicts the whole table.
        yield* db.write([{ op: "t" }])
        yield* allAcknowledged(stream, "cache-invalidator").pipe(Effect.timeout("10 seconds"))
        expect(yield* cache.keys("products")).toEqual([])
        yield* Fiber.interrupt(invalidator)
      }).pipe(Effect.provide(RedisConnection.layer({ url })))
    })
  )
})
