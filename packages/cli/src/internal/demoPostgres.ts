/**
 * The PostgreSQL side of `redflow demo`: which database the demo captures (`DATABASE_URL`, else a server started for
 * the demo, else none, and the synthetic source runs instead), the demo's own schema with seeded rows (the initial
 * snapshot's `r` events), and a live writer of inserts, updates and deletes whose counts are the database's own row
 * counts, so the summary can hold what PostgreSQL committed against what Redis received.
 */
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { PostgresConfigError, PostgresPermissionError, PostgresUnavailable } from "@redflow/postgres/PostgresError"
import * as PostgresSession from "@redflow/postgres/PostgresSession"
import type { Mode as CommandMode } from "./commands/demo.ts"
import * as DemoServers from "./demoServers.ts"
import { UsageError } from "./errors.ts"
import * as Output from "./output.ts"
import { redactUrl } from "./pipelineConfig.ts"

/** `--source`: `auto` runs PostgreSQL when it can and says why when it cannot. */
export type Mode = CommandMode

/** The PostgreSQL the demo captures. */
export interface Database {
  /** The connection URL (a password in it stays here: print {@link Database.printable}). */
  readonly url: string
  readonly printable: string
  /** `started`: a server of the demo's own, stopped at its end; `env`: `DATABASE_URL`. */
  readonly origin: "started" | "env"
  /** `host:port/db` */
  readonly server: string
  /** `server_version`, e.g. `15.8`. */
  readonly version: string
  readonly port: number
  /** The postmaster of a server the demo started. */
  readonly pid: number | undefined
}

export type Choice =
  | { readonly _tag: "postgres"; readonly database: Database }
  | {
      readonly _tag: "synthetic"
      /** `flag`: `--source synthetic`; `no-binaries`: `auto` found no PostgreSQL server binaries. */
      readonly reason: "flag" | "no-binaries" | "start-failed"
      /** Where the binaries were looked for, and what each place lacks. */
      readonly missing: ReadonlyArray<string>
    }

/** A step of the demo's own SQL (schema, seed, live writes, clean-up) failed for another reason than a permission. */
export class DemoSqlError extends Schema.TaggedError<DemoSqlError>()("DemoSqlError", {
  step: Schema.String,
  server: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `the demo's ${this.step} failed on PostgreSQL at ${this.server}: ${this.reason}`
  }
}

const envDatabaseUrl = Config.option(Config.String("DATABASE_URL")).pipe(
  Effect.map(Option.filter((url) => url !== "")),
  Effect.orElseSucceed(() => Option.none<string>())
)

const userOf = PostgresSession.userOf

/** A session on the demo's database; a connection that fails says why as the source would (exit 1 or 3). */
const connect = (url: string) => PostgresSession.make({ url, applicationName: "redflow demo writer" })

/** A failed statement of the demo's own: a permission names the grant (exit 3), anything else the step. */
const sqlFailure =
  (url: string, step: string, fix: string) =>
  (error: PostgresSession.ReplicationError): PostgresPermissionError | PostgresUnavailable | DemoSqlError => {
    const server = PostgresSession.serverOf(url)
    if (error.code === "42501") {
      return new PostgresPermissionError({ server, user: userOf(url), reason: error.message, fix, cause: error })
    }
    // No SQLSTATE: the connection itself went (the server stopped, the network).
    if (error.code === undefined || error.code.startsWith("08") || error.code.startsWith("57P")) {
      return new PostgresUnavailable({ server, reason: `${step}: ${error.message}`, cause: error })
    }
    return new DemoSqlError({ step, server, reason: error.message })
  }

const versionOf = (session: PostgresSession.PostgresSession, url: string) =>
  session.query("SHOW server_version").pipe(
    Effect.map((rows) => (rows[0]?.server_version ?? "?").split(" ")[0]!),
    Effect.mapError(sqlFailure(url, "version check", "connect as a role that can log in"))
  )

/**
 * The database for `--source`: `DATABASE_URL` when set; else a server started for the demo (for the scope); else, in
 * `auto`, the synthetic source with what was missing. `postgres` without binaries fails naming the fix.
 */
export const choose = (mode: Mode) =>
  Effect.gen(function* () {
    if (mode === "synthetic") return { _tag: "synthetic", reason: "flag", missing: [] } satisfies Choice as Choice
    const env = yield* envDatabaseUrl
    if (Option.isSome(env)) {
      const url = env.value
      let parsed: URL | undefined
      try {
        parsed = new URL(url)
      } catch {
        parsed = undefined
      }
      if (parsed === undefined || (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:")) {
        return yield* new PostgresConfigError({
          field: "DATABASE_URL",
          reason: `expected a postgres:// URL, got ${JSON.stringify(redactUrl(url))}`,
          fix: "set DATABASE_URL=postgres://user@host:5432/db, or unset it and the demo starts its own PostgreSQL"
        })
      }
      const version = yield* Effect.scoped(Effect.flatMap(connect(url), (session) => versionOf(session, url)))
      const database: Database = {
        url,
        printable: redactUrl(url),
        origin: "env",
        server: PostgresSession.serverOf(url),
        version,
        port: Number(parsed.port || 5432),
        pid: undefined
      }
      return { _tag: "postgres", database } satisfies Choice as Choice
    }
    const started = yield* DemoServers.postgres.pipe(
      Effect.map((server) => ({ _tag: "started" as const, server })),
      // In auto mode a server that will not start (no runuser, no postgres user, a full disk) is no reason to show
      // nothing: the synthetic source runs, and the first line says why.
      Effect.catchTag("ServerStartFailed", (e) =>
        mode === "auto"
          ? Effect.succeed({ _tag: "failed" as const, reason: e.message.split("\n")[0]! })
          : Effect.fail(e)
      ),
      Effect.catchTag("PostgresNotInstalled", (e) =>
        mode === "auto"
          ? Effect.succeed({ _tag: "missing" as const, missing: e.missing })
          : Effect.fail(
              new UsageError({
                flag: "source",
                message:
                  `postgres: no PostgreSQL server binaries (${e.missing.join("; ")}) and no DATABASE_URL. ` +
                  "Install them (apt-get install postgresql; PG_BIN_DIR points at another directory), set " +
                  "DATABASE_URL to a server with wal_level=logical, or run --source synthetic"
              })
            )
      )
    )
    if (started._tag === "missing") {
      return { _tag: "synthetic", reason: "no-binaries", missing: started.missing } satisfies Choice as Choice
    }
    if (started._tag === "failed") {
      return { _tag: "synthetic", reason: "start-failed", missing: [started.reason] } satisfies Choice as Choice
    }
    const server = started.server
    const version = yield* Effect.scoped(
      Effect.flatMap(connect(server.url), (session) => versionOf(session, server.url))
    )
    const database: Database = {
      url: server.url,
      printable: server.url,
      origin: "started",
      server: PostgresSession.serverOf(server.url),
      version,
      port: server.port,
      pid: server.pid
    }
    return { _tag: "postgres", database } satisfies Choice as Choice
  })

/** The first line of the demo: which source it runs, and why. */
export const sourceLine = (choice: Choice): string => {
  if (choice._tag === "synthetic") {
    if (choice.reason === "start-failed") {
      return (
        `PostgreSQL could not be started (${choice.missing.join("; ")}): running the synthetic source instead; ` +
        "set DATABASE_URL to a server with wal_level=logical to see real changes."
      )
    }
    return choice.reason === "flag"
      ? "Source: the synthetic source (--source synthetic): generated events, no database."
      : `No PostgreSQL binaries found (${choice.missing.join("; ")}): running the synthetic source instead; ` +
          "apt-get install postgresql (or set DATABASE_URL) to see real changes."
  }
  const db = choice.database
  return db.origin === "started"
    ? `PostgreSQL ${db.version} started on port ${db.port} (pid ${db.pid}, wal_level=logical) as the demo's source; it stops when the demo ends.`
    : `PostgreSQL ${db.version} at ${db.server} (DATABASE_URL) as the demo's source: the demo works in a schema of its own and drops it, its slot and its publication at the end.`
}

// ---------------------------------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------------------------------

/** The demo's objects in the database, all named after the run. */
export interface Names {
  readonly schema: string
  readonly slot: string
  readonly publication: string
}

export const namesOf = (run: string): Names => {
  const id = `redflow_demo_${run}`
  return { schema: id, slot: id, publication: id }
}

/** Rows seeded before the slot exists: the initial snapshot reads them as `r` events. */
export const SEED = { customers: 100, orders: 200 } as const

/** What the writer committed, as PostgreSQL counted it (`RETURNING` rows of each statement). */
export interface Committed {
  changes: number
  transactions: number
  readonly ops: { c: number; u: number; d: number }
}

export const emptyCommitted = (): Committed => ({ changes: 0, transactions: 0, ops: { c: 0, u: 0, d: 0 } })

export interface Workload {
  readonly names: Names
  /** The captured tables, `schema.table`. */
  readonly tables: ReadonlyArray<string>
  /** Rows in the tables before the slot was created. */
  readonly seeded: number
  readonly committed: Committed
  /**
   * Commits `changes` changes in transactions of a few each, at about `rate` changes per second (0: as fast as the
   * server takes them). Each transaction finishes once begun: an interrupt lands between transactions.
   */
  readonly write: (options: { readonly changes: number; readonly rate: number }) => Effect.Effect<void, WriteError>
}

export type WriteError = PostgresPermissionError | PostgresUnavailable | DemoSqlError

const STATUSES = ["paid", "packed", "shipped", "delivered", "returned"] as const
const TIERS = ["bronze", "silver", "gold", "platinum"] as const

const ident = PostgresSession.quoteIdent

/** The whole transaction as one statement of data-modifying CTEs: one round trip, and the database counts each part. */
const transactionSql = (schema: string) => {
  const customers = `${ident(schema)}.customers`
  const orders = `${ident(schema)}.orders`
  return `WITH
  new_customers AS (
    INSERT INTO ${customers} (id, name, email, tier)
    SELECT id, 'Customer ' || id, 'customer' || id || '@example.com', 'bronze' FROM unnest($1::int[]) AS id
    RETURNING 1),
  new_orders AS (
    INSERT INTO ${orders} (id, customer_id, status, amount)
    SELECT v.id, v.customer_id, 'new', v.amount FROM unnest($2::bigint[], $3::int[], $4::numeric[]) AS v(id, customer_id, amount)
    RETURNING 1),
  order_updates AS (
    UPDATE ${orders} o SET status = v.status, updated_at = now()
    FROM unnest($5::bigint[], $6::text[]) AS v(id, status) WHERE o.id = v.id
    RETURNING 1),
  customer_updates AS (
    UPDATE ${customers} c SET tier = v.tier, updated_at = now()
    FROM unnest($7::int[], $8::text[]) AS v(id, tier) WHERE c.id = v.id
    RETURNING 1),
  deleted_orders AS (
    DELETE FROM ${orders} WHERE id = ANY($9::bigint[])
    RETURNING 1)
SELECT (SELECT count(*) FROM new_customers) + (SELECT count(*) FROM new_orders) AS c,
  (SELECT count(*) FROM order_updates) + (SELECT count(*) FROM customer_updates) AS u,
  (SELECT count(*) FROM deleted_orders) AS d`
}

/** One transaction's plan: which rows it touches (never one row twice: a statement cannot change a row twice). */
interface Plan {
  readonly newCustomers: Array<number>
  readonly newOrders: Array<{ id: number; customer: number; amount: string }>
  readonly orderUpdates: Array<{ id: number; status: string }>
  readonly customerUpdates: Array<{ id: number; tier: string }>
  readonly deletes: Array<number>
}

/** At most this many transactions a second (one SQL session's comfortable pace), a few changes each. */
const MAX_TRANSACTIONS_PER_SECOND = 100
/** The most changes one transaction takes when the writer is behind its pace. */
const MAX_TRANSACTION = 500
/** The mean transaction size when unpaced. */
const UNPACED_MEAN = 25

/**
 * Creates the demo's schema (`customers`, `orders` with primary keys, so updates and deletes carry their key) and
 * seeds it, before any slot exists. With `DATABASE_URL` the schema, the slot and the publication are dropped when
 * the scope closes (a slot left behind would hold WAL on that server for good); a server the demo started goes
 * whole.
 */
export const prepare = (
  database: Database,
  names: Names
): Effect.Effect<Workload, WriteError | PostgresConfigError, Scope.Scope> =>
  Effect.gen(function* () {
    const url = database.url
    const schema = ident(names.schema)
    const grant = `GRANT CREATE ON DATABASE ${ident(database.server.split("/")[1] ?? "postgres")} TO ${ident(userOf(url))}, or unset DATABASE_URL and the demo starts its own PostgreSQL`
    if (database.origin === "env") yield* Effect.addFinalizer(() => cleanUp(database, names))
    const session = yield* connect(url)
    yield* session
      .query(
        `CREATE SCHEMA ${schema};
CREATE TABLE ${schema}.customers (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL, tier text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE ${schema}.orders (id bigint PRIMARY KEY, customer_id int NOT NULL REFERENCES ${schema}.customers,
  status text NOT NULL, amount numeric(10,2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now());
INSERT INTO ${schema}.customers (id, name, email, tier)
  SELECT i, 'Customer ' || i, 'customer' || i || '@example.com', (ARRAY['bronze','silver','gold'])[1 + i % 3]
  FROM generate_series(1, ${SEED.customers}) AS i;
INSERT INTO ${schema}.orders (id, customer_id, status, amount)
  SELECT i, 1 + (i * 7) % ${SEED.customers}, 'paid', (i % 97) + 0.99 FROM generate_series(1, ${SEED.orders}) AS i`
      )
      .pipe(Effect.mapError(sqlFailure(url, `set-up of schema ${names.schema}`, grant)))

    // The writer's own model of the rows, exact since nobody else writes to the demo's schema.
    let customers = SEED.customers
    const orders: Array<number> = Array.from({ length: SEED.orders }, (_, i) => i + 1)
    /** Where each order id is in `orders`, so a delete swaps the last one into its place. */
    const indexOf = new Map(orders.map((id, i) => [id, i]))
    let nextOrder = SEED.orders + 1
    const committed = emptyCommitted()
    const statement = transactionSql(names.schema)
    // The demo's own commits need not wait for the disk: a crash could lose its last few, nothing else. It keeps the
    // pace on a busy machine, where a WAL flush per commit can take tens of milliseconds.
    yield* session.query("SET synchronous_commit = off").pipe(Effect.mapError(sqlFailure(url, "live writer", grant)))

    const pick = <A>(values: ReadonlyArray<A>) =>
      Effect.map(Random.nextIntBetween(0, values.length, { halfOpen: true }), (i) => values[i]!)

    const plan = (size: number) =>
      Effect.gen(function* () {
        const p: Plan = { newCustomers: [], newOrders: [], orderUpdates: [], customerUpdates: [], deletes: [] }
        const touchedOrders = new Set<number>()
        const touchedCustomers = new Set<number>()
        /** An existing order this transaction does not touch yet, if a few tries find one. */
        const untouchedOrder = Effect.gen(function* () {
          for (let attempt = 0; attempt < 4 && orders.length > touchedOrders.size; attempt++) {
            const id = yield* pick(orders)
            if (!touchedOrders.has(id)) {
              touchedOrders.add(id)
              return id
            }
          }
          return undefined
        })
        const insertOrder = Effect.gen(function* () {
          const amount = (yield* Random.nextIntBetween(100, 50_000)) / 100
          p.newOrders.push({
            id: nextOrder++,
            customer: yield* Random.nextIntBetween(1, customers),
            amount: amount.toFixed(2)
          })
        })
        for (let i = 0; i < size; i++) {
          const r = yield* Random.next
          if (r < 0.45) {
            yield* insertOrder
          } else if (r < 0.75) {
            const id = yield* untouchedOrder
            if (id === undefined) yield* insertOrder
            else p.orderUpdates.push({ id, status: yield* pick(STATUSES) })
          } else if (r < 0.85) {
            const id = yield* Random.nextIntBetween(1, customers)
            if (touchedCustomers.has(id)) yield* insertOrder
            else {
              touchedCustomers.add(id)
              p.customerUpdates.push({ id, tier: yield* pick(TIERS) })
            }
          } else if (r < 0.97) {
            // Deletes only while there are more orders than half the seed's: the table never runs dry.
            const id = orders.length > SEED.orders / 2 ? yield* untouchedOrder : undefined
            if (id === undefined) yield* insertOrder
            else p.deletes.push(id)
          } else {
            p.newCustomers.push(customers + 1 + p.newCustomers.length)
          }
        }
        return p
      })

    const apply = (p: Plan) => {
      customers += p.newCustomers.length
      for (const o of p.newOrders) {
        indexOf.set(o.id, orders.length)
        orders.push(o.id)
      }
      for (const id of p.deletes) {
        const i = indexOf.get(id)!
        const lastId = orders.pop()!
        if (lastId !== id) {
          orders[i] = lastId
          indexOf.set(lastId, i)
        }
        indexOf.delete(id)
      }
    }

    /** One transaction, counted by the database; not interrupted once sent, so the count is never lost. */
    const transaction = (size: number) =>
      Effect.gen(function* () {
        const p = yield* plan(size)
        const rows = yield* session
          .query(statement, [
            p.newCustomers,
            p.newOrders.map((o) => o.id),
            p.newOrders.map((o) => o.customer),
            p.newOrders.map((o) => o.amount),
            p.orderUpdates.map((o) => o.id),
            p.orderUpdates.map((o) => o.status),
            p.customerUpdates.map((c) => c.id),
            p.customerUpdates.map((c) => c.tier),
            p.deletes
          ])
          .pipe(Effect.mapError(sqlFailure(url, "live writer", grant)))
        const c = Number(rows[0]?.c ?? 0)
        const u = Number(rows[0]?.u ?? 0)
        const d = Number(rows[0]?.d ?? 0)
        apply(p)
        committed.ops.c += c
        committed.ops.u += u
        committed.ops.d += d
        committed.changes += c + u + d
        committed.transactions += 1
        return committed.changes
      }).pipe(Effect.uninterruptible)

    const write: Workload["write"] = ({ changes, rate }) =>
      Effect.gen(function* () {
        const left = () => changes - committed.changes
        if (left() <= 0) return
        const done = (n: number) => n >= changes
        if (rate <= 0) {
          const step = Effect.flatMap(Random.nextIntBetween(1, 2 * UNPACED_MEAN - 1), (size) =>
            transaction(Math.min(size, left()))
          )
          return yield* Effect.repeat(step, { until: done })
        }
        // Paced by what is owed: each tick commits the changes the rate asks for since the start, so a slow commit
        // (a busy machine) makes the next transaction bigger instead of the run slower.
        const startedAt = yield* Clock.currentTimeMillis
        const from = committed.changes
        const step = Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis
          const owed = Math.floor((rate * (now - startedAt)) / 1000) - (committed.changes - from)
          if (owed <= 0) return committed.changes
          return yield* transaction(Math.min(owed, MAX_TRANSACTION, left()))
        })
        const tick = Math.max(1000 / MAX_TRANSACTIONS_PER_SECOND, 4000 / rate)
        yield* Effect.repeat(step, { until: done, schedule: Schedule.fixed(`${tick} millis`) })
      })

    return {
      names,
      tables: [`${names.schema}.customers`, `${names.schema}.orders`],
      seeded: SEED.customers + SEED.orders,
      committed,
      write
    } satisfies Workload
  })

/** How long a slot just released by the demo's own stream may still show as in use. */
const SLOT_RELEASE = "15 seconds"

/**
 * Drops the demo's slot, publication and schema from a `DATABASE_URL` server. What cannot be dropped is said with
 * the statement that drops it: a slot left behind keeps WAL on that server until it is dropped.
 */
const cleanUp = (database: Database, names: Names): Effect.Effect<void> =>
  Effect.gen(function* () {
    const session = yield* connect(database.url)
    const dropSlot = session
      .query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", [names.slot])
      .pipe(
        // 55006: still active, the stream's connection not closed on the server's side yet.
        Effect.retry({
          while: (e) => e.code === "55006",
          schedule: Schedule.max([Schedule.spaced("200 millis"), Schedule.during(SLOT_RELEASE)])
        })
      )
    const steps = [
      { what: `slot ${names.slot}`, run: dropSlot, manual: `SELECT pg_drop_replication_slot('${names.slot}')` },
      {
        what: `publication ${names.publication}`,
        run: session.query(`DROP PUBLICATION IF EXISTS ${ident(names.publication)}`),
        manual: `DROP PUBLICATION ${ident(names.publication)}`
      },
      {
        what: `schema ${names.schema}`,
        run: session.query(`DROP SCHEMA IF EXISTS ${ident(names.schema)} CASCADE`),
        manual: `DROP SCHEMA ${ident(names.schema)} CASCADE`
      }
    ]
    for (const step of steps) {
      yield* step.run.pipe(
        Effect.catch((e) =>
          Output.line(
            `redflow: warn: could not drop the demo's ${step.what} on ${database.server}: ${e.message}; run ${step.manual}`
          )
        )
      )
    }
  }).pipe(
    Effect.scoped,
    Effect.catch((e) =>
      Output.line(
        `redflow: warn: could not clean up on ${database.server} (${e.message}): drop slot ${names.slot} ` +
          `(SELECT pg_drop_replication_slot('${names.slot}')), publication ${names.publication} and schema ` +
          `${names.schema} by hand`
      )
    )
  )

/** `2,500 inserts, 1,200 updates, 300 deletes` (with snapshot reads first when there are any). */
export const opsText = (ops: Readonly<Record<string, number>>): string =>
  ["r", "c", "u", "d", "t"]
    .filter((op) => (ops[op] ?? 0) > 0)
    .map(
      (op) =>
        `${Output.count(ops[op]!)} ${op === "r" ? "snapshot reads" : op === "c" ? "inserts" : op === "u" ? "updates" : op === "d" ? "deletes" : "truncates"}`
    )
    .join(", ")
