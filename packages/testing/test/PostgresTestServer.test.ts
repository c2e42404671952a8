import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { PostgresTestServer } from "../src/index.ts"

/** Runs SQL through the server's own psql, as a user at a terminal would; fails on any SQL error. */
const psql = (server: PostgresTestServer.Server, sql: string): Effect.Effect<string> =>
  Effect.promise(
    () =>
      new Promise<string>((resolve, reject) =>
        ChildProcess.execFile(
          Path.join(server.binDir, "psql"),
          ["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", server.url, "-c", sql],
          (error, stdout, stderr) => (error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout.trim()))
        )
      )
  )

describe("PostgresTestServer", () => {
  it.effect("starts a server where logical decoding with pgoutput works", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.make()
      assert.match(server.url, /^postgres:\/\/postgres@127\.0\.0\.1:\d+\/postgres$/)
      assert.strictEqual(yield* psql(server, "SHOW wal_level"), "logical")
      assert.isAtLeast(Number(yield* psql(server, "SHOW max_replication_slots")), 4)
      assert.isAtLeast(Number(yield* psql(server, "SHOW max_wal_senders")), 4)
      const slot = yield* psql(
        server,
        "SELECT slot_name FROM pg_create_logical_replication_slot('test_slot', 'pgoutput')"
      )
      assert.strictEqual(slot, "test_slot")
      assert.strictEqual(
        yield* psql(
          server,
          "SELECT plugin || ' ' || slot_type FROM pg_replication_slots WHERE slot_name = 'test_slot'"
        ),
        "pgoutput logical"
      )
    })
  )

  it.effect("keeps committed rows across a crash (pg_ctl stop -m immediate) and a restart on the same port", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.make()
      yield* psql(server, "CREATE TABLE t (id int PRIMARY KEY, v text)")
      yield* psql(server, "INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 1000) g")
      const before = server.pid()
      yield* server.crash
      assert.isFalse(server.isRunning())
      assert.isFalse(PostgresTestServer.isAlive(before), "the postmaster is gone after the crash")
      yield* server.restart
      assert.notStrictEqual(server.pid(), before)
      assert.strictEqual(yield* psql(server, "SELECT count(*) || ' ' || max(v) FROM t"), "1000 row 999")
      // The recovery path ran: an immediate stop writes no shutdown checkpoint.
      assert.match(server.output(), /database system was interrupted|not properly shut down/)
    })
  )

  it.effect("stops the postmaster and its backends and removes the data dir when the scope closes", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const server = yield* PostgresTestServer.make().pipe(Scope.provide(scope))
      const pid = server.pid()
      const backend = Number(
        yield* psql(server, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
      )
      assert.isTrue(PostgresTestServer.isAlive(pid))
      assert.isTrue(PostgresTestServer.isAlive(backend))
      assert.isTrue(Fs.existsSync(server.dataDir))
      yield* Scope.close(scope, Exit.void)
      assert.isFalse(PostgresTestServer.isAlive(pid))
      assert.isFalse(PostgresTestServer.isAlive(backend))
      assert.isFalse(Fs.existsSync(server.dataDir))
    })
  )

  it.effect("runs in its own process group, so a terminal's Ctrl-C to the test's group does not reach it", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.make()
      const stat = Fs.readFileSync(`/proc/${server.pid()}/stat`, "utf8")
      const pgid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2])
      assert.strictEqual(pgid, server.pid())
      assert.notStrictEqual(pgid, process.pid)
    })
  )

  it.effect("fails with PostgresNotInstalled naming what is missing when the binaries are absent", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(PostgresTestServer.make({ binDir: "/nonexistent/bin" }))
      assert.strictEqual(error._tag, "PostgresNotInstalled")
      assert.include(error.message, "/nonexistent/bin lacks initdb, postgres, pg_ctl, pg_isready")
      assert.include(error.message, "apt-get install -y postgresql")
    })
  )

  it("spawnPostgresServer works from plain async code", async () => {
    const server = await PostgresTestServer.spawnPostgresServer()
    const pid = server.pid()
    try {
      assert.isTrue(server.isRunning())
      await server.crash()
      await server.restart()
      assert.isTrue(server.isRunning())
    } finally {
      await server.stop()
    }
    assert.isFalse(PostgresTestServer.isAlive(pid))
    assert.isFalse(PostgresTestServer.isAlive(server.pid()))
  })
})
