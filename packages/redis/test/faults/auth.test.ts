import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Stream } from "effect"
import { Metrics } from "@redflow/core"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisConnection from "../../src/RedisConnection.ts"
import * as RedisStreamSink from "../../src/RedisStreamSink.ts"
import { uniquePrefix, withClient } from "../support.ts"
import { counter, sleep } from "./harness.ts"

const connectionsReceived = (url: string) =>
  Effect.promise(() =>
    withClient(url, async (c) => Number(/total_connections_received:(\d+)/.exec(await c.info("stats"))![1]))
  )

/** Runs a small sink against `url` and returns how it failed and how long that took. */
const failingRun = (url: string, pipeline: string) =>
  Effect.gen(function* () {
    const started = Date.now()
    const error = yield* SyntheticSource.make({ count: 100 }).pipe(
      Stream.run(RedisStreamSink.make({ stream: `${pipeline}.\${source.table}`, pipeline })),
      Effect.provide(Layer.mergeAll(RedisConnection.layer({ url }), CheckpointStore.layerMemory)),
      Effect.flip
    )
    return { error, ms: Date.now() - started }
  })

describe("authentication failure (spec: NOAUTH / WRONGPASS → fails fast, no retry)", () => {
  it.live("NOAUTH, WRONGPASS: RedisAuthFailed in under a second, zero retries, no reconnect loop", () =>
    Effect.gen(function* () {
      const server = yield* RedisTestServer.make({ args: ["--requirepass", "s3cret"] })
      const admin = `redis://:s3cret@${server.host}:${server.port}`
      for (const [url, code] of [
        [`redis://${server.host}:${server.port}`, "NOAUTH"],
        [`redis://:wrong@${server.host}:${server.port}`, "WRONGPASS"],
        [`redis://nobody:wrong@${server.host}:${server.port}`, "WRONGPASS"]
      ] as const) {
        const pipeline = uniquePrefix("auth")
        const before = yield* connectionsReceived(admin)
        const { error, ms } = yield* failingRun(url, pipeline)
        expect(error._tag).toBe("RedisAuthFailed")
        if (error._tag === "RedisAuthFailed") expect(error.code).toBe(code)
        // Fast because nothing is retried (the counter below); the bound leaves room for a loaded machine.
        expect(ms).toBeLessThan(5_000)
        expect(yield* counter(Metrics.sinkRetries, { pipeline, sink: "redis", reason: "RedisAuthFailed" })).toBe(0)
        // No reconnect loop behind the failure: the server sees no new connection attempts afterwards.
        const afterFailure = yield* connectionsReceived(admin)
        yield* sleep(1_200)
        const later = yield* connectionsReceived(admin)
        expect(afterFailure - before).toBeLessThanOrEqual(3) // this client's one attempt, plus the two probes
        expect(later - afterFailure).toBe(1) // only the probe itself
      }
    })
  )

  it.live("NOPERM from an ACL that forbids the write: RedisAuthFailed at once, nothing retried", () =>
    Effect.gen(function* () {
      const server = yield* RedisTestServer.make({ useEnv: false })
      yield* Effect.promise(() =>
        withClient(server.url, (c) => c.call("ACL", "SETUSER", "reader", "on", ">pw", "~*", "+@read", "+@connection"))
      )
      const pipeline = uniquePrefix("noperm")
      const { error, ms } = yield* failingRun(`redis://reader:pw@${server.host}:${server.port}`, pipeline)
      expect(error).toMatchObject({ _tag: "RedisAuthFailed", code: "NOPERM" })
      expect(ms).toBeLessThan(5_000)
      expect(yield* counter(Metrics.sinkRetries, { pipeline, sink: "redis", reason: "RedisAuthFailed" })).toBe(0)
      expect(yield* counter(Metrics.sinkErrors, { pipeline, sink: "redis", kind: "RedisAuthFailed" })).toBe(1)
    })
  )
})
