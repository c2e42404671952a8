/**
 * The sink's `trim: { acked }`, `maxLag` and `publish` against a spawned redis-server with real consumer groups:
 * a group that keeps up lets the stream be trimmed and nothing unprocessed is trimmed; a lagging group with
 * `onLag: "hold"` stops the source (the stream grows past maxLen only by the window, health names the group) until it
 * catches up, and no event is lost; `onLag: "trim"` counts the entries trimmed unread exactly; `maxLag` holds and
 * releases; a subscriber gets one notice per batch whose first, last and count match XRANGE.
 */
import { expect, layer } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Metric, Stream } from "effect"
import type { Redis } from "ioredis"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisConnection from "../../src/RedisConnection.ts"
import * as RedisStreamChannel from "../../src/RedisStreamChannel.ts"
import * as RedisStreamSink from "../../src/RedisStreamSink.ts"
import * as StreamRetention from "../../src/StreamRetention.ts"
import { uniquePrefix, withClient } from "../support.ts"

const cmd = <A>(url: string, f: (client: Redis) => Promise<A>) => Effect.promise(() => withClient(url, f))
const sleep = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))

type Entries = Array<[string, Array<string>]>

const field = (fields: ReadonlyArray<string>, name: string) => fields[fields.indexOf(name) + 1]

/** Runs the sink over `count` synthetic events with these options; answers its summary. */
const sink = (
  url: string,
  count: number,
  options: RedisStreamSink.Options,
  health?: PipelineHealth.PipelineHealthService,
  source: Partial<SyntheticSource.Options> = {}
) =>
  SyntheticSource.make({ count, ...source }).pipe(
    Stream.run(RedisStreamSink.make(options)),
    Effect.provide(
      Layer.mergeAll(
        RedisConnection.layer({ url }),
        CheckpointStore.layerMemory,
        health === undefined ? Layer.empty : Layer.succeed(PipelineHealth.PipelineHealth, health)
      )
    )
  )

const createGroup = (url: string, stream: string, group: string) =>
  cmd(url, (c) => c.xgroup("CREATE", stream, group, "0", "MKSTREAM"))

/** A consumer of `group` reads up to `count` new entries; answers them (they become pending). */
const readGroup = (url: string, stream: string, group: string, count: number) =>
  cmd(url, async (c) => {
    const reply = (await c.xreadgroup("GROUP", group, "c", "COUNT", count, "STREAMS", stream, ">")) as Array<
      [string, Entries]
    > | null
    return reply?.[0]?.[1] ?? []
  })

const ack = (url: string, stream: string, group: string, entries: Entries) =>
  entries.length === 0 ? Effect.void : cmd(url, (c) => c.xack(stream, group, ...entries.map(([id]) => id)))

/** Reads and acknowledges everything `group` has not read yet; answers the event ids (the `id` field) read. */
const drain = (url: string, stream: string, group: string) =>
  Effect.gen(function* () {
    const seen: Array<string> = []
    for (;;) {
      const entries = yield* readGroup(url, stream, group, 500)
      if (entries.length === 0) return seen
      for (const [, fields] of entries) seen.push(field(fields, "id")!)
      yield* ack(url, stream, group, entries)
    }
  })

/** Keeps the group reading and acknowledging until the sink has ended and nothing is left to read. */
const drainWhile = (url: string, stream: string, group: string, sinkFiber: Fiber.Fiber<unknown, unknown>) =>
  Effect.gen(function* () {
    const seen: Array<string> = []
    for (;;) {
      const done = sinkFiber.pollUnsafe() !== undefined
      const got = yield* drain(url, stream, group)
      seen.push(...got)
      if (done && got.length === 0) return seen
      if (got.length === 0) yield* sleep(20)
    }
  })

const xlen = (url: string, stream: string) => cmd(url, (c) => c.xlen(stream))
const firstId = (url: string, stream: string) =>
  cmd(url, async (c) => (await c.xrange(stream, "-", "+", "COUNT", 1))[0]?.[0])

/** Polls until `check` answers a value (not undefined). */
const until = <A>(check: Effect.Effect<A | undefined>) =>
  Effect.gen(function* () {
    for (;;) {
      const value = yield* check
      if (value !== undefined) return value
      yield* sleep(50)
    }
  })

const heldReason = (health: PipelineHealth.PipelineHealthService, key: string) =>
  Effect.map(health.conditions, (conditions) => conditions[key]?.message)

layer(RedisTestServer.layer({ useEnv: false }), { excludeTestServices: true })("RedisStreamSink retention", (it) => {
  it.effect(
    "trim.acked: entries every group processed are trimmed after a write; what one group has not acknowledged stays",
    () =>
      Effect.gen(function* () {
        const { url } = yield* RedisTestServer.RedisTestServer
        const stream = uniquePrefix("sinkret.acked")
        yield* createGroup(url, stream, "fast")
        yield* createGroup(url, stream, "slow")
        const options = (pipeline: string): RedisStreamSink.Options => ({
          stream,
          pipeline,
          trim: { acked: true, exact: true },
          durability: "ignore"
        })
        yield* sink(url, 1000, options(`${stream}.1`))
        // nobody has read: nothing trimmed
        expect(yield* xlen(url, stream)).toBe(1000)

        expect((yield* drain(url, stream, "fast")).length).toBe(1000)
        const slowRead = yield* readGroup(url, stream, "slow", 600)
        yield* ack(url, stream, "slow", slowRead.slice(0, 500)) // 100 read and pending, 400 unread
        yield* sink(url, 10, options(`${stream}.2`))
        // trimmed below slow's oldest pending entry, the 501st: 1010 - 500 left
        expect(yield* xlen(url, stream)).toBe(510)
        expect(yield* firstId(url, stream)).toBe(slowRead[500]![0])

        // slow still gets every entry it had not processed: the pending ones again, and the unread ones
        const pending = (yield* cmd(url, (c) => c.xreadgroup("GROUP", "slow", "c", "STREAMS", stream, "0"))) as Array<
          [string, Entries]
        >
        expect(pending[0]![1].map(([id]) => id)).toEqual(slowRead.slice(500).map(([id]) => id))
        yield* ack(url, stream, "slow", pending[0]![1])
        expect((yield* drain(url, stream, "slow")).length).toBe(410)
        expect((yield* drain(url, stream, "fast")).length).toBe(10)
        yield* sink(url, 1, options(`${stream}.3`))
        expect(yield* xlen(url, stream)).toBe(1)
      }),
    { timeout: 60_000 }
  )

  it.effect(
    "onLag hold: a group that does not read holds the source past maxLen by at most the window, health names it; once it catches up every event is there",
    () =>
      Effect.gen(function* () {
        const { url } = yield* RedisTestServer.RedisTestServer
        const stream = uniquePrefix("sinkret.hold")
        const pipeline = stream
        yield* createGroup(url, stream, "billing")
        const health = yield* PipelineHealth.make()
        const maxLen = 200
        const window = 100
        const fiber = yield* sink(
          url,
          2000,
          {
            stream,
            pipeline,
            batch: { maxEvents: window },
            trim: { acked: true, maxLen, onLag: "hold", exact: true },
            durability: "ignore"
          },
          health
        ).pipe(Effect.forkChild)
        const reason = yield* until(heldReason(health, `${pipeline}/gate:retention`))
        expect(reason).toContain("group billing")
        expect(reason).toContain(stream)
        // held: the stream stops growing, past maxLen by at most the window, and the sink is still running
        const heldAt = yield* xlen(url, stream)
        yield* sleep(1500)
        expect(yield* xlen(url, stream)).toBe(heldAt)
        expect(heldAt).toBeGreaterThan(maxLen)
        expect(heldAt).toBeLessThanOrEqual(maxLen + window)
        expect(fiber.pollUnsafe()).toBeUndefined()
        const lag = yield* Metric.value(Metric.withAttributes(StreamRetention.groupLag, { stream, group: "billing" }))
        expect(lag.value).toBe(heldAt)

        // the group catches up, as it goes: the source resumes and every event reaches the group once
        const seen = yield* drainWhile(url, stream, "billing", fiber)
        expect(Exit.isSuccess(yield* Fiber.await(fiber))).toBe(true)
        expect(seen.length).toBe(2000)
        expect(new Set(seen).size).toBe(2000)
        expect(yield* heldReason(health, `${pipeline}/gate:retention`)).toBeUndefined()
      }),
    { timeout: 60_000 }
  )

  it.effect(
    "approximate trimming (the default) with a group reading as the sink writes: every event reaches the group once, and the stream stays near maxLen",
    () =>
      Effect.gen(function* () {
        const { url } = yield* RedisTestServer.RedisTestServer
        const stream = uniquePrefix("sinkret.live")
        yield* createGroup(url, stream, "live")
        const total = 5000
        const maxLen = 500
        const window = 400
        const fiber = yield* sink(url, total, {
          stream,
          pipeline: stream,
          batch: { maxEvents: window },
          trim: { acked: true, maxLen },
          durability: "ignore"
        }).pipe(Effect.forkChild)
        const seen = yield* drainWhile(url, stream, "live", fiber)
        expect(Exit.isSuccess(yield* Fiber.await(fiber))).toBe(true)
        expect(seen.length).toBe(total)
        expect(new Set(seen).size).toBe(total)
        // the sink could only finish once the group was within maxLen: the stream was trimmed as it went, by whole
        // nodes (stream-node-max-entries 100), keeping at most maxLen + the window + a node
        expect(yield* xlen(url, stream)).toBeLessThanOrEqual(maxLen + window + 100)
      }),
    { timeout: 60_000 }
  )

  it.effect("onLag trim: maxLen wins and the entries trimmed before a group processed them are counted exactly", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const stream = uniquePrefix("sinkret.trim")
      yield* createGroup(url, stream, "never")
      yield* sink(url, 1000, {
        stream,
        pipeline: stream,
        batch: { maxEvents: 200 },
        trim: { acked: true, maxLen: 100, onLag: "trim", exact: true },
        durability: "ignore"
      })
      expect(yield* xlen(url, stream)).toBe(100)
      const counted = yield* Metric.value(
        Metric.withAttributes(StreamRetention.trimmedUnread, { stream, group: "never" })
      )
      expect(counted.count).toBe(900)
    })
  )

  it.effect(
    "maxLag: the source is held while the group is that far behind, and resumes when it catches up",
    () =>
      Effect.gen(function* () {
        const { url } = yield* RedisTestServer.RedisTestServer
        const stream = uniquePrefix("sinkret.lag")
        yield* createGroup(url, stream, "slow")
        const health = yield* PipelineHealth.make()
        const total = 6000
        const fiber = yield* sink(
          url,
          total,
          { stream, pipeline: stream, maxLag: { group: "slow", entries: 300 }, durability: "ignore" },
          health,
          { ratePerSecond: 2000 }
        ).pipe(Effect.forkChild)
        const reason = yield* until(heldReason(health, `${stream}/gate:lag:slow`))
        expect(reason).toContain("group slow is")
        expect(reason).toContain("(maxLag 300)")
        const heldAt = yield* xlen(url, stream)
        yield* sleep(1500)
        expect(yield* xlen(url, stream)).toBe(heldAt)
        expect(heldAt).toBeLessThan(total)
        expect(fiber.pollUnsafe()).toBeUndefined()

        const seen = yield* drainWhile(url, stream, "slow", fiber)
        expect(Exit.isSuccess(yield* Fiber.await(fiber))).toBe(true)
        expect(seen.length).toBe(total)
        expect(new Set(seen).size).toBe(total)
        expect(yield* xlen(url, stream)).toBe(total)
      }),
    { timeout: 60_000 }
  )

  it.effect("publish: one notice per batch; its first, last and count are what XRANGE reads", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const stream = uniquePrefix("sinkret.publish")
      const channel = `${stream}.changed`
      const notices: Array<RedisStreamChannel.Notice> = []
      const subscriber = yield* RedisStreamChannel.subscribe({ channel }).pipe(
        Stream.runForEach((m) => Effect.sync(() => m._tag === "Notice" && notices.push(m))),
        Effect.provide(RedisConnection.layer({ url })),
        Effect.forkChild
      )
      yield* until(
        cmd(url, async (c) =>
          Number(((await c.pubsub("NUMSUB", channel)) as Array<unknown>)[1]) > 0 ? true : undefined
        )
      )
      const summary = yield* sink(url, 2000, {
        stream,
        pipeline: stream,
        batch: { maxEvents: 400 },
        publish: { channel },
        durability: "ignore"
      })
      yield* until(Effect.sync(() => (notices.reduce((n, x) => n + x.count, 0) >= 2000 ? true : undefined)))
      yield* Fiber.interrupt(subscriber)
      expect(notices.length).toBe(summary.batches)
      expect(notices.reduce((n, x) => n + x.count, 0)).toBe(2000)
      const all = yield* cmd(url, (c) => c.xrange(stream, "-", "+"))
      let at = 0
      for (const notice of notices) {
        expect(notice.stream).toBe(stream)
        const range = yield* cmd(url, (c) => c.xrange(stream, notice.first, notice.last))
        expect(range.length).toBe(notice.count)
        // the notices cover the stream in order, without gaps
        expect(range.map(([id]) => id)).toEqual(all.slice(at, at + notice.count).map(([id]) => id))
        at += notice.count
      }
    })
  )

  it.effect("publish with a channel per table: per batch one notice per table, counting that table's entries", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const stream = uniquePrefix("sinkret.pertable")
      const notices: Array<RedisStreamChannel.Notice> = []
      const pattern = `${stream}.*`
      const subscriber = yield* RedisStreamChannel.subscribe({ pattern }).pipe(
        Stream.runForEach((m) => Effect.sync(() => m._tag === "Notice" && notices.push(m))),
        Effect.provide(RedisConnection.layer({ url })),
        Effect.forkChild
      )
      yield* until(cmd(url, async (c) => (Number(await c.pubsub("NUMPAT")) > 0 ? true : undefined)))
      yield* sink(url, 600, {
        stream,
        pipeline: stream,
        batch: { maxEvents: 400 },
        publish: { channel: `${stream}.\${source.table}` },
        durability: "ignore"
      })
      yield* until(Effect.sync(() => (notices.reduce((n, x) => n + x.count, 0) >= 600 ? true : undefined)))
      yield* Fiber.interrupt(subscriber)
      expect(notices.reduce((n, x) => n + x.count, 0)).toBe(600)
      for (const notice of notices) {
        const table = notice.channel.slice(stream.length + 1)
        const range = yield* cmd(url, (c) => c.xrange(stream, notice.first, notice.last))
        const ofTable = range.filter(([, fields]) => field(fields, "table") === table)
        expect(ofTable.length).toBe(notice.count)
        expect(field(range[0]![1], "table")).toBe(table)
        expect(field(range[range.length - 1]![1], "table")).toBe(table)
      }
      expect(new Set(notices.map((n) => n.channel)).size).toBeGreaterThan(1)
    })
  )

  it.effect("options that cannot work are ConfigErrors naming the option", () =>
    Effect.gen(function* () {
      const reject = (options: Partial<RedisStreamSink.Options>) =>
        RedisStreamSink.validateOptions({ stream: "s", ...options }).pipe(
          Effect.flip,
          Effect.map((e) => ({ field: e.field, reason: e.reason }))
        )
      const minId = yield* reject({ trim: { acked: true, minId: "1-0" } })
      expect(minId.field).toBe("trim.minId")
      expect(minId.reason).toContain("trim.acked")
      expect((yield* reject({ trim: { maxLen: 10, onLag: "hold" } })).field).toBe("trim.onLag")
      expect((yield* reject({ trim: { acked: true, onLag: "trim" } })).reason).toContain("needs trim.maxLen")
      expect((yield* reject({ maxLag: { group: "", entries: 10 } })).field).toBe("maxLag.group")
      expect((yield* reject({ maxLag: { group: "g", entries: 0 } })).field).toBe("maxLag.entries")
      expect((yield* reject({ publish: { channel: "cdc.${nope}" } })).field).toBe("publish.channel")
    })
  )
})
