/**
 * examples/postgres-to-redis.ts, the program of packages/postgres/README.md, run as a user runs it: against a
 * PostgreSQL with `wal_level=logical` and a Redis, rows inserted while it runs land in `cdc.orders`, keyed by id, and
 * SIGTERM stops it (exit 130, NodeRuntime.runMain's code for an interrupted program) with the checkpoint saved.
 */
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { expect, it, layer } from "@effect/vitest"
import { Effect, Layer, Schedule } from "effect"
import { Redis } from "ioredis"
import pg from "pg"
import * as PostgresTestServer from "@redflow/testing/PostgresTestServer"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"

const here = import.meta.dirname

it("examples/postgres-to-redis.ts is the program of packages/postgres/README.md, line for line", () => {
  const readme = Fs.readFileSync(Path.join(here, "..", "packages", "postgres", "README.md"), "utf8")
  const snippet = /```ts\n([\s\S]*?)\n```/.exec(readme)?.[1]
  const file = Fs.readFileSync(Path.join(here, "postgres-to-redis.ts"), "utf8")
  expect(snippet).toBeDefined()
  expect(file.replace(/^\/\*\*[\s\S]*?\*\/\n/, "")).toBe(`${snippet}\n`)
})

layer(Layer.mergeAll(PostgresTestServer.layer(), RedisTestServer.layer({ useEnv: false })), {
  excludeTestServices: true
})("postgres-to-redis against real servers", (it) => {
  it.effect(
    "rows inserted while it runs land in cdc.orders keyed by id; SIGTERM stops it and the checkpoint is saved",
    () =>
      Effect.gen(function* () {
        const postgres = yield* PostgresTestServer.PostgresTestServer
        const redis = yield* RedisTestServer.RedisTestServer
        const db = new pg.Client({ connectionString: postgres.url })
        yield* Effect.acquireRelease(
          Effect.promise(() => db.connect()),
          () => Effect.promise(() => db.end())
        )
        yield* Effect.promise(() => db.query("CREATE TABLE orders (id int PRIMARY KEY, total numeric)"))
        yield* Effect.promise(() => db.query("INSERT INTO orders VALUES (1, 9.5)"))
        const cwd = Fs.mkdtempSync(Path.join(Os.tmpdir(), "redflow-postgres-example-"))
        yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(cwd, { recursive: true, force: true })))
        const child = spawn(process.execPath, [Path.join(here, "postgres-to-redis.ts")], {
          cwd,
          env: { ...process.env, DATABASE_URL: postgres.url, REDIS_URL: redis.url }
        })
        let stderr = ""
        child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
        const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)))
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            if (child.exitCode === null) child.kill("SIGKILL")
          })
        )
        const client = new Redis(redis.url)
        yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
        const length = (n: number) =>
          Effect.promise(() => client.xlen("cdc.orders")).pipe(
            Effect.flatMap((len) => (len >= n ? Effect.succeed(len) : Effect.fail(`XLEN ${len} of ${n}: ${stderr}`))),
            Effect.retry({ schedule: Schedule.spaced("100 millis"), times: 600 })
          )
        // The snapshot's row, then rows inserted while it streams.
        yield* length(1)
        yield* Effect.promise(() => db.query("INSERT INTO orders VALUES (2, 20), (3, 30.25)"))
        yield* Effect.promise(() => db.query("UPDATE orders SET total = 10 WHERE id = 1"))
        expect(yield* length(4)).toBe(4)
        const entries = yield* Effect.promise(() => client.xrange("cdc.orders", "-", "+"))
        const fields = entries.map(([, f]) =>
          Object.fromEntries(Array.from({ length: f.length / 2 }, (_, i) => [f[2 * i], f[2 * i + 1]]))
        )
        expect(fields.map((f) => [f.op, f.key])).toEqual([
          ["r", "1"],
          ["c", "2"],
          ["c", "3"],
          ["u", "1"]
        ])
        expect(JSON.parse(fields[3]!.event!).after).toEqual({ id: 1, total: "10" })
        child.kill("SIGTERM")
        const code = yield* Effect.promise(() => exited)
        expect(stderr).toBe("")
        // NodeRuntime.runMain ends an interrupted program with 130, after its finalizers ran.
        expect(code).toBe(130)
        const checkpoint = Fs.readFileSync(Path.join(cwd, "shop.checkpoint.json"), "utf8")
        expect(checkpoint).toContain(JSON.parse(fields[3]!.event!).position)
      }),
    { timeout: 150_000 }
  )
})
