/**
 * Use case: cache invalidation, one of the uses of the contract in docs/DESIGN.md: a read-through Redis cache of a
 * PostgreSQL table, kept consistent with it by the table's change stream.
 *
 * A product catalogue (`products`) is read through a cache in Redis (one key per row, JSON, one hour TTL). Without
 * help the cache serves a stale price for up to an hour after the database changed. Here a consumer group follows
 * the table's change stream and evicts the cached row of every committed change, so the next read misses and loads
 * the new row; a `TRUNCATE` evicts the whole table.
 *
 * Evicting with `DEL` is not enough: a reader that loaded the old row just before the commit could put it back just
 * after the eviction, and it would stay for an hour. So every row has a `version` (taken from one sequence on every
 * insert and update by a trigger, so a row's later state always has a higher one), an eviction leaves a marker
 * "nothing older than version v" in the row's key, and a read fills the cache only with a row at least that new
 * (and only if no truncate happened since it began: a per-table epoch). With this, once a change has been consumed,
 * no read returns the row as it was before that change. Evictions only ever raise the marker, so they run
 * concurrently, in any order, and redelivered events are harmless: no dedup store is needed.
 *
 * The stale window, from the commit (PostgreSQL's commit timestamp) to the eviction, is printed at the end of a
 * workload of 2,000 updates of 20 rows (`UPDATES=` for another count): `pnpm example cache-invalidation`
 * (DATABASE_URL and REDIS_URL, or servers started for the run).
 *
 * Library or `redflow run`: in production the pipeline would be `redflow run` beside the database, and the
 * invalidator a consumer group inside the application, as here; the example runs the pipeline in its own process
 * (examples/harness.ts) so one command shows the whole path.
 */
import { Console, Effect, Fiber, Option, Schedule } from "effect"
import * as CdcEvent from "@redflow/core/CdcEvent"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import type { RedisError } from "@redflow/redis/RedisError"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"
import * as Harness from "./harness.ts"
import { isMain } from "./shared.ts"

export const setup: Harness.Setup = {
  name: "cache-invalidation",
  tables: {
    products: "id int PRIMARY KEY, name text NOT NULL, price numeric(10,2) NOT NULL, version int NOT NULL"
  },
  // The version trigger, and the whole old row in deletes (their version).
  prepare: ({ tables, schema }) => `
    CREATE SEQUENCE ${schema}.product_versions AS int;
    ALTER TABLE ${tables.products} ALTER COLUMN version SET DEFAULT nextval('${schema}.product_versions');
    CREATE FUNCTION ${schema}.next_product_version() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN NEW.version := nextval('${schema}.product_versions'); RETURN NEW; END $$;
    CREATE TRIGGER next_version BEFORE UPDATE ON ${tables.products}
      FOR EACH ROW EXECUTE FUNCTION ${schema}.next_product_version();
    ALTER TABLE ${tables.products} REPLICA IDENTITY FULL`
}

export type Product = {
  readonly id: number
  readonly name: string
  readonly price: string
  readonly version: number
}

/** What a cache key holds: a row, or the eviction marker "nothing older than `evicted`". */
type Cached = { readonly version: number; readonly row: Product } | { readonly evicted: number }

const TTL_SECONDS = 3600

// KEYS: the row's key, the table's epoch. ARGV: the epoch the read began in, the row's version, the value, the TTL.
const FILL = `
local epoch = redis.call('GET', KEYS[2]) or '0'
if epoch ~= ARGV[1] then return 0 end
local current = redis.call('GET', KEYS[1])
if current then
  local c = cjson.decode(current)
  local v = tonumber(ARGV[2])
  if c.version and c.version >= v then return 0 end
  if c.evicted and c.evicted > v then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[4])
return 1`

// KEYS: the row's key. ARGV: the lowest version a read may fill it with from now on, the TTL.
const EVICT = `
local v = tonumber(ARGV[1])
local current = redis.call('GET', KEYS[1])
if current then
  local c = cjson.decode(current)
  if c.version and c.version >= v then return 0 end
  if c.evicted and c.evicted >= v then return 0 end
end
redis.call('SET', KEYS[1], cjson.encode({ evicted = v }), 'EX', ARGV[2])
return 1`

/** Keys of one table share a hash tag, so a script touching a row and the table's epoch works on a cluster too. */
const keysOf = (prefix: string, table: string) => ({
  row: (id: number | string) => `${prefix}{${table}}:${id}`,
  epoch: `${prefix}{${table}}:epoch`,
  pattern: `${prefix}{${table}}:*`
})

const scanKeys = (redis: RedisConnection.RedisConnectionService, pattern: string) =>
  Effect.gen(function* () {
    const found: Array<string> = []
    let cursor = "0"
    do {
      const [next, keys] = yield* redis.run((c) => c.scan(cursor, "MATCH", pattern, "COUNT", 1000))
      found.push(...keys)
      cursor = next
    } while (cursor !== "0")
    return found
  })

/** Whether a row read from the database is older than the version whose eviction the cache recorded. */
const older = (row: Option.Option<Product>, floor: number): boolean => Option.isSome(row) && row.value.version < floor

/** The read-through cache of `products`. */
export const makeCache = (example: Harness.Example, prefix = `${example.keyPrefix}cache:`) =>
  Effect.gen(function* () {
    const redis = yield* RedisConnection.RedisConnection
    const keys = keysOf(prefix, "products")
    const load = (id: number) =>
      example.sql
        .query<Product>(
          `SELECT id, name, price::text AS price, version FROM ${example.tables.products} WHERE id = $1`,
          [id]
        )
        .pipe(Effect.map((rows) => Option.fromUndefinedOr(rows[0])))
    return {
      /** A product: from the cache, else from the database (and then cached, if nothing newer was evicted since). */
      get: (id: number) =>
        Effect.gen(function* (): Effect.fn.Return<
          Option.Option<Product & { readonly from: "cache" | "database" }>,
          RedisError | Harness.SqlError
        > {
          const [value, epoch] = yield* redis.run((c) => c.mget(keys.row(id), keys.epoch))
          let floor = 0
          if (value != null) {
            const cached = JSON.parse(value) as Cached
            if ("row" in cached) return Option.some({ ...cached.row, from: "cache" })
            floor = cached.evicted
          }
          // PostgreSQL writes a commit to the WAL (where the slot decodes it) a moment before other sessions can see
          // it: a read just after an eviction can still get the row the change replaced. The marker says which
          // version was evicted, so a row older than it is read again until the commit shows (a few ms at most).
          const row = yield* load(id).pipe(
            Effect.repeat({ until: (r) => !older(r, floor), schedule: Schedule.spaced("2 millis"), times: 500 })
          )
          if (older(row, floor)) {
            return yield* new Harness.SqlError({
              server: Harness.serverOf(example.databaseUrl),
              statement: `SELECT … FROM ${example.tables.products} WHERE id = ${id}`,
              reason: `the row is still older than version ${floor}, evicted after its commit, after 500 reads in 1 s`
            })
          }
          if (Option.isSome(row)) {
            const stored: Cached = { version: row.value.version, row: row.value }
            yield* redis.run((c) =>
              c.eval(
                FILL,
                2,
                keys.row(id),
                keys.epoch,
                epoch ?? "0",
                row.value.version,
                JSON.stringify(stored),
                TTL_SECONDS
              )
            )
          }
          return Option.map(row, (p) => ({ ...p, from: "database" as const }))
        }),
      /** The ids whose row is cached now, in order (eviction markers left out). */
      cachedIds: Effect.gen(function* () {
        const found = (yield* scanKeys(redis, keys.pattern)).filter((k) => k !== keys.epoch)
        if (found.length === 0) return []
        const values = yield* redis.run((c) => c.mget(...found))
        return values
          .flatMap((v) => (v === null ? [] : [JSON.parse(v) as Cached]))
          .flatMap((c) => ("row" in c ? [c.row.id] : []))
          .sort((a, b) => a - b)
      })
    }
  })

export type Cache = Effect.Success<ReturnType<typeof makeCache>>

/**
 * The invalidator: a consumer of the `cache-invalidator` group that evicts the row of every insert, update and
 * delete, and the whole table on a truncate. `observe` is called once an eviction is done, with the stale window
 * (commit → eviction, in ms).
 */
export const invalidate = (
  example: Harness.Example,
  options: {
    readonly prefix?: string
    readonly consumer?: string
    readonly observe?: (event: CdcEvent.CdcEvent, staleWindowMs: number) => void
  } = {}
) =>
  Effect.gen(function* () {
    const redis = yield* RedisConnection.RedisConnection
    const prefix = options.prefix ?? `${example.keyPrefix}cache:`
    return yield* RedisStreamConsumer.run({
      stream: example.stream("products"),
      group: "cache-invalidator",
      consumer: options.consumer ?? "invalidator-1",
      concurrency: 8,
      handler: (event) =>
        Effect.gen(function* () {
          const keys = keysOf(prefix, event.source.table)
          if (event.op === "r") return // the table as the pipeline started: nothing changed
          if (event.op === "t") {
            // A new epoch first: a read that began before it can no longer fill the cache.
            yield* redis.run((c) => c.incr(keys.epoch))
            const found = (yield* scanKeys(redis, keys.pattern)).filter((k) => k !== keys.epoch)
            if (found.length > 0) yield* redis.run((c) => c.del(...found))
          } else {
            const row = CdcEvent.row(event) as Product
            // A deleted row has no later version: nothing at or below its last one may come back.
            const floor = event.op === "d" ? row.version + 1 : row.version
            yield* redis.run((c) => c.eval(EVICT, 1, keys.row(row.id), floor, TTL_SECONDS))
          }
          options.observe?.(event, Harness.sinceCommit(event))
        })
    })
  })

export interface WorkloadOptions {
  readonly rows: number
  readonly updates: number
  readonly writers: number
  readonly readers: number
}

export interface WorkloadResult {
  readonly reads: number
  readonly hits: number
  /** Reads that returned a version older than one whose eviction had finished before the read began. */
  readonly stale: ReadonlyArray<string>
  /** Commit → eviction of each update, in ms. */
  readonly staleWindows: ReadonlyArray<number>
  /** Rows whose cached value, after everything was consumed, is not the database's. */
  readonly mismatched: ReadonlyArray<number>
}

/**
 * Many updates of the same few rows by `writers` sessions while `readers` read them through the cache. Each read
 * notes, before it starts, the newest version of its row whose eviction is done; returning anything older is a
 * stale read. The invalidator runs for the workload only.
 */
export const workload = (example: Harness.Example, cache: Cache, options: WorkloadOptions) =>
  Effect.gen(function* () {
    const products = example.tables.products
    const ids = yield* example.sql
      .query<{ id: number }>(
        `INSERT INTO ${products} (id, name, price) SELECT 1000 + i, 'busy product ' || i, 10 FROM generate_series(1, $1) AS i RETURNING id`,
        [options.rows]
      )
      .pipe(Effect.map((rows) => rows.map((r) => r.id)))
    const evictedUpTo = new Map<number, number>()
    const staleWindows: Array<number> = []
    const updatesSeen = Harness.makeCounter()
    const insertsSeen = Harness.makeCounter()
    const invalidator = yield* Effect.forkChild(
      invalidate(example, {
        consumer: "invalidator-workload",
        observe: (event, ms) => {
          const row = CdcEvent.row(event) as Product | null
          if (row === null || row.id < 1000) return
          evictedUpTo.set(row.id, Math.max(evictedUpTo.get(row.id) ?? 0, row.version))
          if (event.op === "u") {
            staleWindows.push(ms)
            updatesSeen.add()
          } else if (event.op === "c") insertsSeen.add()
        }
      })
    )
    yield* insertsSeen.atLeast(ids.length)
    const pick = () => ids[Math.floor(Math.random() * ids.length)]!
    let writing = true
    let reads = 0
    let hits = 0
    const stale: Array<string> = []
    const writer = (n: number) =>
      Effect.forEach(
        Array.from({ length: n }),
        () => example.sql.query(`UPDATE ${products} SET price = price + 0.01 WHERE id = $1`, [pick()]),
        { discard: true }
      )
    const reader = Effect.gen(function* () {
      while (writing) {
        const id = pick()
        const floor = evictedUpTo.get(id) ?? 0
        const got = yield* cache.get(id)
        reads++
        if (Option.isSome(got)) {
          if (got.value.from === "cache") hits++
          if (got.value.version < floor) {
            stale.push(`product ${id}: read version ${got.value.version} after version ${floor} was evicted`)
          }
        }
      }
    })
    const perWriter = Math.ceil(options.updates / options.writers)
    const readers = yield* Effect.forkChild(
      Effect.all(
        Array.from({ length: options.readers }, () => reader),
        { concurrency: "unbounded", discard: true }
      )
    )
    yield* Effect.all(
      Array.from({ length: options.writers }, () => writer(perWriter)),
      { concurrency: "unbounded", discard: true }
    )
    yield* updatesSeen.atLeast(perWriter * options.writers)
    writing = false
    yield* Fiber.join(readers)
    yield* Fiber.interrupt(invalidator)
    // Everything consumed: a read of each row now returns what the database holds.
    const mismatched: Array<number> = []
    for (const id of ids) {
      const [db] = yield* example.sql.query<{ version: number }>(`SELECT version FROM ${products} WHERE id = $1`, [id])
      const got = yield* cache.get(id)
      if (Option.getOrUndefined(got)?.version !== db?.version) mismatched.push(id)
    }
    return { reads, hits, stale, staleWindows, mismatched } satisfies WorkloadResult
  })

const app = (example: Harness.Example) =>
  Effect.gen(function* () {
    const products = example.tables.products
    const cache = yield* makeCache(example)
    const evicted = Harness.makeCounter()
    const windows: Array<string> = []
    const invalidator = yield* Effect.forkChild(
      invalidate(example, {
        observe: (event, ms) => {
          if (event.op === "c") return evicted.add()
          windows.push(`${event.op === "d" ? "delete" : "update"} of product ${CdcEvent.row(event)?.id}: ${ms} ms`)
          evicted.add()
        }
      })
    )
    yield* Console.log(`\nCache: products read through Redis keys ${example.keyPrefix}cache:{products}:<id>.`)
    yield* example.sql.query(
      `INSERT INTO ${products} (id, name, price) SELECT i, 'product ' || i, 10 FROM generate_series(1, 5) AS i`
    )
    yield* evicted.atLeast(5)
    for (const id of [1, 2, 3, 4, 5]) yield* cache.get(id)
    yield* Console.log(
      `Inserted products 1-5 at 10.00 and read each once: cached now ${(yield* cache.cachedIds).join(", ")}.`
    )
    yield* Console.log(`Reading product 2 again: ${JSON.stringify(Option.getOrNull(yield* cache.get(2)))}`)

    yield* example.sql.query(`UPDATE ${products} SET price = 12.50 WHERE id = 2`)
    yield* example.sql.query(`DELETE FROM ${products} WHERE id = 4`)
    yield* Console.log("UPDATE product 2 to 12.50, DELETE product 4 (committed in PostgreSQL).")
    yield* evicted.atLeast(7)
    yield* Console.log(`The invalidator evicted them (commit → eviction): ${windows.join("; ")}.`)
    yield* Console.log(`Cached now: ${(yield* cache.cachedIds).join(", ")}.`)
    yield* Console.log(`Product 2: ${JSON.stringify(Option.getOrNull(yield* cache.get(2)))}`)
    yield* Console.log(`Product 4: ${JSON.stringify(Option.getOrNull(yield* cache.get(4)))}`)
    yield* Fiber.interrupt(invalidator)

    const options = { rows: 20, updates: Number(process.env.UPDATES ?? 2000), writers: 4, readers: 4 }
    yield* Console.log(
      `\nWorkload: ${options.updates} updates of ${options.rows} rows by ${options.writers} sessions, ` +
        `${options.readers} readers reading them through the cache meanwhile...`
    )
    const result = yield* workload(example, cache, options)
    yield* Console.log(
      `${result.reads} reads (${Math.round((100 * result.hits) / Math.max(1, result.reads))}% from the cache); ` +
        `${result.stale.length} returned a row older than one already evicted; ` +
        `${result.mismatched.length} rows differ from the database at the end.`
    )
    yield* Console.log(`Stale window (commit → eviction): ${Harness.latencyText(result.staleWindows, "updates")}.`)
  })

if (isMain(import.meta)) Harness.main(setup, app)
