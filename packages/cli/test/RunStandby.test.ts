/**
 * Two `redflow run` processes of one pipeline (`--guarantee exactly-once --checkpoint redis --lease 2s`) against a
 * PostgreSQL (wal_level=logical) and a Redis the test starts: one streams from the slot, the other stands by without
 * opening it. The active one is SIGKILLed while rows are being inserted; the standby takes the lease, opens the slot
 * once the server has let the dead connection go, resumes from the checkpoint in Redis, and the stream ends with
 * every inserted row exactly once, in commit order.
 */
import { execFile } from "node:child_process"
import * as Path from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as PostgresTestServer from "@redflow/testing/PostgresTestServer"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { start, unique, waitFor, withClient } from "./support.ts"

let pg: PostgresTestServer.SpawnedServer
let redis: RedisTestServer.SpawnedServer

beforeAll(async () => {
  ;[pg, redis] = await Promise.all([
    PostgresTestServer.spawnPostgresServer(),
    RedisTestServer.spawnRedisServer({ args: ["--save", ""] })
  ])
})

afterAll(async () => {
  await Promise.all([pg?.stop(), redis?.stop()])
})

const sql = async (text: string): Promise<string> =>
  (
    await promisify(execFile)(Path.join(pg.binDir, "psql"), [pg.url, "-v", "ON_ERROR_STOP=1", "-Atqc", text], {
      env: { ...process.env, PGCONNECT_TIMEOUT: "10" }
    })
  ).stdout.trim()

/** Inserts ids from..to, ten rows per transaction. */
const insert = async (table: string, from: number, to: number) => {
  for (let id = from; id <= to; id += 10) {
    const last = Math.min(to, id + 9)
    await sql(`INSERT INTO ${table} SELECT g, g * 2 FROM generate_series(${id}, ${last}) g`)
  }
}

/** The `id` of every row the stream carries (an insert, or a read of the initial snapshot), in stream order. */
const insertedIds = (stream: string) =>
  withClient(redis.url, async (client) => {
    const page = (await client.xrange(stream, "-", "+")) as Array<[string, Array<string>]>
    return (
      page
        .map(([, flat]) => JSON.parse(flat[flat.indexOf("event") + 1]!) as { op: string; after: { id: number } | null })
        // A row inserted before the active process created the slot comes as a snapshot read ("r"), after it as an insert.
        .filter((event) => event.op === "c" || event.op === "r")
        .map((event) => event.after!.id)
    )
  })

const holding = (out: { stderr: string }) => out.stderr.includes("holding the lease")
const standingBy = (out: { stderr: string }) => out.stderr.includes("standby: the lease is held by")

describe("redflow run --lease: a standby that takes the PostgreSQL pipeline over", () => {
  it("the active process SIGKILLed while rows are inserted: the standby opens the slot, every row once, in order", async () => {
    const pipeline = unique("pgstandby").replace(/[^a-z0-9_]/g, "_")
    const table = `items_${pipeline}`
    const stream = `${pipeline}.items`
    await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, n int NOT NULL)`)
    const args = [
      "run",
      "--source",
      pg.url,
      "--tables",
      table,
      "--redis",
      redis.url,
      "--stream",
      stream,
      "--guarantee",
      "exactly-once",
      "--checkpoint",
      "redis",
      "--lease",
      "2s",
      "--pipeline",
      pipeline
    ]
    const active = start(args, { timeoutMs: 380_000 })
    await waitFor(() => (holding(active.out) ? true : undefined), 120_000)
    await insert(table, 1, 200)
    await waitFor(async () => ((await insertedIds(stream)).length >= 100 ? true : undefined), 120_000)

    const standby = start(args, { timeoutMs: 380_000 })
    await waitFor(() => (standingBy(standby.out) ? true : undefined), 120_000)
    // The standby holds neither the lease nor the slot: only the active process streams from it.
    expect(standby.out.stderr).not.toContain("holding the lease")
    expect(await sql(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = '${pipeline}' AND active`)).toBe("1")

    const inserting = insert(table, 201, 400)
    await waitFor(async () => ((await insertedIds(stream)).length >= 220 ? true : undefined), 120_000)
    active.child.kill("SIGKILL")
    expect((await active.done).signal).toBe("SIGKILL")
    await inserting
    await insert(table, 401, 600)

    await waitFor(() => (holding(standby.out) ? true : undefined), 120_000)
    await waitFor(async () => ((await insertedIds(stream)).length >= 600 ? true : undefined), 150_000).catch(
      async (error: Error) => {
        const ids = await insertedIds(stream)
        const seen = new Set(ids)
        const missing = Array.from({ length: 600 }, (_, i) => i + 1).filter((id) => !seen.has(id))
        const stderr = standby.out.stderr.replace(/^redflow: read .*\n/gm, "")
        throw new Error(
          `${error.message}: ${ids.length} rows in the stream (last ${ids.at(-1)}), missing ${missing.join(",")}; active:\n${active.out.stderr.replace(/^redflow: read .*\n/gm, "")}\nstandby:\n${stderr}`
        )
      }
    )
    standby.child.kill("SIGTERM")
    const stopped = await standby.done
    expect(stopped.code, stopped.stderr).toBe(0)
    expect(stopped.stderr).toMatch(/resuming after checkpoint \S+; .*holding the lease/)
    expect(await insertedIds(stream)).toEqual(Array.from({ length: 600 }, (_, i) => i + 1))
  }, 400_000)
})
