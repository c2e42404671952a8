/**
 * The sink's `lease` option against a real redis-server: a second sink of the same pipeline waits as a standby and
 * takes over from the checkpoint when the first ends; a batch sent with a token a newer holder superseded is refused
 * whole (the stream unchanged) and the sink fails with LeaseFenced; a lease taken at a renewal stops the sink with
 * LeaseLost; the option's own checks.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Option, Stream } from "effect"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as Position from "@redflow/core/Position"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as PipelineLease from "../../src/PipelineLease.ts"
import * as RedisCheckpointStore from "../../src/RedisCheckpointStore.ts"
import * as RedisConnection from "../../src/RedisConnection.ts"
import * as RedisStreamSink from "../../src/RedisStreamSink.ts"
import type { Redis } from "ioredis"
import { readStream, uniquePrefix, withClient } from "../support.ts"

const cmd = <A>(url: string, f: Parameters<typeof withClient<A>>[1]) => Effect.promise(() => withClient(url, f))
const sleep = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))

/** Waits (live) until `check` holds, polling; fails the test after `tries`. */
const eventually = (check: Effect.Effect<boolean>, what: string, tries = 600) =>
  Effect.gen(function* () {
    for (let i = 0; i < tries; i++) {
      if (yield* check) return
      yield* sleep(50)
    }
    return yield* Effect.die(new Error(`never happened: ${what}`))
  })

const sinkLayer = (url: string) => Layer.provideMerge(RedisCheckpointStore.layer({}), RedisConnection.layer({ url }))

/** The fencing token of the lease's holder now (the key holds `<holder> <token>`). */
const heldToken = (url: string, pipeline: string) =>
  cmd(url, (c) => c.get(PipelineLease.leaseKey(pipeline))).pipe(Effect.map((held) => Number(held!.split(" ")[1])))

/** What a takeover does (the old holder's key expired meanwhile): the fence raised, the lease taken at its value. */
const takeOver = async (c: Redis, pipeline: string): Promise<number> => {
  const next = await c.incr(PipelineLease.fenceKey(pipeline))
  await c.set(PipelineLease.leaseKey(pipeline), `intruder ${next}`, "PX", 60_000)
  return next
}

describe("RedisStreamSink lease", () => {
  it.live(
    "a standby waits while the holder writes, then takes over from the shared checkpoint: every event once, in order",
    () =>
      Effect.gen(function* () {
        const server = yield* RedisTestServer.make({ args: ["--save", ""] })
        const pipeline = uniquePrefix("sinklease-standby")
        const stream = `${pipeline}.events`
        const options: RedisStreamSink.Options = {
          stream,
          pipeline,
          guarantee: "exactly-once",
          lease: { ttl: "2 seconds", renewEvery: "200 millis" }
        }
        // The first run writes events 1..300 and ends (releasing the lease); the standby was started with the whole
        // source 1..600 and resumes from the checkpoint it reads once it holds the lease.
        const first = yield* SyntheticSource.make({ count: 300, ratePerSecond: 300 }).pipe(
          Stream.run(RedisStreamSink.make(options)),
          Effect.provide(sinkLayer(server.url)),
          Effect.forkChild
        )
        yield* eventually(
          cmd(server.url, (c) => c.exists(PipelineLease.leaseKey(pipeline))).pipe(Effect.map((n) => n === 1)),
          "the first sink holds the lease"
        )
        const standby = yield* Effect.gen(function* () {
          const store = yield* CheckpointStore.CheckpointStore
          // The source reads the checkpoint at its first pull, which the sink makes only once it holds the lease.
          const source = Stream.unwrap(
            Effect.map(store.load(pipeline), (from) =>
              SyntheticSource.make({
                count: 600,
                ...Option.match(from, { onNone: () => ({}), onSome: (p) => ({ from: p }) })
              })
            )
          )
          return yield* source.pipe(Stream.run(RedisStreamSink.make(options)))
        }).pipe(Effect.provide(sinkLayer(server.url)), Effect.forkChild)

        const summaryA = yield* Fiber.join(first)
        expect(summaryA.events).toBe(300)
        const summaryB = yield* Fiber.join(standby)
        // It wrote only what the first had not: it never wrote while it waited.
        expect(summaryB.events).toBe(300)
        expect(summaryB.skipped).toBe(0)

        const entries = yield* Effect.promise(() => readStream(server.url, stream))
        const positions = entries.map((e) =>
          Number(
            Position.toSequence((JSON.parse(e.fields.event!) as { position: string }).position as Position.Position)
          )
        )
        expect(positions).toEqual(Array.from({ length: 600 }, (_, i) => i + 1))
        expect(
          yield* PipelineLease.current(pipeline).pipe(Effect.provide(RedisConnection.layer({ url: server.url })))
        ).toEqual(Option.none())
      }),
    { timeout: 120_000 }
  )

  it.live(
    "a batch with a superseded token is refused whole: the stream is unchanged and the sink fails with LeaseFenced",
    () =>
      Effect.gen(function* () {
        const server = yield* RedisTestServer.make({ args: ["--save", ""] })
        const pipeline = uniquePrefix("sinklease-fenced")
        const stream = `${pipeline}.events`
        // Renewals far apart: the next batch, not a renewal, is what meets the newer holder.
        const running = yield* SyntheticSource.make({ count: 100_000, ratePerSecond: 500 }).pipe(
          Stream.run(
            RedisStreamSink.make({
              stream,
              pipeline,
              guarantee: "exactly-once",
              lease: { ttl: "60 seconds", renewEvery: "30 seconds" }
            })
          ),
          Effect.provide(sinkLayer(server.url)),
          Effect.forkChild
        )
        yield* eventually(
          cmd(server.url, (c) => c.xlen(stream)).pipe(Effect.map((n) => n >= 50)),
          "the sink has written"
        )
        const token = yield* heldToken(server.url, pipeline)
        // A takeover, then the stream's length right after it: Redis runs commands one at a time, so any batch after
        // this reads the new fence.
        const lengthAtTakeover = yield* cmd(server.url, async (c) => {
          await takeOver(c, pipeline)
          return await c.xlen(stream)
        })
        const error = yield* Effect.flip(Fiber.join(running))
        expect(error).toMatchObject({ _tag: "LeaseFenced", pipeline, token, current: token + 1 })
        expect(error.message).toContain(`this process (token ${token}) stopped writing`)
        expect(yield* cmd(server.url, (c) => c.xlen(stream))).toBe(lengthAtTakeover)
        // The stale sink did not release the newer holder's lease when it stopped.
        expect(yield* cmd(server.url, (c) => c.get(PipelineLease.leaseKey(pipeline)))).toBe(`intruder ${token + 1}`)
      }),
    { timeout: 120_000 }
  )

  it.live(
    "a checkpoint due after a newer holder took over is refused: the shared checkpoint stays the newer holder's",
    () =>
      Effect.gen(function* () {
        const server = yield* RedisTestServer.make({ args: ["--save", ""] })
        const pipeline = uniquePrefix("sinklease-checkpoint")
        const stream = `${pipeline}.events`
        const checkpointOf = cmd(server.url, (c) => c.hget("redflow:checkpoints", pipeline))
        // 200 events written within about a second, then a source that stays open: the first batch's checkpoint is
        // stored at once, the rest waits for the checkpoint interval, long after the last write. Renewals far apart:
        // what meets the newer holder is that checkpoint, not a write or a renewal.
        const running = yield* SyntheticSource.make({ count: 200, ratePerSecond: 400 }).pipe(
          Stream.concat(Stream.never),
          Stream.run(
            RedisStreamSink.make({
              stream,
              pipeline,
              guarantee: "exactly-once",
              batch: { checkpointInterval: "4 seconds" },
              lease: { ttl: "60 seconds", renewEvery: "30 seconds" }
            })
          ),
          Effect.provide(sinkLayer(server.url)),
          Effect.forkChild
        )
        yield* eventually(cmd(server.url, (c) => c.xlen(stream)).pipe(Effect.map((n) => n === 200)), "all written")
        const stale = yield* checkpointOf
        // The last event's checkpoint is still due: the interval has not passed since the first one.
        expect(stale).not.toBe(Position.fromSequence(200))
        const token = yield* heldToken(server.url, pipeline)
        // A takeover, and the newer holder's own checkpoint past everything the stale sink wrote.
        const newer = Position.fromSequence(1_000)
        yield* cmd(server.url, async (c) => {
          await takeOver(c, pipeline)
          await c.hset("redflow:checkpoints", pipeline, newer)
        })
        const error = yield* Fiber.join(running).pipe(
          Effect.timeout("30 seconds"),
          Effect.flip,
          Effect.map((e) => (e._tag === "TimeoutError" ? "still running 30 s after the takeover" : e))
        )
        expect(error).toMatchObject({ _tag: "LeaseFenced", pipeline, token, current: token + 1 })
        expect(yield* checkpointOf).toBe(newer)
      }),
    { timeout: 120_000 }
  )

  it.live("a lease taken at a renewal stops the sink with LeaseLost (reason taken, naming the holder)", () =>
    Effect.gen(function* () {
      const server = yield* RedisTestServer.make({ args: ["--save", ""] })
      const pipeline = uniquePrefix("sinklease-lost")
      const stream = `${pipeline}.events`
      const running = yield* SyntheticSource.make({ count: 100_000, ratePerSecond: 200 }).pipe(
        Stream.run(RedisStreamSink.make({ stream, pipeline, lease: { ttl: "30 seconds", renewEvery: "100 millis" } })),
        Effect.provide(sinkLayer(server.url)),
        Effect.forkChild
      )
      yield* eventually(cmd(server.url, (c) => c.xlen(stream)).pipe(Effect.map((n) => n > 0)), "the sink has written")
      yield* cmd(server.url, (c) => c.set(PipelineLease.leaseKey(pipeline), "other:1 99", "PX", 30_000))
      const error = yield* Effect.flip(Fiber.join(running))
      expect(error).toMatchObject({ _tag: "LeaseLost", pipeline, reason: "taken", holder: "other:1", token: 99 })
    })
  )

  it.effect("lease options are checked: renewEvery below ttl, durations, with the option's path", () =>
    Effect.gen(function* () {
      const base = { stream: "s" }
      const slow = yield* Effect.flip(
        RedisStreamSink.validateOptions({ ...base, lease: { ttl: "1 second", renewEvery: "1 second" } })
      )
      expect(slow).toMatchObject({ _tag: "ConfigError", component: "RedisStreamSink", path: ["lease", "renewEvery"] })
      const bad = yield* Effect.flip(RedisStreamSink.validateOptions({ ...base, lease: { ttl: "soon" as never } }))
      expect(bad).toMatchObject({ _tag: "ConfigError", path: ["lease", "ttl"] })
      expect(bad.message).toContain(`"soon"`)
      yield* RedisStreamSink.validateOptions({ ...base, lease: { ttl: "5 seconds" } })
    })
  )

  it.live("on a Cluster URL the sink refuses lease at start, nothing written", () =>
    Effect.gen(function* () {
      const error = yield* SyntheticSource.make({ count: 10 }).pipe(
        Stream.run(RedisStreamSink.make({ stream: "s", lease: { ttl: "5 seconds" } })),
        Effect.provide(
          Layer.merge(RedisConnection.layer({ url: "redis+cluster://127.0.0.1:1" }), CheckpointStore.layerMemory)
        ),
        Effect.flip
      )
      expect(error).toMatchObject({ _tag: "ConfigError", component: "RedisStreamSink", path: ["lease"] })
      expect(error.message).toContain("Redis Cluster")
    })
  )
})
