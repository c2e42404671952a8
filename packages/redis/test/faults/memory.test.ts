/**
 * The sink's memory is bounded by bytes, not only by event count: a real `redflow produce` child process with large
 * events, its resident set size read from /proc/<pid>/status, and a real Redis server stopped with SIGSTOP.
 *
 * Before the byte bound, 2 MB events with Redis stopped took the process to 1 GB (every event of the run encoded and
 * queued: the queue and the window held up to `batch.maxEvents` events whatever their size), and 100 MB events were
 * queued and written whole, reaching 4 GB. The large events here stay under the sink's default `maxEventBytes`
 * (1 MiB), so they are written inline.
 */
import { readFileSync } from "node:fs"
import { afterEach, describe, expect, it } from "vitest"
import { Effect, Exit } from "effect"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import * as SinkOptions from "../../src/internal/sink/options.ts"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as ConfigError from "@redflow/core/ConfigError"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { entryIds, start, unique, waitFor, withClient } from "../../../cli/test/support.ts"

/** The child's resident set size in MB, or undefined once it has exited. */
const rssMb = (pid: number): number | undefined => {
  try {
    const line = readFileSync(`/proc/${pid}/status`, "utf8")
      .split("\n")
      .find((l) => l.startsWith("VmRSS:"))
    return line === undefined ? undefined : Number(line.split(/\s+/)[1]) / 1024
  } catch {
    return undefined
  }
}

/** Samples the child's RSS every 100 ms until `stop` is called; kills it once it passes `limitMb` (a runaway). */
const sampleRss = (child: ReturnType<typeof start>["child"], limitMb: number) => {
  let peak = 0
  const timer = setInterval(() => {
    const rss = rssMb(child.pid!)
    if (rss === undefined) return
    peak = Math.max(peak, rss)
    if (rss > limitMb) child.kill("SIGKILL")
  }, 100)
  return {
    peak: () => peak,
    stop: () => clearInterval(timer)
  }
}

const servers: Array<RedisTestServer.SpawnedServer> = []
afterEach(async () => {
  for (const server of servers.splice(0)) {
    process.kill(server.pid, "SIGCONT")
    await server.stop()
  }
})

describe("memory is bounded by bytes (a redflow produce child, RSS from /proc)", () => {
  it("0.45 MB events, Redis SIGSTOPped for 10 s: RSS stays under 600 MB, then every event lands once", async () => {
    const server = await RedisTestServer.spawnRedisServer()
    servers.push(server)
    const stream = unique("mem2mb")
    const events = 1200
    // Inserts carry one 450 KB row image, updates two (900 KB, under maxEventBytes): about 700 MB in all, far more
    // than the bound.
    const produce = start(
      [
        "produce",
        "--redis",
        server.url,
        "--stream",
        stream,
        "--events",
        String(events),
        "--payload-bytes",
        "450000",
        "--guarantee",
        "exactly-once"
      ],
      { timeoutMs: 300_000 }
    )
    const length = () => withClient(server.url, (c) => c.xlen(stream))
    await waitFor(async () => ((await length()) >= 3 ? true : undefined), 120_000)
    process.kill(server.pid, "SIGSTOP")
    // The bound: Node and the modules (about 135 MB), 32 MiB of encoded events (batch.maxBufferedBytes), the
    // writes handed to ioredis, and the slack of V8's collector over large strings. Without the byte bound the
    // process grew to 1 GB within a second of the stop.
    const limitMb = 600
    const sampler = sampleRss(produce.child, limitMb * 2)
    await new Promise((r) => setTimeout(r, 10_000))
    const peakWhileStopped = sampler.peak()
    process.kill(server.pid, "SIGCONT")
    const result = await produce.done
    sampler.stop()
    expect(peakWhileStopped, `RSS while Redis was stopped (MB)`).toBeGreaterThan(0)
    expect(peakWhileStopped, `RSS while Redis was stopped (MB)`).toBeLessThan(limitMb)
    expect(result.code, result.stderr).toBe(0)
    const ids = await entryIds(server.url, stream)
    expect(ids.length).toBe(events)
    expect(new Set(ids)).toEqual(new Set(Array.from({ length: events }, (_, i) => SyntheticSource.eventAt(i + 1).id)))
  }, 360_000)

  it("100 MB events go to the dead-letter stream with the reason, RSS stays under 1 GB", async () => {
    const server = await RedisTestServer.spawnRedisServer()
    servers.push(server)
    const stream = unique("mem100mb")
    // produce writes dead letters to the sink's default stream; each test has its own server.
    const deadLetters = "redflow.dead-letter"
    const events = 6
    const produce = start(
      [
        "produce",
        "--redis",
        server.url,
        "--stream",
        stream,
        "--events",
        String(events),
        "--payload-bytes",
        "100000000",
        "--guarantee",
        "exactly-once"
      ],
      { timeoutMs: 300_000 }
    )
    const limitMb = 1024
    const sampler = sampleRss(produce.child, limitMb)
    const result = await produce.done
    sampler.stop()
    expect(sampler.peak(), "peak RSS (MB)").toBeLessThan(limitMb)
    expect(result.code, result.stderr).toBe(0)
    await withClient(server.url, async (client) => {
      expect(await client.xlen(stream)).toBe(0)
      const entries = (await client.xrange(deadLetters, "-", "+")) as Array<[string, Array<string>]>
      expect(entries.length).toBe(events)
      for (const [, flat] of entries) {
        const field = (name: string) => flat[flat.indexOf(name) + 1]!
        expect(field("error")).toMatch(
          /^event is \d+ bytes encoded, more than batch\.maxBytes \(4194304\): no batch can carry it to stream ".*"; raise batch\.maxBytes/
        )
        // The entry names the event instead of carrying its 100 MB.
        expect(field("event").length).toBeLessThan(1_000)
        expect(JSON.parse(field("event")).id).toBe(field("id"))
      }
    })
  }, 360_000)

  it("batch.maxBufferedBytes: defaults to 8 x batch.maxBytes; below batch.maxBytes it is a ConfigError naming both", async () => {
    const config = await Effect.runPromise(SinkOptions.decode({ stream: "s", batch: { maxBytes: 1_000_000 } }))
    expect(config.maxBufferedBytes).toBe(8_000_000)
    const exit = await Effect.runPromiseExit(
      RedisStreamSink.validateOptions({ stream: "s", batch: { maxBytes: 1_000_000, maxBufferedBytes: 999_999 } })
    )
    expect(exit).toStrictEqual(
      Exit.fail(
        ConfigError.make(
          "RedisStreamSink",
          ["batch", "maxBufferedBytes"],
          "must be at least batch.maxBytes (1000000), got 999999: no full batch could be held",
          "raise it or lower batch.maxBytes"
        )
      )
    )
  })
})
