/**
 * The contract's `redis-cli` lines (docs/DESIGN.md: "Consuming", "Monitoring", "Stream management"), run for real with
 * `redis-cli -u <url> …` against a stream the sink wrote, and checked against what the contract says they do (and
 * against `StreamAdmin`'s typed reading of the same state).
 */
import { spawn } from "node:child_process"
import { expect, layer } from "@effect/vitest"
import { Effect, Fiber, Option, Stream } from "effect"
import { Position } from "@redflow/core"
import * as Envelope from "@redflow/core/Envelope"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisConnection from "../src/RedisConnection.ts"
import * as RedisStreamSink from "../src/RedisStreamSink.ts"
import * as StreamAdmin from "../src/StreamAdmin.ts"
import { sinkLayers, uniquePrefix } from "./support.ts"

/** Runs `redis-cli -u url …args`; `json` adds `--json` (RESP3 replies as JSON) and parses the output. */
const cli = (url: string, args: ReadonlyArray<string | number>, options: { readonly json?: boolean } = {}) =>
  Effect.promise(
    () =>
      new Promise<{ readonly stdout: string; readonly code: number | null }>((resolve, reject) => {
        const child = spawn("redis-cli", ["-u", url, ...(options.json ? ["--json"] : []), ...args.map(String)], {
          stdio: ["ignore", "pipe", "pipe"]
        })
        let stdout = ""
        child.stdout.on("data", (d) => (stdout += d))
        child.stderr.on("data", (d) => (stdout += d))
        child.on("error", reject)
        child.on("exit", (code) => resolve({ stdout: stdout.trim(), code }))
      })
  )
const cliJson = (url: string, args: ReadonlyArray<string | number>) =>
  Effect.map(cli(url, args, { json: true }), (r) => JSON.parse(r.stdout) as unknown)

/** Events `after + 1 … after + count` through the sink into `stream`. */
const produce = (url: string, stream: string, count: number, after = 0) =>
  SyntheticSource.make({
    count: after + count,
    tables: ["orders"],
    ...(after > 0 ? { from: Position.fromSequence(after) } : {})
  }).pipe(Stream.run(RedisStreamSink.make({ stream, key: "${key.id}" })), Effect.provide(sinkLayers(url)))

type JsonEntry = [string, Array<string>]

/** Runs `f` with the test server's URL and a connection to it. */
const withServer = <A, E>(f: (url: string) => Effect.Effect<A, E, RedisConnection.RedisConnection>) =>
  Effect.gen(function* () {
    const { url } = yield* RedisTestServer.RedisTestServer
    return yield* f(url).pipe(Effect.provide(RedisConnection.layer({ url })))
  })
const fieldsOf = (flat: Array<string>) =>
  Object.fromEntries(flat.flatMap((_, i) => (i % 2 ? [] : [[flat[i], flat[i + 1]]])))

layer(RedisTestServer.layer(), { excludeTestServices: true })("the spec's redis-cli commands", (it) => {
  it.effect(
    "consumer groups: XGROUP CREATE, XREADGROUP BLOCK, XACK, XPENDING, XINFO, XCLAIM on a sink-written stream",
    () =>
      withServer((url) =>
        Effect.gen(function* () {
          const stream = `${uniquePrefix("spec")}:orders.events`
          yield* produce(url, stream, 20)

          // redis-cli XGROUP CREATE orders.events mygroup $ MKSTREAM
          expect(yield* cli(url, ["XGROUP", "CREATE", stream, "mygroup", "$", "MKSTREAM"])).toEqual({
            stdout: "OK",
            code: 0
          })
          // Already there: BUSYGROUP (the Python example's `except ResponseError: pass`).
          expect((yield* cli(url, ["XGROUP", "CREATE", stream, "mygroup", "$", "MKSTREAM"])).stdout).toMatch(
            /^BUSYGROUP/
          )

          // redis-cli XREADGROUP GROUP mygroup consumer1 BLOCK 5000 COUNT 10 STREAMS orders.events >
          // `$` skipped the 20 entries already there: the read blocks until new ones arrive.
          const reading = yield* cliJson(url, [
            "XREADGROUP",
            "GROUP",
            "mygroup",
            "consumer1",
            "BLOCK",
            5000,
            "COUNT",
            10,
            "STREAMS",
            stream,
            ">"
          ]).pipe(Effect.forkChild)
          yield* Effect.sleep("300 millis")
          yield* produce(url, stream, 15, 20)
          const read = (yield* Fiber.join(reading)) as Record<string, Array<JsonEntry>>
          const delivered = read[stream]!
          expect(delivered.length).toBe(10)
          // Each entry carries the `event` field the contract's consumers decode (docs/DESIGN.md), plus routing fields.
          const events = delivered.map(([, flat]) => Envelope.native.decodeSync(fieldsOf(flat).event!))
          expect(events.map((e) => e.position)).toEqual(
            Array.from({ length: 10 }, (_, i) => Position.fromSequence(21 + i))
          )
          expect(Object.keys(fieldsOf(delivered[0]![1])).sort()).toEqual(["event", "id", "key", "op", "table"])
          const ids = delivered.map(([id]) => id)

          // redis-cli XACK orders.events mygroup <id>
          expect(yield* cli(url, ["XACK", stream, "mygroup", ids[0]!])).toEqual({ stdout: "1", code: 0 })
          expect((yield* cli(url, ["XACK", stream, "mygroup", ids[0]!])).stdout).toBe("0")

          // redis-cli XPENDING orders.events mygroup: 9 delivered and not acknowledged, all by consumer1.
          const pending = yield* cliJson(url, ["XPENDING", stream, "mygroup"])
          expect(pending).toEqual([9, ids[1], ids[9], [["consumer1", "9"]]])
          const typed = yield* StreamAdmin.pending(stream, "mygroup")
          expect(typed).toEqual({
            count: 9,
            smallestId: Option.some(ids[1]),
            largestId: Option.some(ids[9]),
            consumers: [{ name: "consumer1", pending: 9 }]
          })

          // redis-cli XINFO STREAM / XINFO GROUPS
          const info = (yield* cliJson(url, ["XINFO", "STREAM", stream])) as Record<string, unknown>
          expect(info).toMatchObject({ length: 35, groups: 1, "entries-added": 35 })
          const groups = (yield* cliJson(url, ["XINFO", "GROUPS", stream])) as Array<Record<string, unknown>>
          expect(groups).toEqual([
            {
              name: "mygroup",
              consumers: 1,
              pending: 9,
              "last-delivered-id": ids[9],
              // A group created at `$` on a non-empty stream does not know how many entries it has read, so
              // Redis cannot tell its lag either.
              "entries-read": null,
              lag: null
            }
          ])
          expect(yield* StreamAdmin.groups(stream)).toEqual([
            {
              name: "mygroup",
              consumers: 1,
              pending: 9,
              lastDeliveredId: ids[9],
              entriesRead: undefined,
              lag: undefined
            }
          ])

          // redis-cli XCLAIM orders.events mygroup worker2 60000 <id>: nothing yet, the entry is not 60 s idle.
          expect(yield* cliJson(url, ["XCLAIM", stream, "mygroup", "worker2", 60000, ids[1]!])).toEqual([])
          // Age it past the threshold (XCLAIM … IDLE sets an entry's idle time), then the contract's line claims it.
          yield* cli(url, ["XCLAIM", stream, "mygroup", "consumer1", 0, ids[1]!, "IDLE", 61000, "JUSTID"])
          const claimed = (yield* cliJson(url, [
            "XCLAIM",
            stream,
            "mygroup",
            "worker2",
            60000,
            ids[1]!
          ])) as Array<JsonEntry>
          expect(claimed.map(([id]) => id)).toEqual([ids[1]])
          const detail = yield* StreamAdmin.pendingEntries(stream, "mygroup", {
            start: ids[1]!,
            end: ids[1]!,
            count: 1
          })
          expect(detail).toMatchObject([{ id: ids[1], consumer: "worker2", deliveries: 2 }])
          expect(detail[0]!.idleMs).toBeLessThan(5000)
          const consumers = yield* StreamAdmin.consumers(stream, "mygroup")
          expect(consumers.map((c) => [c.name, c.pending])).toEqual([
            ["consumer1", 8],
            ["worker2", 1]
          ])
        })
      )
  )

  it.effect("simple subscription and stream management: XREAD 0-0 and $, XLEN, XTRIM ~ and =, XDEL", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = `${uniquePrefix("spec")}:orders.events`
        yield* produce(url, stream, 350)

        // redis-cli XREAD COUNT 10 STREAMS orders.events 0-0: the first ten entries.
        const first = (yield* cliJson(url, ["XREAD", "COUNT", 10, "STREAMS", stream, "0-0"])) as Record<
          string,
          Array<JsonEntry>
        >
        const firstEvents = first[stream]!.map(([, flat]) => Envelope.native.decodeSync(fieldsOf(flat).event!))
        expect(firstEvents.map((e) => e.position)).toEqual(
          Array.from({ length: 10 }, (_, i) => Position.fromSequence(i + 1))
        )

        // redis-cli XREAD BLOCK 5000 STREAMS orders.events $: blocks, then returns only the entry added meanwhile.
        const waiting = yield* cliJson(url, ["XREAD", "BLOCK", 5000, "STREAMS", stream, "$"]).pipe(Effect.forkChild)
        yield* Effect.sleep("300 millis")
        yield* produce(url, stream, 1, 350)
        const fresh = (yield* Fiber.join(waiting)) as Record<string, Array<JsonEntry>>
        expect(fresh[stream]!.map(([, flat]) => Envelope.native.decodeSync(fieldsOf(flat).event!).position)).toEqual([
          Position.fromSequence(351)
        ])

        // redis-cli XLEN orders.events
        expect((yield* cli(url, ["XLEN", stream])).stdout).toBe("351")
        expect(yield* StreamAdmin.length(stream)).toBe(351)

        // redis-cli XTRIM orders.events MAXLEN ~ 100: whole radix-tree nodes (100 entries each) go, so at least 100
        // entries stay and fewer than a node more.
        const approx = Number((yield* cli(url, ["XTRIM", stream, "MAXLEN", "~", 100])).stdout)
        const afterApprox = yield* StreamAdmin.length(stream)
        expect(approx).toBe(351 - afterApprox)
        expect(afterApprox).toBeGreaterThanOrEqual(100)
        expect(afterApprox).toBeLessThan(200)
        // redis-cli XTRIM orders.events MAXLEN 100: exactly 100 left, the newest.
        expect(Number((yield* cli(url, ["XTRIM", stream, "MAXLEN", 100])).stdout)).toBe(afterApprox - 100)
        expect(yield* StreamAdmin.length(stream)).toBe(100)
        const info = yield* StreamAdmin.info(stream)
        expect(Option.map(info.lastEntry, (e) => Envelope.native.decodeSync(e.fields.event!).position)).toEqual(
          Option.some(Position.fromSequence(351))
        )

        // redis-cli XDEL orders.events <message-id>
        const victim = Option.getOrThrow(info.firstEntry).id
        expect((yield* cli(url, ["XDEL", stream, victim])).stdout).toBe("1")
        expect((yield* cli(url, ["XDEL", stream, victim])).stdout).toBe("0")
        expect(yield* StreamAdmin.length(stream)).toBe(99)
      })
    )
  )
})
