/**
 * StreamRetention against a real Redis with real consumer groups that lag: nothing a group has not read or
 * acknowledged is trimmed; maxLen with onLag "hold" grows past maxLen and names the group; with "trim" it counts the
 * entries trimmed unprocessed per group; the lag gate holds while a group is too far behind.
 */
import { expect, layer } from "@effect/vitest"
import { Effect, Fiber, Metric, Option } from "effect"
import type { Redis } from "ioredis"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisConnection from "../../src/RedisConnection.ts"
import * as StreamRetention from "../../src/StreamRetention.ts"
import { readStream, uniquePrefix, withClient } from "../support.ts"

const cmd = <A>(url: string, f: (client: Redis) => Promise<A>) => Effect.promise(() => withClient(url, f))

const withServer = <A, E>(f: (url: string) => Effect.Effect<A, E, RedisConnection.RedisConnection>) =>
  Effect.gen(function* () {
    const { url } = yield* RedisTestServer.RedisTestServer
    return yield* f(url).pipe(Effect.provide(RedisConnection.layer({ url })))
  })

/** Adds `count` entries with ids `<base + i>-0`, so the tests can name them. */
const add = (url: string, stream: string, count: number, base = 1) =>
  cmd(url, async (c) => {
    const p = c.pipeline()
    for (let i = 0; i < count; i++) p.xadd(stream, `${base + i}-0`, "n", String(base + i))
    await p.exec()
  })

const group = (url: string, stream: string, name: string) => cmd(url, (c) => c.xgroup("CREATE", stream, name, "0"))

/** A consumer of `name` reads `count` entries (they become pending); answers their ids. */
const read = (url: string, stream: string, name: string, count: number) =>
  cmd(url, async (c) => {
    const reply = (await c.xreadgroup("GROUP", name, "c1", "COUNT", count, "STREAMS", stream, ">")) as Array<
      [string, Array<[string, Array<string>]>]
    > | null
    return (reply?.[0]?.[1] ?? []).map(([id]) => id)
  })

const ack = (url: string, stream: string, name: string, ids: ReadonlyArray<string>) =>
  cmd(url, (c) => c.xack(stream, name, ...ids))

const ids = (url: string, stream: string) =>
  Effect.promise(() => readStream(url, stream)).pipe(Effect.map((es) => es.map((e) => e.id)))

const idOrder = (id: string) => {
  const [ms, seq] = id.split("-")
  return BigInt(ms!) * 2n ** 64n + BigInt(seq!)
}

layer(RedisTestServer.layer(), { excludeTestServices: true })("StreamRetention.apply", (it) => {
  it.effect("a group that has read nothing keeps every entry", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("retention.none")
        yield* add(url, stream, 20)
        yield* group(url, stream, "g")
        const result = yield* StreamRetention.apply(stream, { acked: true, exact: true })
        expect(result.trimmed).toBe(0)
        expect(result.safeId).toBe("1-0")
        expect((yield* ids(url, stream)).length).toBe(20)
        expect(result.groups).toEqual([
          { group: "g", lag: 20, pending: 0, oldestUnprocessed: "1-0", trimmedUnprocessed: 0 }
        ])
      })
    )
  )

  it.effect("pending entries are kept; after acks the stream is trimmed to the oldest unacknowledged one", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("retention.pending")
        yield* add(url, stream, 20)
        yield* group(url, stream, "g")
        const delivered = yield* read(url, stream, "g", 10)
        // read, not acknowledged: all kept
        expect((yield* StreamRetention.apply(stream, { acked: true, exact: true })).trimmed).toBe(0)
        expect((yield* ids(url, stream))[0]).toBe("1-0")
        // acknowledge 1..4 and 6: 5 is the oldest unacknowledged
        yield* ack(url, stream, "g", [...delivered.slice(0, 4), delivered[5]!])
        const result = yield* StreamRetention.apply(stream, { acked: true, exact: true })
        expect(result.trimmed).toBe(4)
        expect(result.safeId).toBe("5-0")
        expect((yield* ids(url, stream))[0]).toBe("5-0")
        // acknowledge the rest of what was read: the stream starts at the first entry not yet read
        yield* ack(url, stream, "g", delivered)
        yield* StreamRetention.apply(stream, { acked: true, exact: true })
        expect((yield* ids(url, stream))[0]).toBe("11-0")
      })
    )
  )

  it.effect("the slowest of several groups decides; a stream every group has processed is emptied", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("retention.groups")
        yield* add(url, stream, 30)
        yield* group(url, stream, "fast")
        yield* group(url, stream, "slow")
        yield* ack(url, stream, "fast", yield* read(url, stream, "fast", 30))
        yield* ack(url, stream, "slow", yield* read(url, stream, "slow", 12))
        const result = yield* StreamRetention.apply(stream, { acked: true, exact: true })
        expect(result.safeId).toBe("13-0")
        expect((yield* ids(url, stream))[0]).toBe("13-0")
        expect(result.groups.find((g) => g.group === "fast")?.oldestUnprocessed).toBeUndefined()

        yield* ack(url, stream, "slow", yield* read(url, stream, "slow", 30))
        const caughtUp = yield* StreamRetention.apply(stream, { acked: true, exact: true })
        expect(caughtUp.safeId).toBeUndefined()
        expect(caughtUp.length).toBe(0)
        // the stream's last id stays: the next entry still gets a higher id
        yield* add(url, stream, 1, 31)
        expect(yield* ids(url, stream)).toEqual(["31-0"])
      })
    )
  )

  it.effect("a stream without groups: nothing to protect, only maxLen applies", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("retention.nogroup")
        yield* add(url, stream, 20)
        expect((yield* StreamRetention.apply(stream, { acked: true, exact: true })).trimmed).toBe(0)
        const result = yield* StreamRetention.apply(stream, { acked: true, maxLen: 5, exact: true })
        expect(result.trimmed).toBe(15)
        expect(yield* ids(url, stream)).toEqual(["16-0", "17-0", "18-0", "19-0", "20-0"])
        // a stream that does not exist is not an error
        expect((yield* StreamRetention.apply(`${stream}.missing`, { acked: true })).length).toBe(0)
      })
    )
  )

  it.effect("maxLen with onLag hold: the stream grows past maxLen, the lag is reported and the group named", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("retention.hold")
        yield* add(url, stream, 20)
        yield* group(url, stream, "billing")
        yield* group(url, stream, "search")
        yield* ack(url, stream, "search", yield* read(url, stream, "search", 20))
        yield* read(url, stream, "billing", 3)
        const result = yield* StreamRetention.apply(stream, { acked: true, maxLen: 5, onLag: "hold", exact: true })
        expect(result.trimmed).toBe(0)
        expect(result.length).toBe(20)
        expect(result.holding.map((h) => h.group)).toEqual(["billing"])
        expect(result.holding[0]!.reason).toContain("group billing")
        expect(result.holding[0]!.reason).toContain("maxLen 5")
        const lag = yield* Metric.value(Metric.withAttributes(StreamRetention.groupLag, { stream, group: "billing" }))
        expect(Number(lag.value)).toBe(20) // 17 unread + 3 pending
        const caughtUpLag = yield* Metric.value(
          Metric.withAttributes(StreamRetention.groupLag, { stream, group: "search" })
        )
        expect(Number(caughtUpLag.value)).toBe(0)
      })
    )
  )

  it.effect("maxLen with onLag trim: maxLen wins and the entries trimmed unprocessed are counted per group", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("retention.trim")
        yield* add(url, stream, 20)
        yield* group(url, stream, "a")
        yield* group(url, stream, "b")
        yield* ack(url, stream, "a", yield* read(url, stream, "a", 10))
        // b read 2 and acknowledged none: 1, 2 pending, the rest unread
        yield* read(url, stream, "b", 2)
        const result = yield* StreamRetention.apply(stream, { acked: true, maxLen: 5, onLag: "trim", exact: true })
        expect(result.trimmed).toBe(15)
        expect(result.length).toBe(5)
        expect(result.holding).toEqual([])
        expect((yield* ids(url, stream))[0]).toBe("16-0")
        const counts = Object.fromEntries(result.groups.map((g) => [g.group, g.trimmedUnprocessed]))
        expect(counts).toEqual({ a: 5, b: 15 })
        const counted = yield* Metric.value(
          Metric.withAttributes(StreamRetention.trimmedUnread, { stream, group: "b" })
        )
        expect(Number(counted.count)).toBe(15)
      })
    )
  )

  it.effect("approximate trimming never trims past the oldest entry a group has not processed", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("retention.approx")
        // 1,000 entries: ten radix-tree nodes of 100 (stream-node-max-entries)
        yield* add(url, stream, 1000)
        yield* group(url, stream, "g1")
        yield* group(url, stream, "g2")
        yield* ack(url, stream, "g1", yield* read(url, stream, "g1", 550))
        yield* ack(url, stream, "g2", yield* read(url, stream, "g2", 730))
        for (const maxLen of [undefined, 100]) {
          const result = yield* StreamRetention.apply(stream, {
            acked: true,
            onLag: "hold",
            ...(maxLen === undefined ? {} : { maxLen })
          })
          const oldest = (yield* ids(url, stream))[0]!
          for (const g of result.groups) {
            expect(idOrder(oldest)).toBeLessThanOrEqual(idOrder(g.oldestUnprocessed!))
          }
          expect(result.safeId).toBe("551-0")
        }
        // whole nodes below 551-0 went
        expect((yield* ids(url, stream)).length).toBeLessThan(1000)
      })
    )
  )

  it.effect("the retention gate holds while a group keeps the stream past maxLen and passes once it catches up", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("retention.gate")
        yield* add(url, stream, 20)
        yield* group(url, stream, "billing")
        const retention = yield* StreamRetention.make({
          pipeline: stream,
          trim: { acked: true, maxLen: 5, exact: true },
          interval: "20 millis"
        })
        yield* retention.afterWrite(stream)
        const waiting = yield* Effect.forkChild(retention.gate.await)
        // the gate probes on its own schedule while holding
        while (Option.isNone(yield* retention.gate.holding)) yield* Effect.sleep("10 millis")
        expect(Option.getOrThrow(yield* retention.gate.holding)).toContain("group billing")
        expect(waiting.pollUnsafe()).toBeUndefined()
        yield* ack(url, stream, "billing", yield* read(url, stream, "billing", 20))
        yield* Fiber.join(waiting)
        // the gate's own probe trimmed the stream once the group caught up
        expect((yield* ids(url, stream)).length).toBe(0)
        expect(yield* retention.gate.holding).toEqual(Option.none())
      })
    )
  )

  it.effect("options are checked: a ConfigError naming the option", () =>
    withServer(() =>
      Effect.gen(function* () {
        const error = yield* Effect.flip(
          StreamRetention.make({ pipeline: "p", trim: { acked: true, maxLen: 0 } as StreamRetention.AckedTrim })
        )
        expect(error._tag).toBe("ConfigError")
        expect(error.field).toBe("trim.maxLen")
      })
    )
  )
})

layer(RedisTestServer.layer(), { excludeTestServices: true })("maxLag: consumer-lag backpressure", (it) => {
  it.effect("the gate holds once a group that does not read is `entries` behind; reading and acking releases it", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("lag.gate")
        const maxLag = { group: "slow", entries: 10 }
        yield* add(url, stream, 9)
        yield* group(url, stream, "slow")
        const probe = StreamRetention.lagProbe(maxLag, () => [stream])
        expect(yield* probe).toEqual({ _tag: "Pass" })
        yield* add(url, stream, 1, 10)
        const held = yield* probe
        expect(held._tag).toBe("Hold")
        expect(held._tag === "Hold" && held.reason).toContain("group slow is 10 entries behind")

        const gate = yield* StreamRetention.lagGate({
          pipeline: stream,
          maxLag,
          streams: () => [stream],
          interval: "20 millis"
        })
        const waiting = yield* Effect.forkChild(gate.await)
        while (Option.isNone(yield* gate.holding)) yield* Effect.sleep("10 millis")
        // read but not acknowledged: still behind
        const delivered = yield* read(url, stream, "slow", 10)
        expect((yield* probe)._tag).toBe("Hold")
        expect(waiting.pollUnsafe()).toBeUndefined()
        yield* ack(url, stream, "slow", delivered)
        yield* Fiber.join(waiting)
        expect(yield* probe).toEqual({ _tag: "Pass" })
      })
    )
  )

  it.effect("a lag Redis cannot compute (after XDEL) is counted with XRANGE, never taken for zero", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("lag.nil")
        yield* add(url, stream, 30)
        yield* group(url, stream, "g")
        yield* read(url, stream, "g", 5)
        // a deletion inside the unread range makes XINFO GROUPS answer lag nil
        yield* cmd(url, (c) => c.xdel(stream, "20-0"))
        const info = yield* cmd(url, (c) => c.xinfo("GROUPS", stream))
        expect(JSON.stringify(info)).toContain('"lag",null')
        const lag = yield* StreamRetention.groupLagOf(stream, "g", 100)
        expect(lag).toEqual({ stream, group: "g", behind: 24 + 5, exact: true })
        const bounded = yield* StreamRetention.groupLagOf(stream, "g", 11)
        expect(bounded).toEqual({ stream, group: "g", behind: 11 + 5, exact: false })
        const verdict = yield* StreamRetention.lagProbe({ group: "g", entries: 10 }, () => [stream])
        expect(verdict._tag).toBe("Hold")
        // no such group or stream: nothing to be behind on
        expect(yield* StreamRetention.lagProbe({ group: "other", entries: 1 }, () => [stream, `${stream}.x`])).toEqual({
          _tag: "Pass"
        })
      })
    )
  )
})
