import { describe, expect, it, layer } from "@effect/vitest"
import { Effect, Option, Stream } from "effect"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisConnection from "../src/RedisConnection.ts"
import * as RedisStreamSink from "../src/RedisStreamSink.ts"
import * as Replies from "../src/internal/replies.ts"
import * as StreamAdmin from "../src/StreamAdmin.ts"
import { sinkLayers, uniquePrefix, withClient } from "./support.ts"

const withServer = <A, E>(f: (url: string) => Effect.Effect<A, E, RedisConnection.RedisConnection>) =>
  Effect.gen(function* () {
    const { url } = yield* RedisTestServer.RedisTestServer
    return yield* f(url).pipe(Effect.provide(RedisConnection.layer({ url })))
  })

const produce = (url: string, stream: string, count: number) =>
  SyntheticSource.make({ count, tables: ["orders"] }).pipe(
    Stream.run(RedisStreamSink.make({ stream, key: "${key.id}" })),
    Effect.provide(sinkLayers(url))
  )

describe("reply parsers accept RESP2 shapes and the RESP3 legacy mapping alike", () => {
  it("XREAD: nested [[stream, entries]] and flat [stream, entries]", () => {
    const entries = [
      ["1-0", ["event", "{}", "id", "a"]],
      ["1-1", null]
    ]
    const expected = [
      {
        stream: "s",
        entries: [
          { id: "1-0", fields: { event: "{}", id: "a" } },
          { id: "1-1", fields: undefined }
        ]
      }
    ]
    expect(Replies.parseRead([["s", entries]])).toEqual(expected)
    expect(Replies.parseRead(["s", entries])).toEqual(expected)
    expect(Replies.parseRead(new Map([["s", entries]]))).toEqual(expected)
    expect(Replies.parseRead(null)).toEqual([])
  })

  it("XAUTOCLAIM: Redis 7 reports deleted ids in a third element, Redis 6.2 as null entries", () => {
    expect(Replies.parseAutoClaim(["0-0", [["1-0", ["a", "1"]]], ["1-1"]])).toEqual({
      next: "0-0",
      entries: [{ id: "1-0", fields: { a: "1" } }],
      deleted: ["1-1"]
    })
    expect(
      Replies.parseAutoClaim([
        "2-0",
        [
          ["1-0", ["a", "1"]],
          ["1-1", null]
        ]
      ])
    ).toEqual({
      next: "2-0",
      entries: [{ id: "1-0", fields: { a: "1" } }],
      deleted: ["1-1"]
    })
  })

  it("an unknown shape is an error naming the command, not a wrong value", () => {
    expect(() => Replies.parsePendingSummary("OK")).toThrow(/unexpected XPENDING reply/)
    expect(() => Replies.parseGroups([["name", "g"]])).toThrow(/unexpected XINFO GROUPS reply/)
  })
})

layer(RedisTestServer.layer(), { excludeTestServices: true })("StreamAdmin against a real Redis", (it) => {
  it.effect("groups: create (BUSYGROUP is false, not an error), consumers, set id, delete consumer, destroy", () =>
    withServer(() =>
      Effect.gen(function* () {
        const stream = uniquePrefix("groups")
        expect(yield* StreamAdmin.createGroup(stream, "g", { start: "0" })).toBe(true)
        expect(yield* StreamAdmin.createGroup(stream, "g", { start: "0" })).toBe(false)
        // MKSTREAM made an empty stream.
        expect(yield* StreamAdmin.length(stream)).toBe(0)
        expect(yield* StreamAdmin.createConsumer(stream, "g", "c1")).toBe(true)
        expect(yield* StreamAdmin.createConsumer(stream, "g", "c1")).toBe(false)
        expect((yield* StreamAdmin.consumers(stream, "g")).map((c) => [c.name, c.pending])).toEqual([["c1", 0]])
        yield* StreamAdmin.setGroupId(stream, "g", "$", { entriesRead: 0 })
        expect((yield* StreamAdmin.groups(stream))[0]).toMatchObject({ name: "g", entriesRead: 0, lag: 0 })
        expect(yield* StreamAdmin.deleteConsumer(stream, "g", "c1")).toBe(0)
        expect(yield* StreamAdmin.destroyGroup(stream, "g")).toBe(true)
        expect(yield* StreamAdmin.destroyGroup(stream, "g")).toBe(false)
        expect(yield* StreamAdmin.groups(stream)).toEqual([])
        // Without MKSTREAM a missing stream is a typed command error.
        const error = yield* Effect.flip(StreamAdmin.createGroup(`${stream}.missing`, "g", { mkStream: false }))
        expect(error).toMatchObject({ _tag: "RedisCommandError", command: "XGROUP", key: `${stream}.missing` })
      })
    )
  )

  it.effect("reading, pending, claiming and acknowledging with typed results", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("pending")
        yield* produce(url, stream, 30)
        yield* StreamAdmin.createGroup(stream, "g", { start: "0" })
        const read = yield* StreamAdmin.readGroup(stream, "g", "c1", ">", { count: 10 })
        expect(read.length).toBe(10)
        expect(Object.keys(read[0]!.fields!).sort()).toEqual(["event", "id", "key", "op", "table"])
        const ids = read.map((e) => e.id)

        const summary = yield* StreamAdmin.pending(stream, "g")
        expect(summary).toEqual({
          count: 10,
          smallestId: Option.some(ids[0]),
          largestId: Option.some(ids[9]),
          consumers: [{ name: "c1", pending: 10 }]
        })
        const detail = yield* StreamAdmin.pendingEntries(stream, "g", { count: 3, consumer: "c1" })
        expect(detail.map((d) => [d.id, d.consumer, d.deliveries])).toEqual(ids.slice(0, 3).map((id) => [id, "c1", 1]))
        // Nothing idle for a minute yet.
        expect(yield* StreamAdmin.pendingEntries(stream, "g", { minIdle: "60 seconds" })).toEqual([])

        // XCLAIM with a threshold not reached claims nothing; with 0 it takes the entries over.
        expect(yield* StreamAdmin.claim(stream, "g", "c2", "60 seconds", ids.slice(0, 2))).toEqual([])
        const claimed = yield* StreamAdmin.claim(stream, "g", "c2", 0, ids.slice(0, 2))
        expect(claimed.map((e) => e.id)).toEqual(ids.slice(0, 2))
        expect(claimed[0]!.fields).toEqual(read[0]!.fields)
        // JUSTID does not count a delivery.
        expect(yield* StreamAdmin.claimIds(stream, "g", "c2", 0, [ids[2]!])).toEqual([ids[2]])
        const after = yield* StreamAdmin.pendingEntries(stream, "g", { count: 3 })
        expect(after.map((d) => [d.consumer, d.deliveries])).toEqual([
          ["c2", 2],
          ["c2", 2],
          ["c2", 1]
        ])

        // XAUTOCLAIM: an entry deleted from the stream is reported and dropped from the pending list.
        expect(yield* StreamAdmin.del(stream, [ids[9]!])).toBe(1)
        const auto = yield* StreamAdmin.autoClaim(stream, "g", "c3", 0, { count: 100 })
        expect(auto.next).toBe("0-0")
        expect(auto.entries.map((e) => e.id)).toEqual(ids.slice(0, 9))
        expect(auto.deleted).toEqual([ids[9]])
        expect((yield* StreamAdmin.pending(stream, "g")).count).toBe(9)

        expect(yield* StreamAdmin.ack(stream, "g", ids)).toBe(9)
        expect(yield* StreamAdmin.ack(stream, "g", ids)).toBe(0)
        const [group] = yield* StreamAdmin.groups(stream)
        expect(group).toEqual({
          name: "g",
          consumers: 3,
          pending: 0,
          lastDeliveredId: ids[9],
          entriesRead: 10,
          // A deletion among the entries not yet read makes the lag unknown to Redis.
          lag: undefined
        })
        expect((yield* StreamAdmin.consumers(stream, "g")).map((c) => c.name)).toEqual(["c1", "c2", "c3"])
        expect(yield* StreamAdmin.deleteConsumer(stream, "g", "c3")).toBe(0)

        // Plain reads.
        const all = yield* StreamAdmin.read(stream, "0-0", { count: 100 })
        expect(all.length).toBe(29)
        expect(yield* StreamAdmin.read(stream, all[28]!.id, { block: "50 millis" })).toEqual([])
        expect(Option.getOrThrow(yield* StreamAdmin.lastId(stream))).toBe(all[28]!.id)
        expect(yield* StreamAdmin.range(stream, { start: `(${all[0]!.id}`, count: 2 })).toEqual(
          all.slice(1, 3).map((e) => ({ id: e.id, fields: e.fields }))
        )
      })
    )
  )

  it.effect("XINFO STREAM and trimming by MAXLEN and MINID, exact and approximate", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("trim")
        yield* produce(url, stream, 250)
        const info = yield* StreamAdmin.info(stream)
        expect(info).toMatchObject({ length: 250, groups: 0, entriesAdded: 250, maxDeletedEntryId: "0-0" })
        expect(Option.isSome(info.firstEntry) && Option.isSome(info.lastEntry)).toBe(true)
        expect(Option.getOrThrow(info.lastEntry).id).toBe(info.lastGeneratedId)

        // `~` removes whole radix-tree nodes only (bounded by stream-node-max-entries and -bytes): at least 120
        // entries stay. `=` leaves exactly 120.
        const removed = yield* StreamAdmin.trim(stream, { maxLen: 120 })
        const left = yield* StreamAdmin.length(stream)
        expect(removed).toBe(250 - left)
        expect(left).toBeGreaterThanOrEqual(120)
        expect(left).toBeLessThan(250)
        expect(yield* StreamAdmin.trim(stream, { maxLen: 120 }, { exact: true })).toBe(left - 120)
        expect(yield* StreamAdmin.length(stream)).toBe(120)

        const entries = yield* StreamAdmin.range(stream)
        expect(yield* StreamAdmin.trim(stream, { minId: entries[20]!.id }, { exact: true })).toBe(20)
        expect(Option.getOrThrow((yield* StreamAdmin.info(stream)).firstEntry).id).toBe(entries[20]!.id)
        // LIMIT caps an approximate trim.
        expect(yield* StreamAdmin.trim(stream, { maxLen: 0 }, { limit: 1 })).toBe(0)

        const error = yield* Effect.flip(StreamAdmin.info(`${stream}.missing`))
        expect(error).toMatchObject({ _tag: "RedisCommandError", code: "ERR", command: "XINFO" })
        // A key of another type: WRONGTYPE, typed.
        yield* Effect.promise(() => withClient(url, (c) => c.set(`${stream}.string`, "x")))
        const wrong = yield* Effect.flip(StreamAdmin.length(`${stream}.string`))
        expect(wrong).toMatchObject({ _tag: "RedisCommandError", code: "WRONGTYPE" })
      })
    )
  )
})
