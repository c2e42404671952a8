/**
 * The harness as a user meets it: `pnpm example <name>` (examples/run.ts) lists the examples when the name is wrong,
 * runs one against the PostgreSQL and Redis it is given (DATABASE_URL, REDIS_URL) saying what it does, and leaves
 * nothing behind on those servers: no slot, publication or schema in PostgreSQL, no key of the run in Redis.
 */
import { spawn } from "node:child_process"
import * as Path from "node:path"
import { expect, it, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Redis } from "ioredis"
import pg from "pg"
import * as PostgresTestServer from "@redflow/testing/PostgresTestServer"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"

const here = import.meta.dirname

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** `pnpm example <args>` as a process (run.ts on this Node), DATABASE_URL and REDIS_URL only as given. */
const example = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  Effect.callback<Run>((resume) => {
    const { REDIS_URL: _r, DATABASE_URL: _d, ...inherited } = process.env
    const child = spawn(process.execPath, [Path.join(here, "run.ts"), ...args], { env: { ...inherited, ...env } })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("close", (code) => resume(Effect.succeed({ code, stdout, stderr })))
    return Effect.sync(() => {
      if (child.exitCode === null) child.kill("SIGKILL")
    })
  })

it.effect("pnpm example with an unknown name lists the examples and exits with code 2", () =>
  Effect.gen(function* () {
    const result = yield* example(["no-such-example"])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/^No example named "no-such-example"\. Run one with pnpm example <name>:\n/)
    for (const name of ["cache-invalidation", "job-queue", "live-notifications", "consumer-go"]) {
      expect(result.stderr).toMatch(new RegExp(`^  ${name} +\\S`, "m"))
    }
    expect(result.stderr).not.toMatch(/^ {2}(harness|shared|run) /m)
  })
)

layer(Layer.mergeAll(PostgresTestServer.layer(), RedisTestServer.layer({ useEnv: false })), {
  excludeTestServices: true
})("against the servers it is given", (it) => {
  it.effect(
    "pnpm example cache-invalidation with DATABASE_URL and REDIS_URL: says what it does, exit 0, nothing left behind",
    () =>
      Effect.gen(function* () {
        const postgres = yield* PostgresTestServer.PostgresTestServer
        const redis = yield* RedisTestServer.RedisTestServer
        const result = yield* example(["cache-invalidation"], {
          DATABASE_URL: postgres.url,
          REDIS_URL: redis.url,
          UPDATES: "200"
        })
        expect(result.stderr).toBe("")
        expect(result.code).toBe(0)
        const server = `127.0.0.1:${postgres.port}/postgres`
        const schema = /^Tables: products in schema (redflow_cache_invalidation_[a-z0-9]+), created/m.exec(
          result.stdout
        )?.[1]
        expect(schema).toBeDefined()
        expect(result.stdout).toContain(`Redis: ${redis.url} (REDIS_URL)\n`)
        expect(result.stdout).toMatch(new RegExp(`^PostgreSQL \\d+\\.\\d+: ${server} \\(DATABASE_URL\\)$`, "m"))
        expect(result.stdout).toContain(`→ cdc.${schema}.products, running in this process.`)
        expect(result.stdout).toMatch(
          /^\d+ reads \(\d+% from the cache\); 0 returned a row older than one already evicted; 0 rows differ/m
        )
        expect(result.stdout).toMatch(
          /^Stale window \(commit → eviction\): p50 \d+ ms, p99 \d+ ms, max \d+ ms over 200 updates\.$/m
        )
        expect(result.stdout).toContain(`Dropped slot, publication and schema ${schema} from ${server}.`)

        const db = new pg.Client({ connectionString: postgres.url })
        yield* Effect.acquireRelease(
          Effect.promise(() => db.connect()),
          () => Effect.promise(() => db.end())
        )
        const left = yield* Effect.promise(() =>
          db.query(
            `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1)::int AS slots,
                    (SELECT count(*) FROM pg_publication WHERE pubname = $1)::int AS publications,
                    (SELECT count(*) FROM pg_namespace WHERE nspname = $1)::int AS schemas`,
            [schema]
          )
        )
        expect(left.rows[0]).toEqual({ slots: 0, publications: 0, schemas: 0 })
        const client = new Redis(redis.url)
        yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
        expect(yield* Effect.promise(() => client.keys(`*${schema}*`))).toEqual([])
      }),
    { timeout: 120_000 }
  )

  it.effect(
    "SIGTERM to pnpm example session-sync mid-run: the example stops in order and drops its slot, exit 130",
    () =>
      Effect.gen(function* () {
        const postgres = yield* PostgresTestServer.PostgresTestServer
        const redis = yield* RedisTestServer.RedisTestServer
        const child = spawn(process.execPath, [Path.join(here, "run.ts"), "session-sync"], {
          env: { ...process.env, DATABASE_URL: postgres.url, REDIS_URL: redis.url }
        })
        yield* Effect.addFinalizer(() => Effect.sync(() => child.exitCode === null && child.kill("SIGKILL")))
        let stdout = ""
        let stderr = ""
        child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
        const exited = new Promise<number | null>((resolve) => child.on("close", resolve))
        // Stopped while the application runs: its instances started, the workload not yet done.
        yield* Effect.callback<void>((resume) => {
          child.stdout.on("data", (chunk: Buffer) => {
            stdout += chunk.toString()
            if (stdout.includes("Four application instances")) resume(Effect.void)
          })
          child.on("close", () => resume(Effect.void))
        })
        child.kill("SIGTERM")
        const code = yield* Effect.promise(() => exited)
        expect(stderr).toBe("")
        expect(code).toBe(130)
        expect(stdout).not.toContain("Convergence")
        const schema = /in schema (redflow_session_sync_[a-z0-9]+)/.exec(stdout)?.[1]
        expect(stdout).toContain(
          `Dropped slot, publication and schema ${schema} from 127.0.0.1:${postgres.port}/postgres.`
        )
        const db = new pg.Client({ connectionString: postgres.url })
        yield* Effect.acquireRelease(
          Effect.promise(() => db.connect()),
          () => Effect.promise(() => db.end())
        )
        const left = yield* Effect.promise(() =>
          db.query(
            `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1)::int AS slots,
                    (SELECT count(*) FROM pg_namespace WHERE nspname = $1)::int AS schemas`,
            [schema]
          )
        )
        expect(left.rows[0]).toEqual({ slots: 0, schemas: 0 })
        const client = new Redis(redis.url)
        yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
        expect(yield* Effect.promise(() => client.keys(`*${schema}*`))).toEqual([])
      }),
    { timeout: 120_000 }
  )

  it.effect("a DATABASE_URL that is not a postgres:// URL: one line naming it and the fix, exit code 1", () =>
    Effect.gen(function* () {
      const redis = yield* RedisTestServer.RedisTestServer
      const result = yield* example(["cache-invalidation"], { DATABASE_URL: "mysql://db/shop", REDIS_URL: redis.url })
      expect(result.code).toBe(1)
      expect(result.stderr.trim().split("\n")).toEqual([
        "ExampleSetupError: DATABASE_URL: not a postgres:// URL. Fix: set DATABASE_URL=postgres://user@host:5432/db " +
          "(a server with wal_level=logical), or unset it and the example starts its own PostgreSQL"
      ])
    })
  )
})
