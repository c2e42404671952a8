/**
 * Use case: rate-limiting state, one of the uses of the contract in docs/DESIGN.md: several instances of an API
 * decide allow or deny for each request from the same per-key counters, held in memory and fed by the table's change
 * stream, so they make the same decision without asking the database on every request.
 *
 * The `limits` table is the truth: per API key a `quota` per window (set by the plans; an admin changes it now and
 * then), `used` in the current window and a `total` that never resets. An instance allows a request when its memory
 * says `used < quota`, and records it (`used = used + 1`, in the request's own statement); a job resets `used` at
 * each window (one transaction for all keys). Every instance follows the stream with a plain subscription of its own
 * (from the start of the stream: it rebuilds the table from the snapshot and the changes since), on its own Redis
 * connection, applying changes in order.
 *
 * Instances see a change at slightly different moments, so for a moment around each change that flips a decision
 * (a key reaching its quota, a reset, a new quota) one instance may allow what another denies. Under load the
 * example measures how often and for how long:
 * - disagreeing requests: at each request's arrival (the same logical point for all instances: the same moment, the
 *   same key), every instance's decision is read; those where they differ are counted;
 * - disagreement windows: per key, from the moment the instances' decisions first differ until they agree again;
 * - how far: the largest gap in `used` between two instances for one key, and the requests allowed past the quota
 *   (allowed on a count another instance had already seen reach it).
 *
 * `pnpm example rate-limiting` (DATABASE_URL and REDIS_URL, or servers started for the run; REQUESTS, RATE).
 *
 * Library or `redflow run`: the instances only read Redis; in production the pipeline would be `redflow run` beside
 * the database. The example runs it in its own process (examples/harness.ts) so one command shows it all.
 */
import { Console, Effect, Fiber, Option, Random, Schedule, Stream } from "effect"
import type * as Scope from "effect/Scope"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"
import * as StreamAdmin from "@redflow/redis/StreamAdmin"
import * as Harness from "./harness.ts"
import { isMain } from "./shared.ts"

/** The API keys of the run: a few hot ones, many quiet ones. */
export const KEYS = Array.from({ length: 24 }, (_, i) => `key-${String(i + 1).padStart(2, "0")}`)

/** Each key's quota per window at the start. */
export const QUOTA = 20

export const setup: Harness.Setup = {
  name: "rate-limiting",
  tables: {
    limits:
      "key text PRIMARY KEY, quota int NOT NULL, used int NOT NULL DEFAULT 0, total int NOT NULL DEFAULT 0, " +
      "window_no int NOT NULL DEFAULT 0"
  },
  key: "${key.key}",
  prepare: ({ tables }) =>
    `INSERT INTO ${tables.limits} (key, quota) VALUES ${KEYS.map((k) => `('${k}', ${QUOTA})`).join(", ")}`
}

/** A key's counters, as the table holds them. */
export interface Limit {
  readonly key: string
  readonly quota: number
  readonly used: number
  readonly total: number
  readonly window_no: number
}

/** The decision every instance makes from its memory: a key without a row has no access. */
export const allows = (limit: Limit | undefined): boolean => limit !== undefined && limit.used < limit.quota

/**
 * Watches the instances' decisions as they change: after each change applied anywhere, whether the instances still
 * agree on that key. Opens a disagreement window when they stop agreeing and closes it when they agree again.
 */
export interface Agreement {
  readonly register: (instance: Instance) => void
  /** Called by an instance right after it applied a change of `key`. */
  readonly changed: (key: string) => void
  /** Whether every instance decides the same for `key` now. */
  readonly agree: (key: string) => boolean
  /** The closed disagreement windows, in ms. */
  readonly windows: () => ReadonlyArray<number>
  /** Keys whose instances disagree right now. */
  readonly open: () => number
  /** The largest gap in `used` between two instances for one key seen so far (same window). */
  readonly widestGap: () => number
}

export const makeAgreement = (): Agreement => {
  const instances: Array<Instance> = []
  const opened = new Map<string, number>()
  const closed: Array<number> = []
  let widest = 0
  const agree = (key: string) => {
    const first = allows(instances[0]?.limits.get(key))
    return instances.every((i) => allows(i.limits.get(key)) === first)
  }
  return {
    register: (instance) => void instances.push(instance),
    agree,
    changed: (key) => {
      const now = performance.now()
      const limits = instances.map((i) => i.limits.get(key)).filter((l) => l !== undefined)
      const windowNo = Math.max(...limits.map((l) => l.window_no))
      const current = limits.filter((l) => l.window_no === windowNo).map((l) => l.used)
      if (current.length > 1) widest = Math.max(widest, Math.max(...current) - Math.min(...current))
      const start = opened.get(key)
      if (agree(key)) {
        if (start !== undefined) {
          closed.push(Math.round((now - start) * 10) / 10)
          opened.delete(key)
        }
      } else if (start === undefined) opened.set(key, now)
    },
    windows: () => closed,
    open: () => opened.size,
    widestGap: () => widest
  }
}

/** One API instance: the counters in memory, the decision, and the request's accounting in the table. */
export interface Instance {
  readonly name: string
  readonly limits: ReadonlyMap<string, Limit>
  /** The last stream entry applied. */
  readonly applied: () => string
  /** Decides from memory; an allowed request is recorded in the table. Returns the decision and the new count. */
  readonly request: (
    key: string
  ) => Effect.Effect<
    { readonly allowed: boolean; readonly used?: number | undefined; readonly quota?: number | undefined },
    Harness.SqlError
  >
}

/** Starts an instance: its PostgreSQL pool, its Redis connection and its subscription, for the life of the scope. */
export const instance = (
  example: Harness.Example,
  name: string,
  agreement: Agreement
): Effect.Effect<Instance, never, Scope.Scope> =>
  Effect.gen(function* () {
    const sql = yield* Harness.makeSql(example.databaseUrl, { max: 4, applicationName: `rate-limiting ${name}` })
    const redis = yield* RedisConnection.make({ url: example.redisUrl, clientName: `rate-limiting-${name}` }).pipe(
      Effect.orDie
    )
    const limits = new Map<string, Limit>()
    let applied = "0-0"
    const apply = (entry: RedisStreamConsumer.SubscriptionEntry) => {
      const event: CdcEvent = entry.event
      const keys: Array<string> = []
      if (event.op === "t") {
        keys.push(...limits.keys())
        limits.clear()
      } else if (event.op === "d") {
        const key = String(event.before?.key)
        limits.delete(key)
        keys.push(key)
      } else {
        const row = event.after as unknown as Limit
        limits.set(row.key, {
          key: row.key,
          quota: row.quota,
          used: row.used,
          total: row.total,
          window_no: row.window_no
        })
        keys.push(row.key)
      }
      applied = entry.id
      for (const key of keys) agreement.changed(key)
    }
    yield* Effect.forkScoped(
      RedisStreamConsumer.subscribe({ stream: example.stream("limits"), from: "0-0", count: 500 }).pipe(
        Stream.runForEachArray((entries) => Effect.sync(() => entries.forEach(apply))),
        Effect.provideService(RedisConnection.RedisConnection, redis),
        Effect.orDie
      )
    )
    const self: Instance = {
      name,
      limits,
      applied: () => applied,
      request: (key) =>
        allows(limits.get(key))
          ? sql
              .query<{ used: number; quota: number }>(
                `UPDATE ${example.tables.limits} SET used = used + 1, total = total + 1 WHERE key = $1 ` +
                  "RETURNING used, quota",
                [key]
              )
              .pipe(Effect.map((rows) => ({ allowed: true, used: rows[0]?.used, quota: rows[0]?.quota })))
          : Effect.succeed({ allowed: false })
    }
    agreement.register(self)
    return self
  })

/** The table as every instance should hold it once the stream is consumed. */
export const tableState = (example: Harness.Example) =>
  example.sql
    .query<Limit>(`SELECT key, quota, used, total, window_no FROM ${example.tables.limits} ORDER BY key`)
    .pipe(Effect.map((rows) => new Map(rows.map((r) => [r.key, r]))))

/**
 * Waits until the pipeline has written the `committed` changes of the table (the snapshot's rows included) and every
 * instance has applied the stream up to its last entry.
 */
export const caughtUp = (example: Harness.Example, instances: ReadonlyArray<Instance>, committed: number) =>
  Effect.gen(function* () {
    yield* example.written.atLeast(committed)
    const last = Option.getOrElse(yield* StreamAdmin.lastId(example.stream("limits")), () => "0-0")
    yield* Effect.forEach(
      instances,
      (i) =>
        Effect.sync(() => i.applied()).pipe(
          Effect.repeat({ until: (id) => id === last, schedule: Schedule.spaced("10 millis") }),
          Effect.asVoid
        ),
      { discard: true }
    )
    return last
  })

export interface LoadOptions {
  /** Requests in all. */
  readonly requests: number
  /** Requests per second over all workers. */
  readonly rate: number
  /** Window length: `used` is reset this often. */
  readonly windowMs: number
  /** Concurrent requests. Default 16. */
  readonly concurrency?: number
}

export interface LoadReport {
  readonly requests: number
  readonly allowed: number
  readonly denied: number
  /** Requests at whose arrival the instances' decisions for the key differed. */
  readonly disagreeing: number
  /** Allowed requests that took `used` past the quota: allowed on a count the table had already seen reach it. */
  readonly overAdmitted: number
  readonly resets: number
  readonly quotaChanges: number
  /** Changes committed to the table: one per allowed request, one per key at each reset, one per quota change. */
  readonly changes: number
  readonly seconds: number
}

/**
 * Requests for skewed keys (a few hot ones reach their quota in every window) spread over random instances, paced
 * at `rate`; a reset of every key each `windowMs` and a quota change now and then, until `requests` are served.
 */
export const load = (example: Harness.Example, instances: ReadonlyArray<Instance>, options: LoadOptions) =>
  Effect.gen(function* () {
    const concurrency = options.concurrency ?? 16
    const agreement = { disagreeing: 0 }
    let allowed = 0
    let denied = 0
    let overAdmitted = 0
    let resets = 0
    let quotaChanges = 0
    let issued = 0
    let done = false
    const started = performance.now()
    const pause = (concurrency * 1000) / options.rate
    const worker = Effect.gen(function* () {
      while (issued < options.requests) {
        issued++
        // A skewed choice: key-01 is asked for far more often than key-24.
        const r = yield* Random.next
        const key = KEYS[Math.floor(r * r * r * KEYS.length)]!
        const at = instances[yield* Random.nextIntBetween(0, instances.length, { halfOpen: true })]!
        const decisions = instances.map((i) => allows(i.limits.get(key)))
        if (decisions.some((d) => d !== decisions[0])) agreement.disagreeing++
        const result = yield* at.request(key)
        if (result.allowed) {
          allowed++
          if (result.used !== undefined && result.quota !== undefined && result.used > result.quota) overAdmitted++
        } else denied++
        yield* Effect.sleep(`${pause} millis`)
      }
    })
    const resetter = Effect.gen(function* () {
      while (!done) {
        yield* Effect.sleep(`${options.windowMs} millis`)
        if (done) return
        yield* example.sql.query(`UPDATE ${example.tables.limits} SET used = 0, window_no = window_no + 1`)
        resets++
        // Now and then a plan changes: a key's quota goes up or down.
        if (resets % 3 === 0) {
          const key = KEYS[yield* Random.nextIntBetween(0, 6, { halfOpen: true })]!
          yield* example.sql.query(`UPDATE ${example.tables.limits} SET quota = $2 WHERE key = $1`, [
            key,
            yield* Random.nextIntBetween(5, 40)
          ])
          quotaChanges++
        }
      }
    })
    const resetting = yield* Effect.forkChild(resetter)
    yield* Effect.all(
      Array.from({ length: concurrency }, () => worker),
      { concurrency: "unbounded", discard: true }
    )
    done = true
    yield* Fiber.join(resetting)
    return {
      requests: allowed + denied,
      allowed,
      denied,
      disagreeing: agreement.disagreeing,
      overAdmitted,
      resets,
      quotaChanges,
      changes: allowed + resets * KEYS.length + quotaChanges,
      seconds: (performance.now() - started) / 1000
    } satisfies LoadReport
  })

/** Whether an instance's memory is the table: every key with the same counters. */
export const sameAsTable = (instance: Instance, table: ReadonlyMap<string, Limit>) =>
  instance.limits.size === table.size &&
  [...table].every(([key, row]) => JSON.stringify(instance.limits.get(key)) === JSON.stringify(row))

const app = (example: Harness.Example) =>
  Effect.gen(function* () {
    const agreement = makeAgreement()
    const names = ["a", "b", "c"]
    const instances: Array<Instance> = []
    for (const name of names) instances.push(yield* instance(example, name, agreement))
    yield* caughtUp(example, instances, KEYS.length)
    yield* Console.log(
      `\nThree API instances (${names.join(", ")}), each with the ${KEYS.length} keys' counters in memory ` +
        `(quota ${QUOTA} per window), its own Redis connection and subscription to ${example.stream("limits")}.`
    )
    const options: LoadOptions = {
      requests: Number(process.env.REQUESTS ?? 10_000),
      rate: Number(process.env.RATE ?? 4_000),
      windowMs: 250
    }
    yield* Console.log(
      `Load: ${options.requests} requests (paced at up to ${options.rate}/s) on random instances, hot keys over their quota in ` +
        `every window, the counters reset every ${options.windowMs} ms, a quota changed every third window...`
    )
    const report = yield* load(example, instances, options)
    const last = yield* caughtUp(example, instances, KEYS.length + report.changes)
    const table = yield* tableState(example)
    const agreeing = instances.filter((i) => sameAsTable(i, table)).length
    const sameDecisions = KEYS.every(
      (key) => agreement.agree(key) && instances.every((i) => allows(i.limits.get(key)) === allows(table.get(key)))
    )
    const pct = (n: number) => `${((100 * n) / report.requests).toFixed(2)}%`
    yield* Console.log(
      `${report.requests} requests in ${report.seconds.toFixed(1)} s ` +
        `(${Math.round(report.requests / report.seconds)}/s): ${report.allowed} allowed, ${report.denied} ` +
        `denied; ${report.resets} resets, ${report.quotaChanges} quota changes.`
    )
    yield* Console.log(
      `Instances disagreed at ${report.disagreeing} requests (${pct(report.disagreeing)}); ` +
        `${report.overAdmitted} requests (${pct(report.overAdmitted)}) were allowed past the quota.`
    )
    yield* Console.log(
      `Disagreement windows (decisions first differ → agree again): ` +
        `${Harness.latencyText(agreement.windows(), "windows")}; widest gap in used: ${agreement.widestGap()}.`
    )
    yield* Console.log(
      `Stream consumed up to ${last}: ${agreeing} of 3 instances hold exactly the table; ` +
        `decisions ${sameDecisions ? "the same on every instance and in the database" : "DIFFER"} for every key.`
    )
  })

if (isMain(import.meta)) Harness.main(setup, (example) => Effect.scoped(app(example)))
