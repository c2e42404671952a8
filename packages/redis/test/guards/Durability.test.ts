/**
 * Durability against real redis-servers started with different persistence settings, and one whose user may not run
 * CONFIG.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Durability from "../../src/Durability.ts"
import * as RedisConnection from "../../src/RedisConnection.ts"
import { withClient } from "../support.ts"

/** Runs `effect` against a fresh server started with `args`, as the user in `url` (default: the default user). */
const onServer = <A, E>(
  args: ReadonlyArray<string>,
  effect: Effect.Effect<A, E, RedisConnection.RedisConnection>,
  user?: { readonly setup: ReadonlyArray<string>; readonly name: string; readonly password: string }
) =>
  Effect.gen(function* () {
    const server = yield* RedisTestServer.make({ args: [...args] })
    let url = server.url
    if (user !== undefined) {
      yield* Effect.promise(() => withClient(server.url, (c) => c.call("ACL", ...user.setup)))
      url = server.url.replace("redis://", `redis://${user.name}:${user.password}@`)
    }
    return yield* effect.pipe(Effect.provide(RedisConnection.layer({ url })))
  })

describe("Durability.inspect", () => {
  it.live(
    "appendonly no (the test servers' default, no save points): acknowledged writes can be lost, with the fix",
    () =>
      Effect.gen(function* () {
        const report = yield* onServer([], Durability.inspect)
        expect(report).toMatchObject({ aof: false, rdbSaves: [], verdict: "acknowledged-writes-can-be-lost" })
        expect(report.advice).toContain("AOF is off")
        expect(report.advice).toContain("CONFIG SET appendonly yes")
      })
  )

  it.live("appendonly no with RDB save points: still lost since the last snapshot", () =>
    Effect.gen(function* () {
      const report = yield* onServer(["--save", "3600 1 300 100"], Durability.inspect)
      expect(report).toMatchObject({ aof: false, rdbSaves: ["3600 1", "300 100"] })
      expect(report.verdict).toBe("acknowledged-writes-can-be-lost")
      expect(report.advice).toContain("since the last RDB snapshot")
    })
  )

  it.live("appendfsync always: durable", () =>
    Effect.gen(function* () {
      const report = yield* onServer(["--appendonly", "yes", "--appendfsync", "always"], Durability.inspect)
      expect(report).toMatchObject({ aof: true, appendfsync: "always", verdict: "durable" })
    })
  )

  it.live("appendfsync everysec: the last second is at risk on a power loss, not on a restart", () =>
    Effect.gen(function* () {
      const report = yield* onServer(["--appendonly", "yes", "--appendfsync", "everysec"], Durability.inspect)
      expect(report).toMatchObject({ aof: true, appendfsync: "everysec", verdict: "last-second-at-risk" })
    })
  )

  it.live("appendfsync no: acknowledged writes can be lost, the fix says everysec", () =>
    Effect.gen(function* () {
      const report = yield* onServer(["--appendonly", "yes", "--appendfsync", "no"], Durability.inspect)
      expect(report).toMatchObject({ aof: true, appendfsync: "no", verdict: "acknowledged-writes-can-be-lost" })
      expect(report.advice).toContain("CONFIG SET appendfsync everysec")
    })
  )

  it.live("a user without CONFIG (ACL): unknown, saying so", () =>
    Effect.gen(function* () {
      const report = yield* onServer(["--appendonly", "yes"], Durability.inspect, {
        setup: ["SETUSER", "app", "on", ">pw", "~*", "+@all", "-config"],
        name: "app",
        password: "pw"
      })
      expect(report.verdict).toBe("unknown")
      expect(report.advice).toContain("refused CONFIG GET")
    })
  )
})

describe("Durability.check", () => {
  it.live("require: fails with DurabilityError when writes can be lost", () =>
    Effect.gen(function* () {
      const error = yield* onServer([], Durability.check({ require: true })).pipe(Effect.flip)
      expect(error._tag).toBe("DurabilityError")
      expect(error).toMatchObject({ verdict: "acknowledged-writes-can-be-lost" })
      expect(error.message).toContain("CONFIG SET appendonly yes")
    })
  )

  it.live("require: everysec passes (nothing is lost on a Redis restart)", () =>
    Effect.gen(function* () {
      const report = yield* onServer(
        ["--appendonly", "yes", "--appendfsync", "everysec"],
        Durability.check({ require: true })
      )
      expect(report.verdict).toBe("last-second-at-risk")
    })
  )

  it.live("require: unknown fails (nothing shows the writes are safe)", () =>
    Effect.gen(function* () {
      const error = yield* onServer([], Durability.check({ require: true }), {
        setup: ["SETUSER", "app", "on", ">pw", "~*", "+@all", "-config"],
        name: "app",
        password: "pw"
      }).pipe(Effect.flip)
      expect(error).toMatchObject({ _tag: "DurabilityError", verdict: "unknown" })
    })
  )

  it.live("not required: succeeds, and /health shows the advice without making the app not ready", () =>
    Effect.gen(function* () {
      const health = yield* PipelineHealth.make()
      yield* health.set("orders", "running")
      const report = yield* onServer(
        [],
        Durability.check({ require: false, pipeline: "orders" }).pipe(
          Effect.provide(Layer.succeed(PipelineHealth.PipelineHealth, health))
        )
      )
      expect(report.verdict).toBe("acknowledged-writes-can-be-lost")
      const body = yield* health.health
      expect(body.conditions?.["orders/durability"]?.message).toContain("Acknowledged writes can be lost")
      expect((yield* health.readiness).status).toBe("ready")
    })
  )
})
