/**
 * `redflow consume` and `redflow demo` as child processes against a real Redis: what they report must be what is in
 * the streams and the group.
 */
import * as Net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
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

describe("redflow demo", () => {
  it("runs the source, the sink and a consumer group end to end; the --json summary matches the streams", async () => {
    const r = await run(["demo", "--events", "6000", "--redis", server.url, "--metrics-port", "0", "--json"])
    expect(r.code, r.stderr).toBe(0)
    const summary = JSON.parse(r.stdout)
    expect(summary).toMatchObject({
      command: "demo",
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
      const [length, groups] = await withClient(server.url, (c) =>
        Promise.all([c.xlen(s.stream), c.xinfo("GROUPS", s.stream) as Promise<Array<Array<unknown>>>])
      )
      expect(s.length).toBe(length)
      expect(s.written).toBe(length)
      const group = Object.fromEntries(
        Array.from({ length: groups[0]!.length / 2 }, (_, i) => [groups[0]![2 * i], groups[0]![2 * i + 1]])
      )
      expect(group).toMatchObject({ name: "demo", pending: 0, lag: 0, "entries-read": length })
      total += length
    }
    expect(total).toBe(6000)
    expect(Object.values(summary.ops as Record<string, number>).reduce((a, b) => a + b, 0)).toBe(6000)
    // The informational lines went to stderr, so stdout is exactly one JSON object.
    expect(r.stderr).toContain("Metrics: http://localhost:")
  })

  it("without --redis and REDIS_URL it starts its own redis-server and says so; a taken default metrics port falls back", async () => {
    // The default port, 9000, held here (or already by someone else: the fallback is what is tested either way).
    const port = 9000
    const blocker = Net.createServer()
    await new Promise<void>((resolve) => blocker.once("error", () => resolve()).listen(port, () => resolve()))
    try {
      const r = await run(["demo", "--events", "2000"])
      expect(r.code, r.stderr).toBe(0)
      expect(r.stdout).toMatch(
        /No --redis and no REDIS_URL: started redis-server at redis:\/\/127\.0\.0\.1:\d+ \(pid \d+\)/
      )
      expect(r.stdout).toContain(`port ${port} is already in use: serving metrics on a free port instead`)
      expect(r.stdout).toMatch(/Produced 2,000 events/)
      expect(r.stdout).toMatch(/Consumed\s+2,000 events/)
      const pid = Number(/\(pid (\d+)\)/.exec(r.stdout)![1])
      // The demo's server is stopped when the demo ends.
      expect(() => process.kill(pid, 0)).toThrow()
    } finally {
      blocker.close()
    }
  })

  it("Ctrl-C drains: the source stops, what was produced is consumed, exit 0", async () => {
    const demo = start([
      "demo",
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

  it("Ctrl-C at a terminal drains through the demo's own redis-server, prints the summary, exits 0 and stops the server", async () => {
    // The terminal's Ctrl-C reaches the whole foreground process group: the server the demo started must not be in it.
    // Through ./node_modules/.bin/redflow, the command the README gives for the documented exit codes.
    const terminal = await inTerminal(["demo", "--events", "10000000", "--rate", "5000", "--metrics-port", "0"], {
      installed: true
    })
    try {
      const started = await waitFor(async () => {
        const out = await terminal.stdout()
        return out.includes("Ctrl-C drains") ? out : undefined
      }, 60_000)
      const pid = Number(/started redis-server at \S+ \(pid (\d+)\)/.exec(started)![1])
      // Producing and consuming: the live progress line on the terminal counts consumed events.
      await waitFor(async () => (/consumed [1-9]/.test(await terminal.screen()) ? true : undefined), 60_000)
      await terminal.ctrlC()
      const code = await terminal.exitCode(120_000)
      const out = await terminal.stdout()
      expect(code, `${await terminal.screen()}\n${out}`).toBe(0)
      expect(await terminal.screen()).toContain("redflow: draining")
      const produced = /Stopped by Ctrl-C after draining: produced ([\d,]+) events/.exec(out)
      const consumed = /Consumed\s+([\d,]+) events/.exec(out)
      expect(produced, out).not.toBeNull()
      expect(consumed![1]).toBe(produced![1])
      expect(out).toMatch(/Pending 0, lag 0/)
      // The demo stopped its server at the end, by pid.
      expect(() => process.kill(pid, 0)).toThrow()
    } finally {
      await terminal.close()
    }
  }, 300_000)
})
