/**
 * Two `redflow produce` processes of one pipeline (`--guarantee exactly-once --checkpoint redis --lease 2s`) against
 * a redis-server the test starts: one writes, the other stands by. The active one is SIGKILLed mid-run, or SIGSTOPped
 * past its lease and woken after the standby took over and wrote; either way the stream ends with every event of the
 * run exactly once, in order, and a woken stale process writes nothing and exits non-zero with one line naming why.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Position from "@redflow/core/Position"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { run, start, unique, waitFor, withClient } from "./support.ts"

let redis: RedisTestServer.SpawnedServer

beforeAll(async () => {
  redis = await RedisTestServer.spawnRedisServer({ args: ["--save", ""] })
})

afterAll(async () => {
  await redis?.stop()
})

const EVENTS = 12_000

const produce = (pipeline: string, stream: string) =>
  start([
    "--json",
    "produce",
    "--redis",
    redis.url,
    "--stream",
    stream,
    "--events",
    String(EVENTS),
    "--rate",
    "1000",
    "--guarantee",
    "exactly-once",
    "--checkpoint",
    "redis",
    "--lease",
    "2s",
    "--pipeline",
    pipeline
  ])

const xlen = (stream: string) => withClient(redis.url, (c) => c.xlen(stream))

/** The sequence number of every entry's event, in stream order. */
const sequences = (stream: string) =>
  withClient(redis.url, async (client) => {
    const out: Array<number> = []
    let from = "-"
    for (;;) {
      const page = (await client.xrange(stream, from, "+", "COUNT", 1000)) as Array<[string, Array<string>]>
      for (const [, flat] of page) {
        const event = JSON.parse(flat[flat.indexOf("event") + 1]!) as { position: Position.Position }
        out.push(Number(Position.toSequence(event.position)))
      }
      if (page.length < 1000) return out
      from = `(${page[page.length - 1]![0]}`
    }
  })

const expectEveryEventOnceInOrder = async (stream: string) => {
  const seen = await sequences(stream)
  expect(seen.length).toBe(EVENTS)
  expect(new Set(seen).size).toBe(EVENTS)
  expect(seen).toEqual(Array.from({ length: EVENTS }, (_, i) => i + 1))
}

const holding = (out: { stderr: string }) => out.stderr.includes("holding the lease")
const standingBy = (out: { stderr: string }) => out.stderr.includes("standby: the lease is held by")

describe("redflow produce --lease: a standby that takes over", () => {
  it("the active process SIGKILLed mid-run: the standby takes over and finishes, every event once, in order", async () => {
    const pipeline = unique("standby-kill")
    const stream = `${pipeline}.events`
    const active = produce(pipeline, stream)
    await waitFor(async () => (holding(active.out) && (await xlen(stream)) >= 500 ? true : undefined), 120_000)
    const standby = produce(pipeline, stream)
    await waitFor(() => (standingBy(standby.out) ? true : undefined), 120_000)
    // The standby waits: it writes nothing while the active process holds the lease.
    expect(standby.out.stderr).not.toContain("holding the lease")

    active.child.kill("SIGKILL")
    const killed = await active.done
    expect(killed.signal).toBe("SIGKILL")
    const atKill = await xlen(stream)
    expect(atKill).toBeLessThan(EVENTS)

    const finished = await standby.done
    expect(finished.code, finished.stderr).toBe(0)
    expect(finished.stderr).toMatch(/holding the lease, resuming after event \d+/)
    const summary = JSON.parse(finished.stdout) as { complete: boolean; resumedFrom: number; skipped: number }
    expect(summary.complete).toBe(true)
    expect(summary.resumedFrom).toBeGreaterThan(0)
    await expectEveryEventOnceInOrder(stream)
  })

  it("the active process SIGSTOPped past its lease: the standby takes over and writes; woken, the old one is refused and exits non-zero", async () => {
    const pipeline = unique("standby-stop")
    const stream = `${pipeline}.events`
    const active = produce(pipeline, stream)
    await waitFor(async () => (holding(active.out) && (await xlen(stream)) >= 500 ? true : undefined), 120_000)
    const standby = produce(pipeline, stream)
    await waitFor(() => (standingBy(standby.out) ? true : undefined), 120_000)

    active.child.kill("SIGSTOP")
    const atStop = await xlen(stream)
    // Past the 2 s lease the standby takes over, and writes.
    await waitFor(() => (holding(standby.out) ? true : undefined), 120_000)
    await waitFor(async () => ((await xlen(stream)) > atStop + 200 ? true : undefined), 120_000)

    active.child.kill("SIGCONT")
    const woken = await active.done
    expect(woken.code).toBe(1)
    const lines = woken.stderr.trim().split("\n")
    // One line says why it stopped: its batch was fenced, or its renewal found the lease taken.
    expect(lines.at(-1)).toMatch(/^redflow: error: (LeaseFenced|LeaseLost): pipeline \S+: /)

    const finished = await standby.done
    expect(finished.code, finished.stderr).toBe(0)
    await expectEveryEventOnceInOrder(stream)
  })

  it("--lease needs --checkpoint redis, and a time to live: said before connecting (exit 2)", async () => {
    const base = ["produce", "--redis", redis.url, "--stream", "s", "--events", "1", "--pipeline", unique("usage")]
    const withFile = await run([...base, "--lease", "2s", "--checkpoint", "/tmp/redflow-lease-unused.ckpt"])
    expect(withFile.code).toBe(2)
    expect(withFile.stderr).toContain("--lease: needs --checkpoint redis")
    const bad = await run([...base, "--lease", "soon", "--checkpoint", "redis"])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain(`--lease: expected a time to live such as 5s or 500ms, got "soon"`)
  })
})
