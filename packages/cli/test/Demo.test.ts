/**
 * `redflow consume` and `redflow demo` as child processes against a real Redis (and, for the demo, a real
 * PostgreSQL: its own, or one given by DATABASE_URL): what they report must be what is in the streams, the group and
 * the database.
 */
import { execFile } from "node:child_process"
import * as Net from "node:net"
import * as Path from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as PostgresTestServer from "@redflow/testing/PostgresTestServer"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { inTerminal, run, start, unique, waitFor, withClient } from "./support.ts"

let server: Awaited<ReturnType<typeof RedisTestServer.start>>

beforeAll(async () => {
  server = await RedisTestServer.start()
})

afterAll(async () => {
  await server?.stop()
})

interface PendingSummary {
  readonly pending: number
  readonly consumers: ReadonlyArray<{ readonly name: string; readonly pending: number }>
}

describe("redflow consume", () => {
  it("--count N exits 0 after N messages were processed and acknowledged", async () => {
    const stream = unique("consume")
    const produced = await run(["produce", "--redis", server.url, "--stream", stream, "--events", "500"])
    expect(produced.code, produced.stderr).toBe(0)
    const args = ["consume", "--redis", server.url, "--stream", stream, "--group", "workers"]

    const first = await run([...args, "--consumer", "w1", "--count", "120", "--print", "--json"])
    expect(first.code, first.stderr).toBe(0)
    const lines = first.stdout.trim().split("\n")
    // --print: one JSON line per event, then the summary object.
    const printed = lines.slice(0, 120).map((l) => JSON.parse(l))
    const summary = JSON.parse(lines.slice(120).join("\n"))
    expect(summary).toMatchObject({ command: "consume", processed: 120, acked: 120, deadLettered: 0 })
    expect(printed.map((p) => p.stream)).toEqual(Array(120).fill(stream))
    expect(new Set(printed.map((p) => p.event.id)).size).toBe(120)

    // Acknowledged means not pending: none of the printed entries is in the group's pending list.
    const pendingIds = await withClient(server.url, async (c) =>
      ((await c.xpending(stream, "workers", "-", "+", 1000)) as Array<[string]>).map(([id]) => id)
    )
    for (const p of printed) expect(pendingIds).not.toContain(p.entry)
    expect(summary.pending).toBe(pendingIds.length)

    // A second consumer takes the next 80; the group has then acknowledged 200 entries in all.
    const second = await run([...args, "--consumer", "w2", "--count", "80", "--json"])
    expect(second.code, second.stderr).toBe(0)
    expect(JSON.parse(second.stdout)).toMatchObject({ processed: 80, acked: 80 })
    const groups = await withClient(server.url, (c) => c.xinfo("GROUPS", stream))
    const info = groups as Array<Array<string | number>>
    const entry = Object.fromEntries(
      Array.from({ length: info[0]!.length / 2 }, (_, i) => [info[0]![2 * i], info[0]![2 * i + 1]])
    )
    expect(Number(entry["entries-read"]) - Number(entry.pending)).toBe(200)
  })

  it("--claim-idle takes over a crashed consumer's entries; --dead-letter receives poison entries", async () => {
    const stream = unique("claim")
    const dead = `${stream}.dlq`
    // The poison entry comes first, so the crashed consumer holds it: every good entry is needed to reach --count, and
    // the 9 good entries it holds can only come back through XAUTOCLAIM, which brings the poison along.
    await withClient(server.url, (c) => c.xadd(stream, "*", "id", "poison", "event", "{not json"))
    await run(["produce", "--redis", server.url, "--stream", stream, "--events", "50"])
    await withClient(server.url, async (c) => {
      await c.xgroup("CREATE", stream, "g", "0")
      // "crashed" reads 10 entries and never acknowledges them.
      await c.xreadgroup("GROUP", "g", "crashed", "COUNT", 10, "STREAMS", stream, ">")
    })
    await new Promise((r) => setTimeout(r, 300))
    const r = await run([
      "consume",
      "--redis",
      server.url,
      "--stream",
      stream,
      "--group",
      "g",
      "--consumer",
      "rescuer",
      "--count",
      "50",
      "--claim-idle",
      "200",
      "--dead-letter",
      dead,
      "--json"
    ])
    expect(r.code, r.stderr).toBe(0)
    const summary = JSON.parse(r.stdout)
    expect(summary).toMatchObject({ processed: 50, acked: 50, deadLettered: 1 })
    expect(summary.claimed).toBeGreaterThanOrEqual(10)
    const p = JSON.parse((await run(["stream", "pending", stream, "g", "--redis", server.url, "--json"])).stdout)
    expect((p as PendingSummary).pending).toBe(0)
    const dl = await withClient(server.url, (c) => c.xrange(dead, "-", "+"))
    expect(dl).toHaveLength(1)
    expect(dl[0]![1]).toContain("poison")
  })

  it("./node_modules/.bin/redflow consume stopped by SIGTERM drains and exits 0, the documented code", async () => {
    const stream = unique("sigterm")
    const produced = await run(["produce", "--redis", server.url, "--stream", stream, "--events", "200"])
    expect(produced.code, produced.stderr).toBe(0)
    const consumer = start(
      ["consume", "--redis", server.url, "--stream", stream, "--group", "g", "--consumer", "c", "--json"],
      { installed: true, timeoutMs: 120_000 }
    )
    // All 200 handled and acknowledged: nothing pending, the group has read them all.
    await waitFor(async () => {
      const groups = (await withClient(server.url, (c) => c.xinfo("GROUPS", stream))) as Array<Array<string | number>>
      const info = groups[0]
      if (info === undefined) return undefined
      const group = Object.fromEntries(
        Array.from({ length: info.length / 2 }, (_, i) => [info[2 * i], info[2 * i + 1]])
      )
      return group["entries-read"] === 200 && group.pending === 0 ? true : undefined
    }, 60_000)
    consumer.child.kill("SIGTERM")
    const r = await consumer.done
    expect(r.code, r.stderr).toBe(0)
    expect(JSON.parse(r.stdout)).toMatchObject({ command: "consume", stopped: true, acked: 200 })
  })
})

/** A directory without PostgreSQL binaries, for PG_BIN_DIR: the demo's PostgreSQL then cannot start. */
const NO_BINARIES = "/nonexistent/redflow-demo-test/bin"

/** The fields of a stream's group in XINFO GROUPS. */
const groupOf = async (stream: string) => {
  const groups = (await withClient(server.url, (c) => c.xinfo("GROUPS", stream))) as Array<Array<unknown>>
  return Object.fromEntries(
    Array.from({ length: groups[0]!.length / 2 }, (_, i) => [groups[0]![2 * i], groups[0]![2 * i + 1]])
  )
}

/** How many entries of each op a stream holds, read back from Redis. */
const opsInStream = (stream: string) =>
  withClient(server.url, async (c) => {
    const ops: Record<string, number> = {}
    const connectors = new Set<string>()
    const entries = (await c.xrange(stream, "-", "+")) as Array<[string, Array<string>]>
    for (const [, flat] of entries) {
      const event = JSON.parse(flat[flat.indexOf("event") + 1]!)
      ops[event.op] = (ops[event.op] ?? 0) + 1
      connectors.add(event.source.connector)
    }
    return { ops, connectors: [...connectors] }
  })

const countOf = (text: string) => Number(text.replaceAll(",", ""))

describe("redflow demo", () => {
  it("--source synthetic runs the source, the sink and a consumer group end to end; the --json summary matches the streams", async () => {
    const r = await run([
      "demo",
      "--source",
      "synthetic",
      "--events",
      "6000",
      "--redis",
      server.url,
      "--metrics-port",
      "0",
      "--json"
    ])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr.split("\n")[0]).toBe(
      "Source: the synthetic source (--source synthetic): generated events, no database."
    )
    const summary = JSON.parse(r.stdout)
    expect(summary).toMatchObject({
      command: "demo",
      source: { type: "synthetic" },
      events: 6000,
      produced: 6000,
      written: 6000,
      consumed: 6000,
      pending: 0,
      lag: 0,
      stopped: false,
      checkpoint: { sequence: 6000 },
      redis: { source: "option" }
    })
    expect(summary.streams).toHaveLength(3)
    let total = 0
    for (const s of summary.streams) {
      const length = await withClient(server.url, (c) => c.xlen(s.stream))
      expect(s.length).toBe(length)
      expect(s.written).toBe(length)
      expect(await groupOf(s.stream)).toMatchObject({ name: "demo", pending: 0, lag: 0, "entries-read": length })
      total += length
    }
    expect(total).toBe(6000)
    expect(Object.values(summary.ops as Record<string, number>).reduce((a, b) => a + b, 0)).toBe(6000)
    // The informational lines went to stderr, so stdout is exactly one JSON object.
    expect(r.stderr).toContain("Metrics: http://localhost:")
  })

  it("without PostgreSQL binaries (PG_BIN_DIR pointing at none) it says so first and runs the synthetic source", async () => {
    const r = await run(["demo", "--events", "2000", "--redis", server.url, "--metrics-port", "0", "--json"], {
      env: { PG_BIN_DIR: NO_BINARIES, DATABASE_URL: "" }
    })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr.split("\n")[0]).toBe(
      `No PostgreSQL binaries found (${NO_BINARIES} lacks initdb, postgres, pg_isready): running the ` +
        "synthetic source instead; apt-get install postgresql (or set DATABASE_URL) to see real changes."
    )
    const summary = JSON.parse(r.stdout)
    expect(summary).toMatchObject({
      source: { type: "synthetic", reason: "no PostgreSQL binaries" },
      produced: 2000,
      written: 2000,
      consumed: 2000,
      pending: 0
    })
    let total = 0
    for (const s of summary.streams) total += await withClient(server.url, (c) => c.xlen(s.stream))
    expect(total).toBe(2000)
  })

  it("--source postgres without binaries and without DATABASE_URL exits 2 naming the flag and the fixes", async () => {
    const r = await run(["demo", "--source", "postgres", "--redis", server.url, "--metrics-port", "0"], {
      env: { PG_BIN_DIR: NO_BINARIES, DATABASE_URL: "" }
    })
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toContain(`redflow: error: --source: postgres: no PostgreSQL server binaries (${NO_BINARIES}`)
    expect(r.stderr).toContain("apt-get install postgresql")
    expect(r.stderr).toContain("DATABASE_URL")
    expect(r.stderr).toContain("--source synthetic")
  })

  it("pnpm demo as it comes: its own PostgreSQL and redis-server, live changes committed = events in Redis = consumed; a taken default metrics port falls back", async () => {
    // The default port, 9000, held here (or already by someone else: the fallback is what is tested either way).
    const port = 9000
    const blocker = Net.createServer()
    await new Promise<void>((resolve) => blocker.once("error", () => resolve()).listen(port, () => resolve()))
    try {
      const r = await run(["demo", "--events", "1500"], { env: { DATABASE_URL: "" } })
      expect(r.code, r.stderr).toBe(0)
      const lines = r.stdout.split("\n")
      const started = /^PostgreSQL 15\.\d+ started on port (\d+) \(pid (\d+), wal_level=logical\)/.exec(lines[0]!)
      expect(started, r.stdout).not.toBeNull()
      expect(lines[1]).toMatch(
        /^No --redis and no REDIS_URL: started redis-server at redis:\/\/127\.0\.0\.1:\d+ \(pid \d+\)/
      )
      expect(r.stdout).toContain(`port ${port} is already in use: serving metrics on a free port instead`)

      expect(r.stdout).toMatch(/^Snapshot {2}300 rows of redflow_demo_\w+\.customers, redflow_demo_\w+\.orders/m)
      const committed =
        /^Committed ([\d,]+) changes in [\d,]+ transactions .*: ([\d,]+) inserts, ([\d,]+) updates, ([\d,]+) deletes$/m.exec(
          r.stdout
        )
      expect(committed, r.stdout).not.toBeNull()
      expect(countOf(committed![1]!)).toBe(1500)
      const [inserts, updates, deletes] = committed!.slice(2).map(countOf)
      expect(inserts! + updates! + deletes!).toBe(1500)
      expect(r.stdout).toMatch(/^In Redis {2}1,800 events in /m)
      // The consumer saw exactly what PostgreSQL counted, op by op, plus the snapshot's rows.
      expect(r.stdout).toContain(
        `: 300 snapshot reads, ${committed![2]} inserts, ${committed![3]} updates, ${committed![4]} deletes`
      )
      expect(r.stdout).toMatch(/^Consumed {2}1,800 events \(group "demo"\)/m)
      expect(r.stdout).toMatch(/^Pending 0, lag 0$/m)
      const xlens = [...r.stdout.matchAll(/^ {2}demo\.\w+\.(customers|orders): XLEN ([\d,]+)/gm)]
      expect(xlens.map((m) => m[1])).toEqual(["customers", "orders"])
      expect(xlens.reduce((n, m) => n + countOf(m[2]!), 0)).toBe(1800)
      // Both servers the demo started are gone when it ends.
      const redisPid = Number(/redis-server at \S+ \(pid (\d+)\)/.exec(r.stdout)![1])
      expect(PostgresTestServer.isAlive(Number(started![2]))).toBe(false)
      expect(() => process.kill(redisPid, 0)).toThrow()
    } finally {
      blocker.close()
    }
  })

  describe("with DATABASE_URL", () => {
    let pg: PostgresTestServer.SpawnedServer
    beforeAll(async () => {
      pg = await PostgresTestServer.spawnPostgresServer()
    })
    afterAll(async () => {
      await pg?.stop()
    })
    const sql = async (text: string): Promise<string> =>
      (
        await promisify(execFile)(Path.join(pg.binDir, "psql"), [pg.url, "-v", "ON_ERROR_STOP=1", "-Atqc", text])
      ).stdout.trim()

    it("captures that server: the streams hold what PostgreSQL committed, op by op; its slot, publication and schema are dropped at the end", async () => {
      // A password in the URL (the test server trusts loopback, so any works): it must never be printed.
      const url = pg.url.replace("postgres@", "postgres:s3cret-demo@")
      const r = await run(["demo", "--events", "800", "--redis", server.url, "--metrics-port", "0", "--json"], {
        env: { DATABASE_URL: url }
      })
      expect(r.code, r.stderr).toBe(0)
      expect(r.stderr.split("\n")[0]).toMatch(
        new RegExp(
          `^PostgreSQL 15\\.\\d+ at 127\\.0\\.0\\.1:${pg.port}/postgres \\(DATABASE_URL\\) as the demo's source`
        )
      )
      expect(r.stdout + r.stderr).not.toContain("s3cret-demo")
      const summary = JSON.parse(r.stdout)
      expect(summary).toMatchObject({
        command: "demo",
        source: {
          type: "postgres",
          origin: "DATABASE_URL",
          url: `postgres://postgres:***@127.0.0.1:${pg.port}/postgres`
        },
        events: 800,
        snapshot: { rows: 300 },
        committed: { changes: 800 },
        inRedis: 1100,
        written: 1100,
        consumed: 1100,
        pending: 0,
        lag: 0,
        stopped: false
      })
      const { c, u, d } = summary.committed.ops
      expect(c + u + d).toBe(800)
      expect(summary.ops).toEqual({ r: 300, c, u, d })

      // Read back from Redis: every entry a PostgreSQL change, as many of each op as the database committed.
      const inRedis: Record<string, number> = {}
      let total = 0
      for (const s of summary.streams) {
        const length = await withClient(server.url, (client) => client.xlen(s.stream))
        expect(s.length).toBe(length)
        expect(await groupOf(s.stream)).toMatchObject({ name: "demo", pending: 0, lag: 0, "entries-read": length })
        const { ops, connectors } = await opsInStream(s.stream)
        expect(connectors).toEqual(["postgresql"])
        for (const [op, n] of Object.entries(ops)) inRedis[op] = (inRedis[op] ?? 0) + n
        total += length
      }
      expect(total).toBe(1100)
      expect(inRedis).toEqual({ r: 300, c, u, d })

      // Nothing of the demo's is left on that server: a slot left behind would hold its WAL for good.
      const { schema, slot, publication } = summary.source
      expect(await sql(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = '${slot}'`)).toBe("0")
      expect(await sql(`SELECT count(*) FROM pg_publication WHERE pubname = '${publication}'`)).toBe("0")
      expect(await sql(`SELECT count(*) FROM pg_namespace WHERE nspname = '${schema}'`)).toBe("0")
    })
  })

  it("--source synthetic: Ctrl-C drains: the source stops, what was produced is consumed, exit 0", async () => {
    const demo = start([
      "demo",
      "--source",
      "synthetic",
      "--events",
      "1000000",
      "--rate",
      "10000",
      "--redis",
      server.url,
      "--metrics-port",
      "0",
      "--json"
    ])
    await waitFor(() => (demo.out.stderr.includes("Ctrl-C drains") ? true : undefined))
    await new Promise((r) => setTimeout(r, 800))
    demo.child.kill("SIGINT")
    const r = await demo.done
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain("draining")
    const summary = JSON.parse(r.stdout)
    expect(summary.stopped).toBe(true)
    expect(summary.produced).toBeGreaterThan(0)
    expect(summary.produced).toBeLessThan(1_000_000)
    expect(summary.consumed).toBe(summary.written)
    expect(summary.pending).toBe(0)
    expect(summary.checkpoint.sequence).toBe(summary.produced)
  })

  it("Ctrl-C at a terminal stops the writer, drains what it committed through Redis and the group, exits 0 and stops both servers", async () => {
    // The terminal's Ctrl-C reaches the whole foreground process group: the servers the demo started must not be in it.
    // Through ./node_modules/.bin/redflow, the command the README gives for the documented exit codes.
    const terminal = await inTerminal(["demo", "--events", "10000000", "--rate", "500", "--metrics-port", "0"], {
      installed: true,
      env: { DATABASE_URL: "" }
    })
    try {
      const started = await waitFor(async () => {
        const out = await terminal.stdout()
        return out.includes("Ctrl-C drains") ? out : undefined
      }, 120_000)
      const pgPid = Number(/^PostgreSQL \S+ started on port \d+ \(pid (\d+)/.exec(started)![1])
      const redisPid = Number(/started redis-server at \S+ \(pid (\d+)\)/.exec(started)![1])
      // Live changes flowing: the progress line on the terminal counts committed changes past the snapshot.
      await waitFor(
        async () => (/committed [1-9][\d,]*\/[\d,]+ changes/.test(await terminal.screen()) ? true : undefined),
        120_000
      )
      await terminal.ctrlC()
      const code = await terminal.exitCode(120_000)
      const out = await terminal.stdout()
      expect(code, `${await terminal.screen()}\n${out}`).toBe(0)
      expect(await terminal.screen()).toContain("redflow: draining")
      expect(out).toContain("Stopped by Ctrl-C after draining")
      const committed = /^Committed ([\d,]+) changes/m.exec(out)
      const inRedis = /^In Redis {2}([\d,]+) events/m.exec(out)
      const consumed = /^Consumed {2}([\d,]+) events/m.exec(out)
      expect(committed, out).not.toBeNull()
      const changes = countOf(committed![1]!)
      expect(changes).toBeGreaterThan(0)
      expect(changes).toBeLessThan(10_000_000)
      // Everything committed before the Ctrl-C came through: the 300 seeded rows and each change.
      expect(countOf(inRedis![1]!)).toBe(changes + 300)
      expect(countOf(consumed![1]!)).toBe(changes + 300)
      expect(out).toMatch(/^Pending 0, lag 0$/m)
      // The demo stopped its servers at the end, by pid.
      expect(PostgresTestServer.isAlive(pgPid)).toBe(false)
      expect(() => process.kill(redisPid, 0)).toThrow()
    } finally {
      await terminal.close()
    }
  }, 300_000)
})
