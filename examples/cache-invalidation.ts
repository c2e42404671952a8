/**
 * Use case: cache invalidation, one of the uses of the contract in docs/DESIGN.md: evict cached rows when they change
 * in the database.
 *
 * A product catalogue is read through a Redis cache (`cache:products:<id>`, JSON, one hour TTL). Without help the
 * cache serves a stale price for up to an hour after the database changed. Here a consumer group follows the
 * table's change stream and deletes the cached key of every row that changed, so the next read misses and loads
 * the new row; a `TRUNCATE` evicts the whole table. Evictions are idempotent and commute (each one follows its
 * database change, and only a read refills the cache), so they run concurrently, in any order, and redelivered or
 * duplicate events are harmless: no dedup store is needed here.
 *
 * The "database" is an in-memory table whose writes are captured as CDC events and published by the sink, as a
 * CDC connector would.
 *
 * Run: `pnpm exec node examples/cache-invalidation.ts` (REDIS_URL, or a redis-server spawned for the run).
 */
import { Console, Effect, Fiber, Option, Stream } from "effect"
import { CdcEvent, Position } from "@redflow/core"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import type { RedisError } from "@redflow/redis/RedisError"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"
import { allAcknowledged, isMain, publish, runExample } from "./shared.ts"

// A type alias (not an interface) so a row is assignable to `CdcEvent.Row`.
export type Product = {
  readonly id: number
  readonly name: string
  readonly price: string
}

export type Change =
  | { readonly op: "c"; readonly row: Product }
  | { readonly op: "u"; readonly id: number; readonly patch: Partial<Omit<Product, "id">> }
  | { readonly op: "d"; readonly id: number }
  | { readonly op: "t" }

/** The source database: a table whose every write becomes a change event on `stream`. */
export const makeDatabase = (stream: string) => {
  const rows = new Map<number, Product>()
  let sequence = 0
  const event = (op: CdcEvent.Op, before: Product | null, after: Product | null) =>
    CdcEvent.make({
      op,
      before,
      after,
      source: { connector: "example", name: "catalogue", db: "shop", table: "products", ts_ms: Date.now() },
      ts_ms: Date.now(),
      position: Position.fromSequence(++sequence)
    })
  const apply = (change: Change): CdcEvent.CdcEvent | undefined => {
    switch (change.op) {
      case "c":
        rows.set(change.row.id, change.row)
        return event("c", null, change.row)
      case "u": {
        const before = rows.get(change.id)
        if (before === undefined) return undefined
        const after = { ...before, ...change.patch }
        rows.set(change.id, after)
        return event("u", before, after)
      }
      case "d": {
        const before = rows.get(change.id)
        if (before === undefined) return undefined
        rows.delete(change.id)
        return event("d", before, null)
      }
      case "t":
        rows.clear()
        return event("t", null, null)
    }
  }
  return {
    find: (id: number): Option.Option<Product> => Option.fromUndefinedOr(rows.get(id)),
    /** Applies changes in one transaction and publishes their events. */
    write: (changes: ReadonlyArray<Change>) =>
      publish(stream, Stream.fromIterable(changes.flatMap((c) => apply(c) ?? [])), { keyed: false }).pipe(Effect.asVoid)
  }
}

export type Database = ReturnType<typeof makeDatabase>

const cacheKey = (prefix: string, table: string, id: string | number) => `${prefix}${table}:${id}`

/** The read-through cache in Redis. */
export const makeCache = (db: Database, prefix = "cache:") =>
  Effect.gen(function* () {
    const redis = yield* RedisConnection.RedisConnection
    return {
      /** A product: from the cache, else from the database (and then cached for an hour). */
      get: (id: number) =>
        Effect.gen(function* (): Effect.fn.Return<
          Option.Option<Product & { readonly from: "cache" | "database" }>,
          RedisError
        > {
          const key = cacheKey(prefix, "products", id)
          const cached = yield* redis.run((c) => c.get(key))
          if (cached !== null) return Option.some({ ...(JSON.parse(cached) as Product), from: "cache" })
          const row = db.find(id)
          if (Option.isSome(row)) yield* redis.run((c) => c.set(key, JSON.stringify(row.value), "EX", 3600))
          return Option.map(row, (p) => ({ ...p, from: "database" }))
        }),
      /** The cached keys of a table, for inspection. */
      keys: (table: string) => redis.run((c) => c.keys(cacheKey(prefix, table, "*"))).pipe(Effect.map((k) => k.sort()))
    }
  })

/** The invalidator: evicts the cached row of every change, or the whole table on a truncate. */
export const invalidate = (stream: string, options: { readonly prefix?: string; readonly consumer?: string } = {}) =>
  Effect.gen(function* () {
    const redis = yield* RedisConnection.RedisConnection
    const prefix = options.prefix ?? "cache:"
    return yield* RedisStreamConsumer.run({
      stream,
      group: "cache-invalidator",
      consumer: options.consumer ?? "invalidator-1",
      concurrency: 8,
      handler: (event) =>
        Effect.gen(function* () {
          const table = event.source.table
          if (event.op === "t") {
            const keys = yield* redis.run((c) => c.keys(cacheKey(prefix, table, "*")))
            if (keys.length > 0) yield* redis.run((c) => c.del(...keys))
            return yield* Console.log(`evicted all ${keys.length} cached ${table}`)
          }
          const id = String(CdcEvent.row(event)?.id)
          const evicted = yield* redis.run((c) => c.del(cacheKey(prefix, table, id)))
          if (evicted > 0) yield* Console.log(`evicted ${cacheKey(prefix, table, id)} (${event.op})`)
        })
    })
  })

if (isMain(import.meta)) {
  runExample(() =>
    Effect.gen(function* () {
      const stream = "cdc.shop.products"
      const db = makeDatabase(stream)
      const cache = yield* makeCache(db)
      const invalidator = yield* Effect.forkChild(invalidate(stream))
      yield* db.write(
        [1, 2, 3, 4, 5].map((id) => ({ op: "c" as const, row: { id, name: `product ${id}`, price: "10.00" } }))
      )
      yield* allAcknowledged(stream, "cache-invalidator")
      for (const id of [1, 2, 3, 4, 5]) yield* cache.get(id) // warm the cache
      yield* Console.log(`cached: ${(yield* cache.keys("products")).join(", ")}`)

      yield* db.write([
        { op: "u", id: 2, patch: { price: "12.50" } },
        { op: "d", id: 4 }
      ])
      yield* allAcknowledged(stream, "cache-invalidator")
      yield* Console.log(`cached after the changes: ${(yield* cache.keys("products")).join(", ")}`)
      const two = yield* cache.get(2)
      yield* Console.log(`product 2: ${JSON.stringify(Option.getOrNull(two))}`)
      yield* Console.log(`product 4: ${JSON.stringify(Option.getOrNull(yield* cache.get(4)))}`)
      yield* Fiber.interrupt(invalidator)
    })
  )
}
