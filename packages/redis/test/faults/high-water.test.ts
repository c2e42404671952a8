/**
 * The high-water mark is read back from Redis, so it is checked, never trusted: a corrupt mark stops the sink
 * instead of making exactly-once skip events, and a mark that goes back under a running sink (Redis lost writes it
 * had acknowledged) is reported instead of leaving a silent gap behind the checkpoint.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Layer, Option, Stream } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisConnection from "../../src/RedisConnection.ts"
import * as RedisStreamSink from "../../src/RedisStreamSink.ts"
import { uniquePrefix, withClient } from "../support.ts"
import { dataLoss, landed, start, untilCheckpoint } from "./harness.ts"

const markKey = (stream: string) => `{${stream}}:redflow:hwm`

/** Runs `count` events exactly-once into one fixed stream with a fresh checkpoint store. */
const runInto = (url: string, stream: string, pipeline: string, count: number) =>
  Effect.gen(function* () {
    const { store } = yield* CheckpointStore.makeMemory()
    const exit = yield* SyntheticSource.make({ count, chunkSize: 100 }).pipe(
      Stream.run(RedisStreamSink.make({ stream, pipeline, guarantee: "exactly-once" })),
      Effect.provide(
        Layer.mergeAll(RedisConnection.layer({ url }), Layer.succeed(CheckpointStore.CheckpointStore, store))
      ),
      Effect.exit
    )
    return { exit, checkpoint: yield* Effect.orDie(store.load(pipeline)) }
  })

const markFailure = <A, E>(exit: Exit.Exit<A, E>): RedisStreamSink.HighWaterMarkError => {
  if (Exit.isSuccess(exit)) throw new Error("expected the sink to fail, it succeeded")
  const error = Option.getOrUndefined(Cause.findErrorOption(exit.cause))
  if (!(error instanceof RedisStreamSink.HighWaterMarkError)) {
    throw new Error(`expected a HighWaterMarkError, got ${Cause.pretty(exit.cause)}`)
  }
  return error
}

describe("a corrupt high-water mark stops exactly-once; it never skips events", () => {
  it.live("not a mark (a bare position, non-hex, upper case, another width): malformed, nothing written", () =>
    Effect.gen(function* () {
      const server = yield* RedisTestServer.make({ useEnv: false })
      for (const value of ["ffffffffffffffff", "not-hex", "FFFFFFFFFFFFFFFF 1-0", "fff 1-0"]) {
        const stream = uniquePrefix("malformed")
        yield* Effect.promise(() => withClient(server.url, (c) => c.hset(markKey(stream), "redflow", value)))
        const { exit, checkpoint } = yield* runInto(server.url, stream, "redflow", 1_000)
        const error = markFailure(exit)
        expect(error.reason).toBe("malformed")
        expect(error.found).toBe(value)
        expect(error.message).toContain(markKey(stream))
        expect(error.message).toContain(`HDEL ${markKey(stream)} redflow`)
        expect(yield* Effect.promise(() => withClient(server.url, (c) => c.xlen(stream)))).toBe(0)
        expect(Option.isNone(checkpoint)).toBe(true)
      }
    })
  )

  it.live("a well-formed mark past anything written (no such entry, or an entry of another position): unverified", () =>
    Effect.gen(function* () {
      const server = yield* RedisTestServer.make({ useEnv: false })
      const stream = uniquePrefix("unverified")
      // A real run writes 10 events; then the mark is set past them, by hand.
      expect(Exit.isSuccess((yield* runInto(server.url, stream, "p", 10)).exit)).toBe(true)
      const ids = yield* Effect.promise(() =>
        withClient(server.url, async (c) => (await c.xrange(stream, "-", "+")).map(([id]) => id))
      )
      for (const value of ["ffffffffffffffff 1-0", `00000000000003e8 ${ids[4]}`]) {
        yield* Effect.promise(() => withClient(server.url, (c) => c.hset(markKey(stream), "p", value)))
        const { exit, checkpoint } = yield* runInto(server.url, stream, "p", 1_000)
        const error = markFailure(exit)
        expect(error.reason).toBe("unverified")
        expect(error.message).toContain("exactly-once would skip every event up to")
        expect(yield* Effect.promise(() => withClient(server.url, (c) => c.xlen(stream)))).toBe(10)
        expect(Option.isNone(checkpoint)).toBe(true)
      }
    })
  )
})

describe("acknowledged writes lost by Redis under a running sink are reported, not passed over", () => {
  for (const guarantee of ["exactly-once", "at-least-once"] as const) {
    it.live(`${guarantee}: Redis restarted without persistence mid-run: the sink stops with the loss named`, () =>
      Effect.gen(function* () {
        const first = yield* RedisTestServer.make({ useEnv: false })
        const prefix = uniquePrefix(`restart-${guarantee}`)
        const run = yield* start({
          url: first.url,
          prefix,
          count: 20_000,
          ratePerSecond: 4_000,
          sink: { guarantee, batch: { maxEvents: 200 } }
        })
        yield* untilCheckpoint(run, 1_000)
        process.kill(first.pid!, "SIGKILL")
        yield* RedisTestServer.make({ port: first.port })
        const exit = yield* Fiber.await(run.fiber)
        const error = markFailure(exit)
        expect(error.reason).toBe("lost")
        expect(error.found).toBe("")
        expect(error.message).toContain("went back from")
        expect(error.message).toContain("lost writes it had acknowledged")
        expect(yield* dataLoss(prefix)).toBeGreaterThanOrEqual(1)
      })
    )
  }

  it.live(
    `an older snapshot loaded on restart (its last writes lost), onDataLoss "continue": counted, writes go on`,
    () =>
      Effect.gen(function* () {
        const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "redflow-snapshot-"))
        const args = ["--dir", dir, "--dbfilename", "dump.rdb"]
        const first = yield* RedisTestServer.make({ args })
        const prefix = uniquePrefix("snapshot")
        const count = 12_000
        const run = yield* start({
          url: first.url,
          prefix,
          count,
          ratePerSecond: 4_000,
          sink: { guarantee: "exactly-once", batch: { maxEvents: 200 }, onDataLoss: "continue" }
        })
        yield* untilCheckpoint(run, 1_000)
        yield* Effect.promise(() => withClient(first.url, (c) => c.call("SAVE")))
        const saved = yield* run.checkpoint
        yield* untilCheckpoint(run, saved + 1_000)
        const killedAt = yield* run.checkpoint
        process.kill(first.pid!, "SIGKILL")
        yield* RedisTestServer.make({ port: first.port, args })
        yield* Fiber.join(run.fiber)
        expect(yield* dataLoss(prefix)).toBeGreaterThanOrEqual(1)
        const result = yield* landed(first.url, prefix, count)
        // What the snapshot missed is gone: events written after the snapshot and before the kill (give or take the
        // window of 200 written but not checkpointed), and nothing else.
        expect(result.missing.length).toBeGreaterThan(500)
        expect(result.missing.every((n) => n > saved - 200 && n <= killedAt + 200)).toBe(true)
        // Everything after the restart landed, once.
        expect(result.duplicates).toBe(0)
        Fs.rmSync(dir, { recursive: true, force: true })
      })
  )
})
