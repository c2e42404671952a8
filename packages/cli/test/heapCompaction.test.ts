/**
 * The quiet-heap compaction (internal/heapCompaction.ts): its rule, its loop under `TestClock` with a stand-in
 * process, and the real thing in a spawned `redflow produce` that has gone quiet.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as HeapCompaction from "../src/internal/heapCompaction.ts"
import { start, unique } from "./support.ts"

const MiB = 2 ** 20
const quietWithSlack: HeapCompaction.Sample = { utilization: 0.01, heapTotal: 56 * MiB, heapUsed: 28 * MiB }

describe("the quiet-heap rule", () => {
  it.each([
    ["quiet, 28 MiB slack, never compacted", quietWithSlack, 0, undefined, true],
    ["busy (utilisation 0.3)", { ...quietWithSlack, utilization: 0.3 }, 0, undefined, false],
    ["at the quiet bound", { ...quietWithSlack, utilization: HeapCompaction.QUIET }, 0, undefined, false],
    ["only 15 MiB slack", { ...quietWithSlack, heapTotal: 43 * MiB }, 0, undefined, false],
    ["compacted 59 s ago", quietWithSlack, 59_000, 0, false],
    ["compacted 60 s ago", quietWithSlack, 60_000, 0, true]
  ] as const)("%s → %s", (_, sample, now, lastAt, expected) => {
    expect(HeapCompaction.shouldCompact(sample, now, lastAt)).toBe(expected)
  })
})

describe("the loop (TestClock)", () => {
  it.effect("compacts once when quiet with slack, not while busy, and again only a minute later", () =>
    Effect.gen(function* () {
      const samples: Array<HeapCompaction.Sample> = []
      let compacted = 0
      let heap: HeapCompaction.Sample = { ...quietWithSlack, utilization: 0.6 }
      const process: HeapCompaction.Process = {
        sample: Effect.sync(() => (samples.push(heap), heap)),
        // A compaction gives the slack back, as the real one does.
        compact: Effect.sync(() => {
          compacted++
          heap = { ...heap, heapTotal: heap.heapUsed + 2 * MiB }
        })
      }
      const fiber = yield* Effect.forkChild(HeapCompaction.run(process))
      yield* TestClock.adjust(Duration.seconds(10))
      expect(samples).toHaveLength(5)
      expect(compacted).toBe(0) // busy: never
      heap = { ...heap, utilization: 0.01 }
      yield* TestClock.adjust(HeapCompaction.INTERVAL)
      expect(compacted).toBe(1)
      // Slack again at once: the spacing holds it off for a minute from the first.
      heap = quietWithSlack
      yield* TestClock.adjust(Duration.seconds(50))
      expect(compacted).toBe(1)
      yield* TestClock.adjust(Duration.seconds(10))
      expect(compacted).toBe(2)
      yield* Fiber.interrupt(fiber)
    })
  )
})

describe("in a real produce process", () => {
  it("a quiet `redflow produce --rate 1` compacts its heap once, shown in /metrics", async () => {
    const server = await RedisTestServer.spawnRedisServer()
    const port = await RedisTestServer.freePort()
    const producer = start(
      ["produce", "--redis", server.url, "--stream", unique("quiet"), "--events", "1000000", "--rate", "1"].concat([
        "--metrics-port",
        String(port)
      ]),
      { timeoutMs: 120_000 }
    )
    try {
      const metrics = async () => {
        try {
          return await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
        } catch {
          return undefined
        }
      }
      // Scraped once a second: a scrape is work on the producer's event loop, and a quiet one is the point.
      const poll = async <A>(f: (metrics: string) => A | undefined): Promise<A> => {
        for (let i = 0; i < 60; i++) {
          if (producer.child.exitCode !== null) throw new Error(`produce exited: ${producer.out.stderr}`)
          const value = f((await metrics()) ?? "")
          if (value !== undefined) return value
          await new Promise((r) => setTimeout(r, 1_000))
        }
        throw new Error(`no compaction within a minute:\n${await metrics()}`)
      }
      const count = await poll((m) => {
        const match = /^deltaforge_process_heap_compactions_total (\d+)$/m.exec(m)
        return match !== null && Number(match[1]) > 0 ? Number(match[1]) : undefined
      })
      expect(count).toBe(1)
      // And it keeps writing afterwards.
      const events = await poll((m) => {
        const match = /^deltaforge_sink_events_total\{[^}]*\} (\d+)$/m.exec(m)
        return match !== null && Number(match[1]) >= 3 ? Number(match[1]) : undefined
      })
      expect(events).toBeGreaterThanOrEqual(3)
    } finally {
      producer.child.kill("SIGTERM")
      await producer.done
      await server.stop()
    }
  }, 120_000)
})
