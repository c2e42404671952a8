import { spawn } from "node:child_process"
import * as Fs from "node:fs/promises"
import * as Path from "node:path"
import { assert, layer } from "@effect/vitest"
import { PostgresTestServer } from "@redflow/testing"
import { Clock, Effect, Fiber, Option, Schedule, Scope } from "effect"
import type { PostgresError } from "../src/PostgresError.ts"
import * as Pgoutput from "../src/internal/Pgoutput.ts"
import * as ReplicationClient from "../src/internal/ReplicationClient.ts"
import * as Session from "../src/internal/Session.ts"
import * as Setup from "../src/internal/Setup.ts"

/** The server's URL as another role (and password, or database). */
const urlAs = (url: string, user: string, options: { password?: string; database?: string } = {}) => {
  const parsed = new URL(url)
  parsed.username = user
  if (options.password !== undefined) parsed.password = options.password
  if (options.database !== undefined) parsed.pathname = `/${options.database}`
  return parsed.toString()
}

const open = (url: string) => Effect.orDie(Session.make({ url }))

const sql = (session: Session.Session, text: string, params: ReadonlyArray<unknown> = []) =>
  Effect.orDie(session.query(text, params))

const one = (session: Session.Session, text: string, params: ReadonlyArray<unknown> = []) =>
  Effect.map(sql(session, text, params), (rows) => rows[0] ?? {})

/** The typed error of an effect that must fail (a success fails the test, with the value as its error). */
const failure = <A, E>(effect: Effect.Effect<A, E, Scope.Scope>) => Effect.flip(Effect.scoped(effect))

const assertTagged = (error: unknown, tag: string, ...words: ReadonlyArray<string | RegExp>) => {
  const e = error as { _tag?: string; message?: string }
  assert.strictEqual(e._tag, tag, `tag of: ${e.message}`)
  for (const word of words) {
    if (typeof word === "string") assert.include(e.message, word, `message: ${e.message}`)
    else assert.match(e.message ?? "", word, `message: ${e.message}`)
  }
}

/** Retries a probe every 100 ms on the wall clock until it succeeds (the test's timeout bounds a hang). */
const eventually = <A, E, R>(probe: Effect.Effect<A, E, R>) =>
  probe.pipe(
    Effect.retry(Schedule.spaced("100 millis")),
    Effect.provideService(Clock.Clock, Clock.Clock.defaultValue())
  )

const notYet = (what: string) => Effect.fail(new Error(`not yet: ${what}`))

layer(PostgresTestServer.layer())("Setup on a logical server", (it) => {
  it.effect("checkServer and checkRole pass for a superuser on a wal_level=logical server", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const admin = yield* open(server.url)
      const info = yield* Setup.checkServer(admin)
      assert.isAtLeast(info.versionNum, 150_000)
      assert.strictEqual(info.database, "postgres")
      const role = yield* Setup.checkRole(admin)
      assert.deepStrictEqual(role, { user: "postgres", superuser: true, replication: true })
    })
  )

  it.effect("checkRole refuses a role without REPLICATION, with the ALTER ROLE that fixes it", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const admin = yield* open(server.url)
      yield* sql(admin, "CREATE ROLE plain LOGIN")
      const plain = yield* open(urlAs(server.url, "plain"))
      const error = yield* failure(Setup.checkRole(plain))
      assertTagged(error, "PostgresPermissionError", "ALTER ROLE plain WITH REPLICATION", server.host, "REPLICATION")
      assert.strictEqual((error as { user: string }).user, "plain")

      // The fix works: the same session passes once it is applied.
      yield* sql(admin, "ALTER ROLE plain WITH REPLICATION")
      assert.deepStrictEqual(yield* Setup.checkRole(plain), { user: "plain", superuser: false, replication: true })
      yield* sql(admin, "ALTER ROLE plain WITH NOREPLICATION")
    })
  )

  it.effect(
    "a replication connection of a role without REPLICATION is a permission error with the ALTER ROLE fix",
    () =>
      Effect.gen(function* () {
        const server = yield* PostgresTestServer.PostgresTestServer
        const error = yield* failure(ReplicationClient.make({ url: urlAs(server.url, "plain") }))
        assert.strictEqual(error.code, "42501")
        assert.include(error.message, "must be superuser or replication role to start walsender")
        const classified = Setup.classifyConnectError(error, `${server.host}:${server.port}/postgres`, "plain")
        assertTagged(classified, "PostgresPermissionError", 'ALTER ROLE "plain" WITH REPLICATION', "walsender")
        assert.isFalse(Setup.isRetryable(classified))
        assert.isFalse(Setup.isRetryable(error))
      })
  )

  it.effect("connection refusals: wrong or missing password, unknown role, pg_hba reject, unknown database", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const admin = yield* open(server.url)
      yield* sql(admin, "CREATE ROLE pwuser LOGIN REPLICATION PASSWORD 'right-one'")
      yield* sql(admin, "CREATE ROLE shut_out LOGIN REPLICATION")
      // Password auth for pwuser, a reject line for shut_out, trust for everyone else (as the test server has it).
      yield* Effect.promise(() =>
        Fs.writeFile(
          Path.join(server.dataDir, "pg_hba.conf"),
          [
            "host all pwuser 127.0.0.1/32 scram-sha-256",
            "host replication pwuser 127.0.0.1/32 scram-sha-256",
            "host all shut_out 127.0.0.1/32 reject",
            "host replication shut_out 127.0.0.1/32 reject",
            "host all all 127.0.0.1/32 trust",
            "host replication all 127.0.0.1/32 trust",
            ""
          ].join("\n")
        )
      )
      yield* sql(admin, "SELECT pg_reload_conf()")
      const server_ = `${server.host}:${server.port}/postgres`
      const classify = (user: string) => (error: ReplicationClient.ReplicationError) =>
        Setup.classifyConnectError(error, server_, user)

      // The reload is asynchronous: wait until the wrong password is refused (trust let it in before).
      const wrong = yield* eventually(
        failure(Session.make({ url: urlAs(server.url, "pwuser", { password: "wrong" }) })).pipe(
          Effect.mapError(() => new Error("not yet: pg_hba.conf reloaded"))
        )
      )
      assert.strictEqual(wrong.code, "28P01")
      assertTagged(
        classify("pwuser")(wrong),
        "PostgresPermissionError",
        "password authentication failed",
        'ALTER ROLE "pwuser" PASSWORD'
      )

      // The right password gets in (so the refusal above was the password's).
      yield* Effect.scoped(Effect.orDie(Session.make({ url: urlAs(server.url, "pwuser", { password: "right-one" }) })))

      const none = yield* failure(Session.make({ url: urlAs(server.url, "pwuser") }))
      assertTagged(classify("pwuser")(none), "PostgresPermissionError", "password")

      const rejected = yield* failure(Session.make({ url: urlAs(server.url, "shut_out") }))
      assert.strictEqual(rejected.code, "28000")
      const hba = classify("shut_out")(rejected)
      assertTagged(
        hba,
        "PostgresPermissionError",
        "pg_hba.conf rejects connection",
        "host replication shut_out",
        "pg_reload_conf()"
      )
      const rejectedReplication = yield* failure(ReplicationClient.make({ url: urlAs(server.url, "shut_out") }))
      assertTagged(classify("shut_out")(rejectedReplication), "PostgresPermissionError", "pg_hba.conf")

      const ghost = yield* failure(Session.make({ url: urlAs(server.url, "ghost") }))
      assert.strictEqual(ghost.code, "28000")
      assertTagged(
        classify("ghost")(ghost),
        "PostgresPermissionError",
        'role "ghost" does not exist',
        'CREATE ROLE "ghost"'
      )

      const noDb = yield* failure(Session.make({ url: urlAs(server.url, "postgres", { database: "shop" }) }))
      assert.strictEqual(noDb.code, "3D000")
      const config = Setup.classifyConnectError(noDb, `${server.host}:${server.port}/shop`, "postgres")
      assertTagged(config, "PostgresConfigError", 'database "shop" does not exist', 'CREATE DATABASE "shop"')
      assert.strictEqual((config as { field: string }).field, "url")

      for (const error of [wrong, none, rejected, ghost, noDb]) assert.isFalse(Setup.isRetryable(error))
    })
  )

  it.effect("an unresolvable host and a terminated session are unavailable and retryable", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const nowhere = yield* failure(Session.make({ url: "postgres://redflow@no-such-host.invalid:5432/shop" }))
      const unresolved = Setup.classifyConnectError(nowhere, "no-such-host.invalid:5432/shop", "redflow")
      assertTagged(unresolved, "PostgresUnavailable", "ENOTFOUND", "no-such-host.invalid:5432/shop")
      assert.isTrue(Setup.isRetryable(nowhere))
      assert.isTrue(Setup.isRetryable(unresolved))

      // 57P01: the session's backend ended by an administrator while a statement runs on it.
      const admin = yield* open(server.url)
      const victim = yield* open(server.url)
      const pid = (yield* one(victim, "SELECT pg_backend_pid()::text AS pid")).pid
      const running = yield* Effect.forkChild(Effect.flip(victim.query("SELECT pg_sleep(600)")))
      yield* eventually(
        Effect.flatMap(one(admin, "SELECT state FROM pg_stat_activity WHERE pid = $1::int", [pid]), (row) =>
          row.state === "active" ? Effect.void : notYet(`backend ${pid} is ${row.state}`)
        )
      )
      yield* sql(admin, "SELECT pg_terminate_backend($1::int)", [pid])
      const terminated = yield* Fiber.join(running)
      assert.strictEqual(terminated.code, "57P01")
      const classified = Setup.classifyConnectError(terminated, `${server.host}:${server.port}/postgres`, "postgres")
      assertTagged(classified, "PostgresUnavailable", "terminating connection due to administrator command")
      assert.isTrue(Setup.isRetryable(terminated))
      assert.isTrue(Setup.isRetryable(classified))
      // The checks on that session now say unavailable, and retryable (a new session is the way on).
      const ended = yield* failure(Setup.checkServer(victim))
      assertTagged(ended, "PostgresUnavailable", `${server.host}:${server.port}/postgres`)
      assert.isTrue(Setup.isRetryable(ended))
    })
  )

  it.effect("resolveTables: schema.table, table, quoted names; columns, key order, identity; no duplicates", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const admin = yield* open(server.url)
      yield* sql(
        admin,
        `CREATE TABLE orders (id int PRIMARY KEY, note text, doubled int GENERATED ALWAYS AS (id * 2) STORED);
         CREATE TABLE lines (order_id int, gone int, line int, sku text, PRIMARY KEY (line, order_id));
         ALTER TABLE lines DROP COLUMN gone;
         CREATE SCHEMA "Sales"; CREATE TABLE "Sales"."My Table" (k text PRIMARY KEY);
         CREATE TABLE public."a.b" (x int8 PRIMARY KEY, tags text[]);
         CREATE TABLE full_rows (a int, b text); ALTER TABLE full_rows REPLICA IDENTITY FULL;
         CREATE TABLE by_index (a int NOT NULL, b int NOT NULL, c text);
         CREATE UNIQUE INDEX by_index_ba ON by_index (b, a); ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_ba;
         CREATE TABLE meas (id int PRIMARY KEY, v int) PARTITION BY RANGE (id);
         CREATE TABLE meas_1 PARTITION OF meas FOR VALUES FROM (0) TO (100)`
      )
      const tables = yield* Setup.resolveTables(admin, [
        "orders",
        "public.lines",
        '"Sales"."My Table"',
        'public."a.b"',
        "public.orders",
        "PUBLIC.Lines",
        "full_rows",
        "by_index",
        "meas"
      ])
      assert.deepStrictEqual(
        tables.map((t) => [t.schema, t.table, t.quoted]),
        [
          ["public", "orders", "public.orders"],
          ["public", "lines", "public.lines"],
          ["Sales", "My Table", '"Sales"."My Table"'],
          ["public", "a.b", 'public."a.b"'],
          ["public", "full_rows", "public.full_rows"],
          ["public", "by_index", "public.by_index"],
          ["public", "meas", "public.meas"]
        ]
      )
      const [orders, lines, mine, dotted, full, byIndex, meas] = tables
      const oid = yield* one(admin, `SELECT '"Sales"."My Table"'::regclass::oid::text AS oid`)
      assert.strictEqual(mine!.oid, Number(oid.oid))
      assert.deepStrictEqual(orders!.columns, [
        { name: "id", typeOid: 23, typeName: "int4", generated: false },
        { name: "note", typeOid: 25, typeName: "text", generated: false },
        { name: "doubled", typeOid: 23, typeName: "int4", generated: true }
      ])
      assert.deepStrictEqual(
        dotted!.columns.map((c) => [c.name, c.typeOid, c.typeName]),
        [
          ["x", 20, "int8"],
          ["tags", 1009, "_text"]
        ]
      )
      assert.deepStrictEqual(orders!.primaryKey, ["id"])
      assert.strictEqual(orders!.replicaIdentity, "d")
      assert.deepStrictEqual(orders!.identityColumns, ["id"])
      // The dropped column is gone; the key is in key order, not attribute order.
      assert.deepStrictEqual(
        lines!.columns.map((c) => c.name),
        ["order_id", "line", "sku"]
      )
      assert.deepStrictEqual(lines!.primaryKey, ["line", "order_id"])
      assert.deepStrictEqual([full!.replicaIdentity, full!.primaryKey, full!.identityColumns], ["f", [], ["a", "b"]])
      assert.deepStrictEqual(
        [byIndex!.replicaIdentity, byIndex!.primaryKey, byIndex!.identityColumns],
        ["i", [], ["b", "a"]]
      )
      assert.deepStrictEqual([meas!.replicaIdentity, meas!.primaryKey], ["d", ["id"]])
    })
  )

  it.effect("resolveTables rejects malformed names, naming the field", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const admin = yield* open(server.url)
      for (const name of ['"unclosed', "a.b.c", "", "public.", "1abc", "orders;drop", 'public.""', "or ders"]) {
        const error = yield* failure(Setup.resolveTables(admin, [name]))
        assertTagged(error, "PostgresConfigError", JSON.stringify(name), "is not a table name", "schema.table")
        assert.strictEqual((error as { field: string }).field, "tables")
      }
      const empty = yield* failure(Setup.resolveTables(admin, []))
      assertTagged(empty, "PostgresConfigError", "no tables")
    })
  )

  it.effect("a missing table is named, with the tables of that name in other schemas", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const admin = yield* open(server.url)
      yield* sql(admin, "CREATE SCHEMA archive; CREATE TABLE archive.events (id int PRIMARY KEY)")
      const error = yield* failure(Setup.resolveTables(admin, ["orders", "events"]))
      assertTagged(error, "PostgresConfigError", '"public"."events"', "does not exist", "archive.events", server.host)
      assert.strictEqual((error as { field: string }).field, "tables")

      const nowhere = yield* failure(Setup.resolveTables(admin, ["public.no_such_table"]))
      assertTagged(nowhere, "PostgresConfigError", '"public"."no_such_table"', "does not exist")
      assert.notInclude(nowhere.message, "tables of that name")

      // Unquoted names fold to lower case, as in SQL: the hint shows the quoted name that exists.
      const folded = yield* failure(Setup.resolveTables(admin, ['Sales."My Table"']))
      assertTagged(folded, "PostgresConfigError", '"sales"."My Table"', "does not exist", '"Sales"."My Table"')

      yield* sql(admin, "CREATE VIEW order_view AS SELECT * FROM orders")
      const view = yield* failure(Setup.resolveTables(admin, ["order_view"]))
      assertTagged(view, "PostgresConfigError", "public.order_view is a view", "ordinary and partitioned")
    })
  )

  it.effect("a role without SELECT (or USAGE on the schema) gets the GRANT that fixes it", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const admin = yield* open(server.url)
      yield* sql(admin, "CREATE ROLE reader LOGIN REPLICATION")
      const reader = yield* open(urlAs(server.url, "reader"))
      const error = yield* failure(Setup.resolveTables(reader, ["orders"]))
      assertTagged(error, "PostgresPermissionError", "GRANT SELECT ON public.orders TO reader", "no SELECT")
      yield* sql(admin, "GRANT SELECT ON public.orders TO reader")
      assert.deepStrictEqual(
        (yield* Setup.resolveTables(reader, ["orders"])).map((t) => t.table),
        ["orders"]
      )

      yield* sql(admin, "CREATE SCHEMA private; CREATE TABLE private.secrets (id int PRIMARY KEY)")
      yield* sql(admin, "GRANT SELECT ON private.secrets TO reader")
      const usage = yield* failure(Setup.resolveTables(reader, ["private.secrets"]))
      assertTagged(usage, "PostgresPermissionError", "GRANT USAGE ON SCHEMA private TO reader")
      yield* sql(admin, "GRANT USAGE ON SCHEMA private TO reader")
      assert.strictEqual((yield* Setup.resolveTables(reader, ["private.secrets"]))[0]!.table, "secrets")
    })
  )

  it.effect("a table without a replica identity is refused with both fixes, as the server itself refuses it", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const admin = yield* open(server.url)
      yield* sql(admin, "CREATE TABLE nopk (a int, b text); INSERT INTO nopk VALUES (1, 'x')")
      const error = yield* failure(Setup.resolveTables(admin, ["orders", "nopk"]))
      assertTagged(
        error,
        "PostgresConfigError",
        "public.nopk",
        'cannot update table "nopk" because it does not have a replica identity',
        "ALTER TABLE public.nopk ADD PRIMARY KEY (",
        "ALTER TABLE public.nopk REPLICA IDENTITY FULL"
      )
      assert.strictEqual((error as { field: string }).field, "tables")

      // What the message says of the server is true: published, the table refuses an UPDATE with those words.
      yield* sql(admin, "CREATE PUBLICATION nopk_pub FOR TABLE nopk")
      const refused = yield* failure(admin.query("UPDATE nopk SET b = 'y'"))
      assert.include(refused.message, 'cannot update table "nopk" because it does not have a replica identity')
      yield* sql(admin, "DROP PUBLICATION nopk_pub")

      // Either fix makes it acceptable.
      yield* sql(admin, "ALTER TABLE nopk REPLICA IDENTITY FULL")
      assert.strictEqual((yield* Setup.resolveTables(admin, ["nopk"]))[0]!.replicaIdentity, "f")

      yield* sql(admin, "CREATE TABLE nothing_id (id int PRIMARY KEY); ALTER TABLE nothing_id REPLICA IDENTITY NOTHING")
      const nothing = yield* failure(Setup.resolveTables(admin, ["nothing_id"]))
      assertTagged(
        nothing,
        "PostgresConfigError",
        "public.nothing_id",
        "REPLICA IDENTITY NOTHING",
        "REPLICA IDENTITY FULL"
      )

      // A partitioned table: REPLICA IDENTITY FULL on the parent does not reach its partitions, the server checks each.
      yield* sql(
        admin,
        `CREATE TABLE plog (id int, v text) PARTITION BY RANGE (id);
         CREATE TABLE plog_1 PARTITION OF plog FOR VALUES FROM (0) TO (100);
         ALTER TABLE plog REPLICA IDENTITY FULL; INSERT INTO plog VALUES (1, 'a')`
      )
      const partition = yield* failure(Setup.resolveTables(admin, ["plog"]))
      assertTagged(
        partition,
        "PostgresConfigError",
        "public.plog_1 (a partition of public.plog)",
        "ALTER TABLE public.plog_1 REPLICA IDENTITY FULL"
      )
      yield* sql(admin, "CREATE PUBLICATION plog_pub FOR TABLE plog")
      const refusedPartition = yield* failure(admin.query("UPDATE plog SET v = 'b'"))
      assert.include(refusedPartition.message, 'cannot update table "plog_1"')
      yield* sql(admin, "DROP PUBLICATION plog_pub; ALTER TABLE plog_1 REPLICA IDENTITY FULL")
      assert.strictEqual((yield* Setup.resolveTables(admin, ["plog"]))[0]!.table, "plog")
    })
  )

  it.effect("ensurePublication creates an absent publication for the tables, and accepts it the next time", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const admin = yield* open(server.url)
      const tables = yield* Setup.resolveTables(admin, ["orders", "lines", '"Sales"."My Table"'])
      assert.deepStrictEqual(yield* Setup.ensurePublication(admin, "Redflow Pub", tables), {
        created: true,
        allTables: false,
        others: []
      })
      const published = yield* sql(
        admin,
        "SELECT schemaname || '.' || tablename AS t FROM pg_publication_tables WHERE pubname = 'Redflow Pub' ORDER BY 1"
      )
      assert.deepStrictEqual(
        published.map((r) => r.t),
        ["Sales.My Table", "public.lines", "public.orders"]
      )
      const flags = yield* one(
        admin,
        "SELECT pubinsert::text || pubupdate::text || pubdelete::text || pubtruncate::text AS ops FROM pg_publication WHERE pubname = 'Redflow Pub'"
      )
      assert.strictEqual(flags.ops, "truetruetruetrue")
      assert.deepStrictEqual(yield* Setup.ensurePublication(admin, "Redflow Pub", tables), {
        created: false,
        allTables: false,
        others: []
      })

      // A partitioned table is published via its root: its changes come as the table's, not its partitions'.
      const meas = yield* Setup.resolveTables(admin, ["meas"])
      assert.isTrue((yield* Setup.ensurePublication(admin, "meas_pub", meas)).created)
      const viaRoot = yield* sql(admin, "SELECT tablename FROM pg_publication_tables WHERE pubname = 'meas_pub'")
      assert.deepStrictEqual(
        viaRoot.map((r) => r.tablename),
        ["meas"]
      )
    })
  )

  it.effect("an existing publication must include every table and publish every operation", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const admin = yield* open(server.url)
      const tables = yield* Setup.resolveTables(admin, ["orders", "lines"])
      const field = (error: unknown) => (error as { field: string }).field

      yield* sql(admin, "CREATE PUBLICATION partial FOR TABLE orders")
      const partial = yield* failure(Setup.ensurePublication(admin, "partial", tables))
      assertTagged(
        partial,
        "PostgresConfigError",
        "does not publish public.lines",
        "ALTER PUBLICATION partial ADD TABLE public.lines"
      )
      assert.strictEqual(field(partial), "publication")
      yield* sql(admin, "ALTER PUBLICATION partial ADD TABLE public.lines")
      assert.isFalse((yield* Setup.ensurePublication(admin, "partial", tables)).created)

      yield* sql(
        admin,
        "CREATE PUBLICATION no_truncate FOR TABLE orders, lines WITH (publish = 'insert, update, delete')"
      )
      const noTruncate = yield* failure(Setup.ensurePublication(admin, "no_truncate", tables))
      assertTagged(
        noTruncate,
        "PostgresConfigError",
        "does not publish truncate",
        "ALTER PUBLICATION no_truncate SET (publish = 'insert, update, delete, truncate')"
      )
      assert.strictEqual(field(noTruncate), "publication")
      yield* sql(admin, "ALTER PUBLICATION no_truncate SET (publish = 'insert, update, delete, truncate')")
      assert.isFalse((yield* Setup.ensurePublication(admin, "no_truncate", tables)).created)

      yield* sql(admin, "CREATE PUBLICATION inserts_only FOR TABLE orders, lines WITH (publish = 'insert')")
      const insertsOnly = yield* failure(Setup.ensurePublication(admin, "inserts_only", tables))
      assertTagged(insertsOnly, "PostgresConfigError", "does not publish update, delete, truncate")

      yield* sql(admin, "CREATE PUBLICATION cols FOR TABLE orders (id), lines")
      const cols = yield* failure(Setup.ensurePublication(admin, "cols", tables))
      assertTagged(
        cols,
        "PostgresConfigError",
        "publishes public.orders without columns note",
        "DROP TABLE public.orders"
      )
      yield* sql(admin, "CREATE PUBLICATION rows_where FOR TABLE orders WHERE (id > 10), lines")
      const rows = yield* failure(Setup.ensurePublication(admin, "rows_where", tables))
      assertTagged(rows, "PostgresConfigError", "publishes public.orders only where (id > 10)")

      yield* sql(admin, "CREATE PUBLICATION leaves FOR TABLE meas")
      const leaves = yield* failure(
        Setup.ensurePublication(admin, "leaves", yield* Setup.resolveTables(admin, ["meas"]))
      )
      assertTagged(leaves, "PostgresConfigError", "ALTER PUBLICATION leaves SET (publish_via_partition_root = true)")

      yield* sql(admin, "CREATE PUBLICATION more FOR TABLE orders, lines, full_rows")
      assert.deepStrictEqual(yield* Setup.ensurePublication(admin, "more", [tables[0]!]), {
        created: false,
        allTables: false,
        others: ["public.full_rows", "public.lines"]
      })

      yield* sql(admin, "CREATE PUBLICATION everything FOR ALL TABLES")
      const all = yield* Setup.ensurePublication(admin, "everything", tables)
      assert.isFalse(all.created)
      assert.isTrue(all.allTables)
      assert.include(all.others, "public.full_rows")
      assert.include(all.others, '"Sales"."My Table"')
      assert.notInclude(all.others, "public.orders")

      const badName = yield* failure(Setup.ensurePublication(admin, "p".repeat(64), tables))
      assertTagged(badName, "PostgresConfigError", "is not a publication name")
    })
  )

  it.effect("a role that may not create the publication gets the statement for the owner to run", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const admin = yield* open(server.url)
      const reader = yield* open(urlAs(server.url, "reader"))
      const tables = yield* Setup.resolveTables(reader, ["orders"])

      const noCreate = yield* failure(Setup.ensurePublication(reader, "reader_pub", tables))
      assertTagged(
        noCreate,
        "PostgresPermissionError",
        "permission denied for database postgres",
        "CREATE PUBLICATION reader_pub FOR TABLE public.orders",
        "the owner of the tables (postgres)",
        "GRANT CREATE ON DATABASE postgres TO <owner>"
      )
      yield* sql(admin, "GRANT CREATE ON DATABASE postgres TO reader")
      const notOwner = yield* failure(Setup.ensurePublication(reader, "reader_pub", tables))
      assertTagged(
        notOwner,
        "PostgresPermissionError",
        "must be owner of table orders",
        "the owner of the tables (postgres), or a superuser",
        "CREATE PUBLICATION reader_pub FOR TABLE public.orders"
      )
      assert.strictEqual((notOwner as { user: string }).user, "reader")
      // The statement given works when the owner runs it; then the reader's check accepts the publication.
      yield* sql(admin, "CREATE PUBLICATION reader_pub FOR TABLE public.orders")
      assert.deepStrictEqual(yield* Setup.ensurePublication(reader, "reader_pub", tables), {
        created: false,
        allTables: false,
        others: []
      })
    })
  )

  it.effect("inspectSlot: none when absent, the positions of a pgoutput slot, and walPosition's lag", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const admin = yield* open(server.url)
      assert.isTrue(Option.isNone(yield* Setup.inspectSlot(admin, "nobody_here")))

      yield* sql(admin, "SELECT pg_create_logical_replication_slot('fresh', 'pgoutput')")
      const state = Option.getOrThrow(yield* Setup.inspectSlot(admin, "fresh"))
      const row = yield* one(
        admin,
        "SELECT confirmed_flush_lsn::text AS c, restart_lsn::text AS r FROM pg_replication_slots WHERE slot_name = 'fresh'"
      )
      assert.deepStrictEqual(state, {
        confirmedFlush: Pgoutput.parseLsn(row.c!)!,
        restartLsn: Pgoutput.parseLsn(row.r!)!,
        walStatus: "reserved"
      })

      const before = yield* Setup.walPosition(admin, "fresh")
      assert.strictEqual(before.lagBytes, Number(before.current - state.confirmedFlush))
      assert.strictEqual(before.retainedBytes, Number(before.current - state.restartLsn))
      yield* sql(admin, "INSERT INTO orders (id, note) SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g")
      const after = yield* Setup.walPosition(admin, "fresh")
      assert.isAbove(after.lagBytes, before.lagBytes + 2000 * 200)
      assert.strictEqual(after.lagBytes, Number(after.current - state.confirmedFlush))

      const gone = yield* failure(Setup.walPosition(admin, "nobody_here"))
      assertTagged(gone, "PostgresConfigError", "nobody_here no longer exists")
      yield* sql(admin, "SELECT pg_drop_replication_slot('fresh')")
    })
  )

  it.effect("inspectSlot refuses bad names and slots that are not this source's kind, with the fix", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const admin = yield* open(server.url)
      const field = (error: unknown) => (error as { field: string }).field
      for (const name of ["Redflow", "red-flow", "", "s".repeat(64), "a b"]) {
        const error = yield* failure(Setup.inspectSlot(admin, name))
        assertTagged(error, "PostgresConfigError", "is not a replication slot name", "lower-case letters")
        assert.strictEqual(field(error), "slot")
      }
      assert.isTrue(Option.isNone(yield* Setup.inspectSlot(admin, "s".repeat(63))))

      yield* sql(admin, "SELECT pg_create_logical_replication_slot('decoded_as_text', 'test_decoding')")
      const plugin = yield* failure(Setup.inspectSlot(admin, "decoded_as_text"))
      assertTagged(
        plugin,
        "PostgresConfigError",
        "plugin test_decoding",
        "SELECT pg_drop_replication_slot('decoded_as_text')"
      )
      assert.strictEqual(field(plugin), "slot")

      yield* sql(admin, "SELECT pg_create_physical_replication_slot('standby_slot')")
      const physical = yield* failure(Setup.inspectSlot(admin, "standby_slot"))
      assertTagged(physical, "PostgresConfigError", "physical slot", "pg_drop_replication_slot('standby_slot')")

      yield* sql(admin, "CREATE DATABASE other")
      const other = yield* open(urlAs(server.url, "postgres", { database: "other" }))
      yield* sql(other, "SELECT pg_create_logical_replication_slot('elsewhere', 'pgoutput')")
      const elsewhere = yield* failure(Setup.inspectSlot(admin, "elsewhere"))
      assertTagged(
        elsewhere,
        "PostgresConfigError",
        "belongs to database other",
        "pg_drop_replication_slot('elsewhere')"
      )
      // The drop given in the fix works from this database.
      yield* sql(admin, "SELECT pg_drop_replication_slot('elsewhere')")
      assert.isTrue(Option.isNone(yield* Setup.inspectSlot(admin, "elsewhere")))
      yield* sql(
        admin,
        "SELECT pg_drop_replication_slot('decoded_as_text'); SELECT pg_drop_replication_slot('standby_slot')"
      )
    })
  )

  it.effect("a slot streamed by another process (pg_recvlogical) is in use, with that process's pid", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const admin = yield* open(server.url)
      yield* sql(admin, "CREATE PUBLICATION busy_pub FOR TABLE orders")
      yield* sql(admin, "SELECT pg_create_logical_replication_slot('busy', 'pgoutput')")
      const child = yield* Effect.acquireRelease(
        Effect.sync(() => {
          let stderr = ""
          const process = spawn(
            Path.join(server.binDir, "pg_recvlogical"),
            [
              "-d",
              server.url,
              "-S",
              "busy",
              "--start",
              "-f",
              "/dev/null",
              "--no-loop",
              "-o",
              "proto_version=1",
              "-o",
              "publication_names=busy_pub"
            ],
            { stdio: ["ignore", "ignore", "pipe"] }
          )
          process.stderr.on("data", (chunk: Buffer) => {
            stderr += chunk.toString()
          })
          return { process, stderr: () => stderr }
        }),
        ({ process }) =>
          Effect.promise(
            () =>
              new Promise<void>((resolve) => {
                if (process.exitCode !== null || process.signalCode !== null) return resolve()
                process.once("exit", () => resolve())
                process.kill("SIGTERM")
              })
          )
      )
      const pid = yield* eventually(
        Effect.flatMap(
          one(admin, "SELECT pid::text AS pid FROM pg_stat_replication WHERE application_name = 'pg_recvlogical'"),
          (row) => {
            if (child.process.exitCode !== null)
              return Effect.die(new Error(`pg_recvlogical exited: ${child.stderr()}`))
            return row.pid === undefined || row.pid === null
              ? notYet("pg_recvlogical streaming")
              : Effect.succeed(Number(row.pid))
          }
        )
      )
      const inUse = yield* failure(Setup.inspectSlot(admin, "busy"))
      assertTagged(inUse, "PostgresSlotInUse", `server process ${pid}`, `pg_terminate_backend(${pid})`, '"busy"')
      assert.strictEqual((inUse as { pid: number }).pid, pid)
    })
  )

  it.effect("a slot whose WAL the server removed (wal_status lost) is refused: drop it and start with a snapshot", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const admin = yield* open(server.url)
      // Other slots of this file were dropped or are in use: only this one is invalidated.
      yield* sql(admin, "SELECT pg_create_logical_replication_slot('left_behind', 'pgoutput')")
      yield* sql(admin, "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
      yield* sql(admin, "SELECT pg_reload_conf()")
      yield* eventually(
        Effect.flatMap(one(admin, "SELECT current_setting('max_slot_wal_keep_size') AS v"), (row) =>
          row.v === "1MB" ? Effect.void : notYet(`max_slot_wal_keep_size is ${row.v}`)
        )
      )
      yield* eventually(
        Effect.gen(function* () {
          for (let i = 0; i < 3; i++) {
            yield* sql(
              admin,
              "INSERT INTO lines (order_id, line, sku) SELECT g, g, 'x' FROM generate_series(1, 100) g ON CONFLICT DO NOTHING"
            )
            yield* sql(admin, "SELECT pg_switch_wal()")
          }
          yield* sql(admin, "CHECKPOINT")
          const row = yield* one(admin, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'left_behind'")
          return row.wal_status === "lost" ? undefined : yield* notYet(`wal_status ${row.wal_status}`)
        })
      )
      const lost = yield* failure(Setup.inspectSlot(admin, "left_behind"))
      assertTagged(
        lost,
        "PostgresConfigError",
        "wal_status = 'lost'",
        "changes made since were lost on the server side",
        "SELECT pg_drop_replication_slot('left_behind')",
        "snapshot"
      )
      assert.strictEqual((lost as { field: string }).field, "slot")
      const position = yield* failure(Setup.walPosition(admin, "left_behind"))
      assertTagged(position, "PostgresConfigError", "wal_status = 'lost'")
      yield* sql(admin, "ALTER SYSTEM RESET max_slot_wal_keep_size")
      yield* sql(admin, "SELECT pg_reload_conf(); SELECT pg_drop_replication_slot('left_behind')")
    })
  )
})

layer(PostgresTestServer.layer({ settings: { wal_level: "replica", max_replication_slots: 0, max_wal_senders: 0 } }))(
  "Setup on a server that is not ready for logical replication",
  (it) => {
    it.effect("checkServer names each setting with the fix, and each fix (with a restart) works", () =>
      Effect.gen(function* () {
        const server = yield* PostgresTestServer.PostgresTestServer
        const check = (expected: string, fix: string) =>
          Effect.scoped(
            Effect.gen(function* () {
              const session = yield* open(server.url)
              const error = yield* failure(Setup.checkServer(session))
              assertTagged(error, "PostgresConfigError", fix, "restart", `${server.host}:${server.port}/postgres`)
              assert.strictEqual((error as { field: string }).field, expected)
              yield* sql(session, fix)
            })
          ).pipe(Effect.andThen(Effect.orDie(server.restart)))

        yield* check("wal_level", "ALTER SYSTEM SET wal_level = logical")
        yield* check("max_replication_slots", "ALTER SYSTEM SET max_replication_slots = 10")
        yield* check("max_wal_senders", "ALTER SYSTEM SET max_wal_senders = 10")
        const session = yield* open(server.url)
        assert.isAtLeast((yield* Setup.checkServer(session)).versionNum, 150_000)
      })
    )

    it.effect("a crashed server is unavailable and retryable, for a new connection and for an open session", () =>
      Effect.gen(function* () {
        const server = yield* PostgresTestServer.PostgresTestServer
        const where = `${server.host}:${server.port}/postgres`
        const session = yield* open(server.url)
        yield* Effect.orDie(server.crash)

        const refused = yield* failure(Session.make({ url: server.url }))
        assert.strictEqual(refused.code, "ECONNREFUSED")
        const unavailable = Setup.classifyConnectError(refused, where, "postgres")
        assertTagged(unavailable, "PostgresUnavailable", where, "ECONNREFUSED")
        assert.isTrue(Setup.isRetryable(unavailable))
        const replication = yield* failure(ReplicationClient.make({ url: server.url }))
        assert.isTrue(Setup.isRetryable(Setup.classifyConnectError(replication, where, "postgres")))

        const lost: PostgresError = yield* failure(Setup.checkServer(session))
        assertTagged(lost, "PostgresUnavailable", where)
        assert.isTrue(Setup.isRetryable(lost), lost.message)

        yield* Effect.orDie(server.restart)
        const again = yield* open(server.url)
        assert.strictEqual((yield* Setup.checkServer(again)).database, "postgres")
      })
    )
  }
)
