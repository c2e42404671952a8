/**
 * `redflow run` end to end, as a user runs it: a real PostgreSQL (wal_level=logical) and a real Redis, the CLI as a
 * child process. Changes made in the database land in the stream; SIGTERM drains and exits 0 with the checkpoint
 * stored and the slot acknowledged; a second run sends only what is new; and each way it cannot start has its exit
 * code and a line that says what to do.
 */
import { execFile } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as PostgresTestServer from "@redflow/testing/PostgresTestServer"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { run, start, waitFor, withClient } from "./support.ts"

let pg: PostgresTestServer.SpawnedServer
let redis: RedisTestServer.SpawnedServer
const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "redflow-run-"))

beforeAll(async () => {
  ;[pg, redis] = await Promise.all([PostgresTestServer.spawnPostgresServer(), RedisTestServer.spawnRedisServer()])
})

afterAll(async () => {
  await Promise.all([pg?.stop(), redis?.stop()])
  Fs.rmSync(dir, { recursive: true, force: true })
})

/** Runs SQL with psql (the server's own client); returns the unaligned output. */
const sql = async (text: string, url = pg.url): Promise<string> =>
  (
    await promisify(execFile)(Path.join(pg.binDir, "psql"), [url, "-v", "ON_ERROR_STOP=1", "-Atqc", text], {
      env: { ...process.env, PGCONNECT_TIMEOUT: "10" }
    })
  ).stdout.trim()

interface Entry {
  readonly op: string
  readonly table: string
  readonly key: string
  readonly event: {
    readonly op: string
    readonly after: Record<string, unknown> | null
    readonly before: Record<string, unknown> | null
    readonly source: { readonly schema?: string; readonly table: string; readonly snapshot?: boolean }
  }
}

/** Every entry of a stream, its fields by name. */
const entries = (stream: string): Promise<Array<Entry>> =>
  withClient(redis.url, async (client) => {
    const page = (await client.xrange(stream, "-", "+")) as Array<[string, Array<string>]>
    return page.map(([, flat]) => {
      const fields: Record<string, string> = {}
      for (let i = 0; i < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!
      return { op: fields.op!, table: fields.table!, key: fields.key!, event: JSON.parse(fields.event!) }
    })
  })

const xlen = (stream: string) => withClient(redis.url, (client) => client.xlen(stream))

/** Waits until the stream holds an entry with this key and op. */
const untilEntry = (stream: string, op: string, key: string) =>
  waitFor(async () => ((await entries(stream)).some((e) => e.op === op && e.key === key) ? true : undefined), 150_000)

const summaryOf = (stdout: string) => JSON.parse(stdout) as Record<string, any>

describe("redflow run: PostgreSQL into Redis Streams", () => {
  it("writes inserts, updates and deletes; SIGTERM drains and exits 0; a second run sends only what is new", async () => {
    await sql(
      "CREATE TABLE shop_orders (id int PRIMARY KEY, item text NOT NULL, qty int NOT NULL);" +
        "INSERT INTO shop_orders VALUES (1, 'apple', 3), (2, 'pear', 1)"
    )
    const stream = "cdc.shop_orders"
    const checkpoint = Path.join(dir, "shop.checkpoints.json")
    const args = [
      "--json",
      "run",
      // A password in the URL (the test server trusts loopback, so any works): it must never be printed.
      "--source",
      pg.url.replace("postgres@", "postgres:hunter2@"),
      "--tables",
      "public.shop_orders",
      "--redis",
      redis.url,
      "--stream",
      "cdc.${source.table}",
      "--key",
      "${key.id}",
      "--checkpoint",
      checkpoint,
      "--pipeline",
      "shop",
      "--metrics-port",
      "0"
    ]
    const first = start(args)
    // The rows already there come first (snapshot: initial), then the changes.
    await untilEntry(stream, "r", "2")
    await sql("INSERT INTO shop_orders VALUES (3, 'plum', 7)")
    await sql("UPDATE shop_orders SET qty = 9 WHERE id = 1")
    const beforeLast = await sql("SELECT pg_current_wal_insert_lsn()")
    await sql("DELETE FROM shop_orders WHERE id = 2")
    await untilEntry(stream, "d", "2")

    const written = await entries(stream)
    expect(written.map((e) => [e.op, e.table, e.key])).toEqual([
      ["r", "shop_orders", "1"],
      ["r", "shop_orders", "2"],
      ["c", "shop_orders", "3"],
      ["u", "shop_orders", "1"],
      ["d", "shop_orders", "2"]
    ])
    expect(written.map((e) => e.event.after)).toEqual([
      { id: 1, item: "apple", qty: 3 },
      { id: 2, item: "pear", qty: 1 },
      { id: 3, item: "plum", qty: 7 },
      { id: 1, item: "apple", qty: 9 },
      null
    ])
    expect(written[4]!.event.before).toMatchObject({ id: 2 })
    expect(written.every((e) => e.event.source.schema === "public" && e.event.source.table === "shop_orders")).toBe(
      true
    )

    // Health and metrics while it runs (with --json the metrics line is on stderr).
    const metricsUrl = await waitFor(() => first.out.stderr.match(/Metrics: (http:\/\/\S+)\/metrics/)?.[1])
    const ready = await fetch(`${metricsUrl}/ready`)
    expect(ready.status).toBe(200)
    const health = (await (await fetch(`${metricsUrl}/health`)).json()) as { components: Record<string, any> }
    expect(health.components.shop?.state).toBe("running")
    const metrics = await (await fetch(`${metricsUrl}/metrics`)).text()
    expect(metrics).toMatch(/sink_events_total\{[^}]*pipeline="shop"[^}]*\} 5\b/)
    // The progress line, every 5 s when stderr is not a terminal.
    await waitFor(() =>
      /redflow: read 5 · written 5 events · \d+ events\/s · replication lag /.test(first.out.stderr) ? true : undefined
    )

    first.child.kill("SIGTERM")
    const stopped = await first.done
    expect(stopped.code, stopped.stderr).toBe(0)
    const summary = summaryOf(stopped.stdout)
    expect(summary).toMatchObject({
      command: "run",
      pipeline: "shop",
      slot: "shop",
      publication: "shop",
      tables: ["public.shop_orders"],
      events: 5,
      written: 5,
      stopped: true,
      resumedFrom: null,
      checkpointStore: { type: "file", path: checkpoint },
      streams: [{ stream, written: 5, length: 5 }]
    })
    expect(summary.source).toBe(pg.url.replace("postgres@", "postgres:***@"))
    // The checkpoint file holds the summary's checkpoint, and the slot was acknowledged past the last transaction.
    const stored = JSON.parse(Fs.readFileSync(checkpoint, "utf8"))
    expect(stored.checkpoints.shop).toBe(summary.checkpoint)
    expect(
      await sql(
        `SELECT confirmed_flush_lsn > '${beforeLast}'::pg_lsn, active FROM pg_replication_slots WHERE slot_name = 'shop'`
      )
    ).toBe("t|f")
    expect(stopped.stdout + stopped.stderr).not.toContain("hunter2")

    // While it is stopped, a change; then a second run: that change and the next one, and nothing sent again.
    await sql("INSERT INTO shop_orders VALUES (4, 'fig', 2)")
    const second = start(args)
    await untilEntry(stream, "c", "4")
    await sql("UPDATE shop_orders SET item = 'plum (ripe)' WHERE id = 3")
    await untilEntry(stream, "u", "3")
    second.child.kill("SIGTERM")
    const again = await second.done
    expect(again.code, again.stderr).toBe(0)
    const all = await entries(stream)
    expect(all.slice(5).map((e) => [e.op, e.key, e.event.after])).toEqual([
      ["c", "4", { id: 4, item: "fig", qty: 2 }],
      ["u", "3", { id: 3, item: "plum (ripe)", qty: 7 }]
    ])
    expect(all).toHaveLength(7)
    const resumed = summaryOf(again.stdout)
    expect(resumed).toMatchObject({ events: 2, written: 2, resumedFrom: summary.checkpoint, stopped: true })
    expect(JSON.parse(Fs.readFileSync(checkpoint, "utf8")).checkpoints.shop).toBe(resumed.checkpoint)
    expect(again.stdout + again.stderr).not.toContain("hunter2")
  })

  it("--config with ${ENV} references, a flag over the file, and checkpoints in a Redis hash", async () => {
    await sql(
      "CREATE TABLE crm_customers (id int PRIMARY KEY, name text);" + "INSERT INTO crm_customers VALUES (1, 'old')"
    )
    const config = Path.join(dir, "crm.yaml")
    Fs.writeFileSync(
      config,
      [
        "pipeline: crm",
        "source:",
        "  url: ${CRM_DATABASE_URL}",
        "  tables: [crm_customers]",
        "  snapshot: never",
        "redis:",
        "  url: ${CRM_REDIS_URL}",
        "sink:",
        "  stream: not.this.one",
        "  key: ${key.id}",
        "checkpoint:",
        "  redis: crm:checkpoints",
        ""
      ].join("\n")
    )
    const child = start(["--json", "run", "--config", config, "--stream", "crm.${source.table}"], {
      env: { CRM_DATABASE_URL: pg.url, CRM_REDIS_URL: redis.url }
    })
    // snapshot: never, so the row already there is not sent. Wait until the slot exists before changing rows.
    await waitFor(
      async () =>
        (await sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'crm'")) === "1" ? true : undefined,
      150_000
    )
    await sql("INSERT INTO crm_customers VALUES (2, 'new')")
    await untilEntry("crm.crm_customers", "c", "2")
    child.child.kill("SIGTERM")
    const result = await child.done
    expect(result.code, result.stderr).toBe(0)
    expect((await entries("crm.crm_customers")).map((e) => [e.op, e.key, e.event.after])).toEqual([
      ["c", "2", { id: 2, name: "new" }]
    ])
    expect(await xlen("not.this.one")).toBe(0)
    const summary = summaryOf(result.stdout)
    expect(summary).toMatchObject({
      pipeline: "crm",
      slot: "crm",
      events: 1,
      checkpointStore: { type: "redis", key: "crm:checkpoints" }
    })
    expect(await withClient(redis.url, (c) => c.hget("crm:checkpoints", "crm"))).toBe(summary.checkpoint)
  })
})

describe("redflow run: what keeps it from starting", () => {
  it("exits 2 on wal_level replica and on a missing table, 3 for a role without REPLICATION, 1 when a server is unreachable; nothing is written", async () => {
    const replica = await PostgresTestServer.spawnPostgresServer({ settings: { wal_level: "replica" } })
    try {
      await sql("CREATE TABLE present (id int PRIMARY KEY); CREATE ROLE norep LOGIN; GRANT SELECT ON present TO norep")
      const free = await RedisTestServer.freePort()
      const common = (pipeline: string) => ["--stream", `fail.${pipeline}`, "--pipeline", pipeline]
      const cases = [
        {
          name: "wal_level replica",
          args: ["--source", replica.url, "--tables", "present", "--redis", redis.url, ...common("walreplica")],
          code: 2,
          line: /wal_level.*logical.*Fix: /
        },
        {
          name: "a missing table",
          args: ["--source", pg.url, "--tables", "public.absent", "--redis", redis.url, ...common("missing")],
          code: 2,
          line: /^redflow: error: tables: .*absent.* does not exist .*Fix: /
        },
        {
          name: "a role without REPLICATION",
          args: [
            "--source",
            pg.url.replace("postgres@", "norep@"),
            "--tables",
            "present",
            "--redis",
            redis.url,
            ...common("norep")
          ],
          code: 3,
          line: /^redflow: error: PostgreSQL at \S+ refused role "norep": .*REPLICATION.*Fix: ALTER ROLE norep WITH REPLICATION/
        },
        {
          name: "PostgreSQL unreachable",
          args: [
            "--source",
            `postgres://postgres@127.0.0.1:${free}/postgres`,
            "--tables",
            "present",
            "--redis",
            redis.url,
            ...common("nopg")
          ],
          code: 1,
          line: new RegExp(
            `^redflow: error: PostgreSQL at 127\\.0\\.0\\.1:${free}/postgres is unavailable: .*ECONNREFUSED`
          )
        },
        {
          name: "Redis unreachable",
          args: [
            "--source",
            pg.url,
            "--tables",
            "present",
            "--redis",
            `redis://127.0.0.1:${free}`,
            ...common("noredis")
          ],
          code: 1,
          line: new RegExp(
            `^redflow: error: Redis is not reachable: redis://127\\.0\\.0\\.1:${free}: connection refused`
          )
        }
      ]
      const results = await Promise.all(cases.map((c) => run(["run", ...c.args])))
      for (const [i, r] of results.entries()) {
        const c = cases[i]!
        expect(r.code, `${c.name}: ${r.stderr}`).toBe(c.code)
        const errors = r.stderr.split("\n").filter((l) => l.startsWith("redflow: error: "))
        expect(errors, `${c.name}: ${r.stderr}`).toHaveLength(1)
        expect(errors[0], c.name).toMatch(c.line)
      }
      for (const pipeline of ["walreplica", "missing", "norep", "nopg"]) expect(await xlen(`fail.${pipeline}`)).toBe(0)
    } finally {
      await replica.stop()
    }
  })
})
