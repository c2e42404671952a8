/**
 * The harness of the examples fed by a real PostgreSQL: the servers, the example's tables, the pipeline
 * (PostgresSource → RedisStreamSink, exactly-once) running in the background of the same process, and what the
 * application needs (a Redis connection, a pool of PostgreSQL connections to write rows).
 *
 * ## How an example uses it
 *
 * ```ts
 * import * as Harness from "./harness.ts"
 * import { isMain } from "./shared.ts"
 *
 * // The tables it captures (column definitions; each needs a primary key), and SQL run before the pipeline starts.
 * export const setup: Harness.Setup = {
 *   name: "cache-invalidation",
 *   tables: { products: "id int PRIMARY KEY, name text NOT NULL, price numeric(10,2) NOT NULL" },
 *   prepare: ({ tables }) => `INSERT INTO ${tables.products} VALUES (1, 'lamp', 10)` // the snapshot reads it as `r`
 * }
 *
 * // The application: `example.sql` writes rows, `example.stream("products")` is the table's Redis stream,
 * // `RedisConnection` is provided (the application's own connection, not the pipeline's).
 * export const app = (example: Harness.Example) =>
 *   Effect.gen(function* () {
 *     yield* example.sql.query(`UPDATE ${example.tables.products} SET price = 12 WHERE id = 1`)
 *     yield* RedisStreamConsumer.run({ stream: example.stream("products"), group: "g", consumer: "c", handler })
 *   })
 *
 * // `pnpm example cache-invalidation`: DATABASE_URL and REDIS_URL when set, else servers started for the run.
 * if (isMain(import.meta)) Harness.main(setup, app)
 *
 * // Its test, with one PostgreSQL and one Redis for the whole file (PostgresTestServer, RedisTestServer layers):
 * const example = yield* Harness.make(setup, { databaseUrl: postgres.url, redisUrl: redis.url })
 * yield* app(example).pipe(Effect.provide(RedisConnection.layer({ url: redis.url })))
 * ```
 *
 * Each run works in objects named after it (schema, slot and publication `redflow_<name>_<run>`, streams
 * `cdc.<schema>.<table>`, application keys under `example.keyPrefix`), so runs and tests sharing servers never
 * meet. On a server it did not start (DATABASE_URL, REDIS_URL, or a test's) it drops them at the end: a slot left
 * behind would keep WAL on that server for good. A SIGKILLed run cannot; `Harness.make` prints the statements.
 *
 * Why the library and not `redflow run`: an example is one command showing one use from commit to application, so
 * the pipeline runs in the same process as the application, started and stopped with it. In production the same
 * pipeline usually runs as its own service (`redflow run`, one per database), and the applications only read Redis;
 * each example says which it would be.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Config, Console, Duration, Effect, Fiber, Option, References, Schedule, Schema, Stream } from "effect"
import type * as Scope from "effect/Scope"
import pg from "pg"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as Source from "@redflow/core/Source"
import type { PostgresError } from "@redflow/postgres/PostgresError"
import * as PostgresSource from "@redflow/postgres/PostgresSource"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import type { RedisError } from "@redflow/redis/RedisError"
import type { ConfigError } from "@redflow/core/ConfigError"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import * as PostgresTestServer from "@redflow/testing/PostgresTestServer"
import { redisServer, report } from "./shared.ts"

// ---------------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------------

/** The example cannot start as configured: names the setting, what is wrong and the fix. */
export class ExampleSetupError extends Schema.TaggedError<ExampleSetupError>()("ExampleSetupError", {
  field: Schema.String,
  reason: Schema.String,
  fix: Schema.String
}) {
  override get message(): string {
    return `${this.field}: ${this.reason}. Fix: ${this.fix}`
  }
}

/** A statement of the example's own failed on PostgreSQL. */
export class SqlError extends Schema.TaggedError<SqlError>()("SqlError", {
  server: Schema.String,
  statement: Schema.String,
  reason: Schema.String,
  /** The SQLSTATE, when the server sent one. */
  code: Schema.optionalKey(Schema.String)
}) {
  override get message(): string {
    return `PostgreSQL at ${this.server} failed ${JSON.stringify(this.statement)}: ${this.reason}`
  }
}

/** The background pipeline ended: it runs for the life of the example, so ending is always a failure. */
export class PipelineStopped extends Schema.TaggedError<PipelineStopped>()("PipelineStopped", {
  slot: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `the pipeline (slot ${this.slot}) stopped: ${this.reason}`
  }
}

// ---------------------------------------------------------------------------------------------------------------
// SQL for the application
// ---------------------------------------------------------------------------------------------------------------

/** `host:port/db` of a PostgreSQL URL, without user or password. */
export const serverOf = (url: string): string => {
  try {
    const u = new URL(url)
    return `${u.hostname}:${u.port || "5432"}${u.pathname}`
  } catch {
    return "(unparsable URL)"
  }
}

/** A pool of connections for the application's own statements. */
export interface Sql {
  readonly query: <Row extends object = Record<string, unknown>>(
    text: string,
    params?: ReadonlyArray<unknown>
  ) => Effect.Effect<Array<Row>, SqlError>
  /** The `pg` pool itself, for what `query` does not cover. */
  readonly pool: pg.Pool
}

const statementOf = (text: string) => {
  const line = text.replace(/\s+/g, " ").trim()
  return line.length > 80 ? `${line.slice(0, 77)}...` : line
}

/** A `pg` pool closed with the scope. */
export const makeSql = (
  url: string,
  options: { readonly max?: number; readonly applicationName?: string } = {}
): Effect.Effect<Sql, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const pool = new pg.Pool({
        connectionString: url,
        max: options.max ?? 4,
        application_name: options.applicationName ?? "redflow example"
      })
      // An idle connection that breaks (the server stopping at the end of the run) is replaced on the next query.
      pool.on("error", () => {})
      return pool
    }),
    (pool) => Effect.promise(() => pool.end().catch(() => undefined))
  ).pipe(
    Effect.map((pool) => {
      const server = serverOf(url)
      return {
        pool,
        query: <Row extends object = Record<string, unknown>>(text: string, params?: ReadonlyArray<unknown>) =>
          Effect.tryPromise({
            try: () => pool.query(text, params as Array<unknown> | undefined).then((r) => r.rows as Array<Row>),
            catch: (e) => {
              const error = e as { message?: string; code?: string }
              return new SqlError({
                server,
                statement: statementOf(text),
                reason: error.message ?? String(e),
                ...(typeof error.code === "string" ? { code: error.code } : {})
              })
            }
          })
      } satisfies Sql
    })
  )

// ---------------------------------------------------------------------------------------------------------------
// The example
// ---------------------------------------------------------------------------------------------------------------

export interface Setup {
  /** The example's name, e.g. `cache-invalidation`: its schema, slot and publication are named after it and the run. */
  readonly name: string
  /** The captured tables and their column definitions; each needs a primary key (updates and deletes carry it). */
  readonly tables: Readonly<Record<string, string>>
  /**
   * SQL run once the tables exist, before the pipeline starts (triggers, replica identity, seed rows: the initial
   * snapshot reads them as `r` events). Given each table's qualified, quoted name and the quoted schema.
   */
  readonly prepare?: (names: { readonly tables: Readonly<Record<string, string>>; readonly schema: string }) => string
  /** The entry key template. Default `${key.id}`. */
  readonly key?: string
  /** The lowest level of the library's logs `main` prints. Default `Warn`. */
  readonly logLevel?: "Warn" | "Error"
}

export interface Servers {
  readonly databaseUrl: string
  readonly redisUrl: string
  /**
   * Whether to drop the run's slot, publication and schema from PostgreSQL, and its keys from Redis, at the end.
   * Default true: false only for a server started for this run, which goes whole.
   */
  readonly cleanUp?: { readonly database: boolean; readonly redis: boolean }
  /** Where the harness says what it does. Default: nowhere (tests). */
  readonly print?: (line: string) => Effect.Effect<void>
}

/** What the application gets. */
export interface Example {
  readonly name: string
  /** `redflow_<name>_<run>`: the run's schema, also its slot, publication and pipeline (checkpoint key). */
  readonly schema: string
  /** Each table's qualified, quoted name for SQL: `"redflow_…"."products"`. */
  readonly tables: Readonly<Record<string, string>>
  /** The Redis stream of a table's changes: `cdc.<schema>.<table>`. */
  readonly stream: (table: string) => string
  /** Where the sink puts events it cannot route or encode. */
  readonly deadLetterStream: string
  /** A prefix for the application's own Redis keys, unique to the run: `<schema>:`. */
  readonly keyPrefix: string
  /** The application's connections to PostgreSQL. */
  readonly sql: Sql
  readonly databaseUrl: string
  readonly redisUrl: string
  /** Changes the pipeline has written to Redis so far (`written.atLeast(n)` waits for them). */
  readonly written: Progress
  /** Runs `effect`, failing with the pipeline's error if the pipeline fails first. */
  readonly supervise: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | PipelineError, R>
}

/** Why the background pipeline stopped. */
export type PipelineError = PostgresError | RedisStreamSink.SinkError | RedisError | ConfigError | PipelineStopped

const ident = (name: string) => `"${name.replace(/"/g, '""')}"`

const runId = () => `${Date.now().toString(36)}${Math.floor(Math.random() * 36 ** 3).toString(36)}`

/** How long a slot just released by the pipeline may still show as in use when it is dropped. */
const SLOT_RELEASE = "15 seconds"

/**
 * Creates the example's schema and tables, starts the pipeline in the background of the scope and waits until its
 * slot streams (every commit from then on reaches Redis), and returns what the application needs. Closing the scope
 * stops the pipeline and, unless `cleanUp` says otherwise, drops what the run created.
 */
export const make = (
  setup: Setup,
  servers: Servers
): Effect.Effect<Example, SqlError | PipelineError | ExampleSetupError, Scope.Scope> =>
  Effect.gen(function* () {
    const print = servers.print ?? (() => Effect.void)
    const cleanUp = servers.cleanUp ?? { database: true, redis: true }
    const schema = `redflow_${setup.name.replace(/[^a-z0-9]+/g, "_")}_${runId()}`
    if (schema.length > 63) {
      return yield* new ExampleSetupError({
        field: "name",
        reason: `${JSON.stringify(setup.name)} makes the slot name ${schema}, longer than PostgreSQL's 63`,
        fix: "give the example a shorter name"
      })
    }
    const tables = Object.fromEntries(Object.keys(setup.tables).map((t) => [t, `${ident(schema)}.${ident(t)}`]))
    const stream = (table: string) => `cdc.${schema}.${table}`
    const deadLetterStream = `cdc.${schema}.dead-letter`
    const keyPrefix = `${schema}:`
    const server = serverOf(servers.databaseUrl)

    const sql = yield* makeSql(servers.databaseUrl, { applicationName: `redflow example ${setup.name}` })
    if (cleanUp.database) yield* Effect.addFinalizer(() => dropDatabaseObjects(sql, schema, server, print))
    if (cleanUp.redis) yield* Effect.addFinalizer(() => dropRedisKeys(servers.redisUrl, schema, keyPrefix))
    yield* sql.query(
      [
        `CREATE SCHEMA ${ident(schema)}`,
        ...Object.entries(setup.tables).map(([t, columns]) => `CREATE TABLE ${tables[t]} (${columns})`),
        ...(setup.prepare === undefined ? [] : [setup.prepare({ tables, schema: ident(schema) })])
      ].join(";\n")
    )
    yield* print(`Tables: ${Object.keys(tables).join(", ")} in schema ${schema}, created for this run on ${server}.`)

    const written = makeCounter()
    let deadLettered = 0
    const pipeline = Effect.gen(function* () {
      const redis = yield* RedisConnection.make({
        url: servers.redisUrl,
        clientName: `redflow-example-${setup.name}-pipeline`
      })
      const source = yield* PostgresSource.make({
        url: servers.databaseUrl,
        tables: Object.keys(setup.tables).map((t) => `${schema}.${t}`),
        name: setup.name,
        slot: schema,
        publication: schema
      })
      const from = yield* (yield* CheckpointStore.CheckpointStore).load(schema)
      yield* source.stream(from).pipe(
        RedisStreamSink.deliver({
          stream: "cdc.${source.schema}.${source.table}",
          key: setup.key ?? "${key.id}",
          pipeline: schema,
          guarantee: "exactly-once",
          deadLetterStream
        }),
        Stream.runForEach((batch) =>
          Effect.gen(function* () {
            written.add(batch.events - batch.deadLettered)
            if (batch.deadLettered > 0) {
              deadLettered += batch.deadLettered
              yield* Effect.logWarning(`${batch.deadLettered} events went to ${deadLetterStream}`)
            }
          })
        ),
        // Each checkpoint commit tells the source it may release the WAL up to there.
        Source.acknowledgeCommits(source, schema),
        Effect.provideService(RedisConnection.RedisConnection, redis)
      )
      return yield* new PipelineStopped({ slot: schema, reason: "the source's stream ended" })
    }).pipe(
      Effect.scoped,
      // The run's checkpoint lives as long as the run: the slot is the run's own and goes with it.
      Effect.provide(CheckpointStore.layerMemory)
    )
    const fiber = yield* Effect.forkScoped(pipeline)
    const failed = Fiber.join(fiber).pipe(Effect.andThen(Effect.never))
    const supervise = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.raceFirst(effect, failed)

    // Streaming once the slot is active: a commit from then on reaches Redis, one before it is in the snapshot.
    yield* supervise(
      sql
        .query<{ active: boolean }>("SELECT active FROM pg_replication_slots WHERE slot_name = $1", [schema])
        .pipe(Effect.repeat({ until: (rows) => rows[0]?.active === true, schedule: Schedule.spaced("50 millis") }))
    )
    yield* print(
      `Pipeline: PostgresSource (slot and publication ${schema}) → RedisStreamSink (exactly-once) → ` +
        `${Object.keys(tables).map(stream).join(", ")}, running in this process.`
    )
    if (cleanUp.database) {
      yield* print(
        `  (If this run is killed, drop what it made: SELECT pg_drop_replication_slot('${schema}'); ` +
          `DROP PUBLICATION ${schema}; DROP SCHEMA ${schema} CASCADE.)`
      )
    }
    yield* Effect.addFinalizer(() =>
      print(
        `Stopping: the pipeline wrote ${written.get()} changes to Redis` +
          (deadLettered > 0 ? ` (${deadLettered} to ${deadLetterStream})` : "") +
          "."
      )
    )
    return {
      name: setup.name,
      schema,
      tables,
      stream,
      deadLetterStream,
      keyPrefix,
      sql,
      databaseUrl: servers.databaseUrl,
      redisUrl: servers.redisUrl,
      written: { get: written.get, atLeast: written.atLeast },
      supervise
    } satisfies Example
  })

/** Drops the run's slot, publication and schema; what cannot be dropped is said with the statement that drops it. */
const dropDatabaseObjects = (sql: Sql, schema: string, server: string, print: (line: string) => Effect.Effect<void>) =>
  Effect.gen(function* () {
    const steps = [
      {
        what: `slot ${schema}`,
        run: sql
          .query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", [schema])
          .pipe(
            // 55006: still active, the stream's connection not yet closed on the server's side.
            Effect.retry({
              while: (e) => e.code === "55006",
              schedule: Schedule.max([Schedule.spaced("100 millis"), Schedule.during(SLOT_RELEASE)])
            })
          ),
        manual: `SELECT pg_drop_replication_slot('${schema}')`
      },
      {
        what: `publication ${schema}`,
        run: sql.query(`DROP PUBLICATION IF EXISTS ${ident(schema)}`),
        manual: `DROP PUBLICATION ${schema}`
      },
      {
        what: `schema ${schema}`,
        run: sql.query(`DROP SCHEMA IF EXISTS ${ident(schema)} CASCADE`),
        manual: `DROP SCHEMA ${schema} CASCADE`
      }
    ]
    const failed: Array<string> = []
    for (const step of steps) {
      yield* step.run.pipe(
        Effect.catch((e) =>
          Effect.sync(() => {
            failed.push(step.what)
            process.stderr.write(`warning: could not drop ${step.what} on ${server}: ${e.reason}; run ${step.manual}\n`)
          })
        )
      )
    }
    if (failed.length === 0) yield* print(`Dropped slot, publication and schema ${schema} from ${server}.`)
  })

/** Deletes the run's streams, their high-water marks and the application's keys (SCAN, not KEYS: a shared server). */
const dropRedisKeys = (url: string, schema: string, keyPrefix: string) =>
  Effect.gen(function* () {
    const redis = yield* RedisConnection.make({ url, clientName: "redflow-example-clean-up" })
    for (const pattern of [`cdc.${schema}.*`, `{cdc.${schema}.*`, `${keyPrefix}*`]) {
      let cursor = "0"
      do {
        const [next, keys] = yield* redis.run((c) => c.scan(cursor, "MATCH", pattern, "COUNT", 500))
        if (keys.length > 0) yield* redis.run((c) => c.del(...keys))
        cursor = next
      } while (cursor !== "0")
    }
  }).pipe(
    Effect.scoped,
    Effect.catch((e) =>
      Effect.sync(() => process.stderr.write(`warning: could not delete the run's Redis keys: ${e.message}\n`))
    )
  )

// ---------------------------------------------------------------------------------------------------------------
// Running an example as a program
// ---------------------------------------------------------------------------------------------------------------

/** The PostgreSQL an example runs against: `DATABASE_URL`, else a server started for the run. */
const database = Effect.gen(function* () {
  const env = yield* Config.option(Config.String("DATABASE_URL")).pipe(
    Effect.map(Option.filter((url) => url.trim() !== "")),
    Effect.orElseSucceed(() => Option.none<string>())
  )
  if (Option.isSome(env)) {
    const url = env.value
    let protocol: string | undefined
    try {
      protocol = new URL(url).protocol
    } catch {
      protocol = undefined
    }
    if (protocol !== "postgres:" && protocol !== "postgresql:") {
      return yield* new ExampleSetupError({
        field: "DATABASE_URL",
        reason: "not a postgres:// URL",
        fix: "set DATABASE_URL=postgres://user@host:5432/db (a server with wal_level=logical), or unset it and the example starts its own PostgreSQL"
      })
    }
    return { url, owned: false, label: `${serverOf(url)} (DATABASE_URL)` }
  }
  const started = yield* PostgresTestServer.make().pipe(
    Effect.mapError(
      (e) =>
        new ExampleSetupError({
          field: "DATABASE_URL",
          reason:
            e._tag === "PostgresNotInstalled"
              ? `not set, and no PostgreSQL server binaries to start one (${e.missing.join("; ")})`
              : `not set, and the PostgreSQL started for the run failed: ${e.message.split("\n")[0]}`,
          fix: "apt-get install postgresql (PG_BIN_DIR points at another directory), or set DATABASE_URL to a server with wal_level=logical"
        })
    )
  )
  return {
    url: started.url,
    owned: true,
    label: `${serverOf(started.url)} (a PostgreSQL started for this run, pid ${started.pid()}, wal_level=logical; it stops at the end)`
  }
})

/**
 * Runs an example as a program (`pnpm example <name>`): Redis from `REDIS_URL` or a `redis-server` started for the
 * run, PostgreSQL from `DATABASE_URL` or a server started for the run, the tables and the pipeline of `setup`, then
 * `app` with a `RedisConnection`. Ctrl-C interrupts it and everything stops in order; a failure prints one line on
 * stderr and exits with code 1.
 */
export const main = <A, E>(
  setup: Setup,
  app: (example: Example) => Effect.Effect<A, E, RedisConnection.RedisConnection | Scope.Scope>
): void =>
  NodeRuntime.runMain(
    Effect.scoped(
      Effect.gen(function* () {
        // Redis first: a malformed REDIS_URL is reported before a PostgreSQL is started for nothing.
        const redis = yield* redisServer
        yield* Console.log(`Redis: ${redis.label}`)
        const db = yield* database
        const version = yield* Effect.scoped(
          Effect.flatMap(makeSql(db.url, { max: 1 }), (sql) =>
            sql.query<{ v: string }>("SELECT current_setting('server_version') AS v")
          )
        ).pipe(Effect.map((rows) => (rows[0]?.v ?? "?").split(" ")[0]))
        yield* Console.log(`PostgreSQL ${version}: ${db.label}`)
        const example = yield* make(setup, {
          databaseUrl: db.url,
          redisUrl: redis.url,
          cleanUp: { database: !db.owned, redis: redis.label.endsWith("(REDIS_URL)") },
          print: (line) => Console.log(line)
        })
        return yield* example
          .supervise(app(example))
          .pipe(Effect.provide(RedisConnection.layer({ url: redis.url, clientName: `redflow-example-${setup.name}` })))
      })
    ).pipe(
      // The library's own info logs (slot created, snapshot read) would drown the example's story; warnings stay.
      Effect.provideService(References.MinimumLogLevel, setup.logLevel ?? "Warn"),
      Effect.tapCause(report)
    ),
    { disableErrorReporting: true }
  )

// ---------------------------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------------------------

/** The `p`th percentile (nearest rank) of `values`; NaN when there are none. */
export const percentile = (values: ReadonlyArray<number>, p: number): number => {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}

/** `p50 3 ms, p99 12 ms, max 15 ms over 400 changes` */
export const latencyText = (millis: ReadonlyArray<number>, what = "changes"): string =>
  `p50 ${percentile(millis, 50)} ms, p99 ${percentile(millis, 99)} ms, max ${percentile(millis, 100)} ms over ` +
  `${millis.length} ${what}`

/** Milliseconds from a change's commit (PostgreSQL's commit timestamp, `source.ts_ms`) to now. */
export const sinceCommit = (event: { readonly source: { readonly ts_ms: number } }): number =>
  Math.max(0, Date.now() - event.source.ts_ms)

/** A pause, for pacing an example's workload so that a person can follow it. */
export const pause = (millis: number) => Effect.sleep(Duration.millis(millis))

/** A count the application raises (events consumed, changes seen) and others wait on. */
export interface Counter {
  readonly add: (n?: number) => void
  readonly get: () => number
  /** Waits until the count reaches `target`. */
  readonly atLeast: (target: number) => Effect.Effect<void>
}

/** A count to read and wait on. */
export type Progress = Pick<Counter, "get" | "atLeast">

export const makeCounter = (): Counter => {
  let count = 0
  return {
    add: (n = 1) => {
      count += n
    },
    get: () => count,
    atLeast: (target) =>
      Effect.sync(() => count).pipe(
        Effect.repeat({ until: (n) => n >= target, schedule: Schedule.spaced("10 millis") }),
        Effect.asVoid
      )
  }
}
