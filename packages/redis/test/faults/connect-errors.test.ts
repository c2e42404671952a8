/**
 * What a user reads when the connection cannot work: a database the server does not have, and each real reason a
 * server cannot be reached (nothing listening, a name that does not resolve, TLS against a plain server, a server at
 * maxclients). Every fault is made for real.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Schedule } from "effect"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { Redis } from "ioredis"
import * as RedisConnection from "../../src/RedisConnection.ts"
import type { RedisError } from "../../src/RedisError.ts"
import { uniquePrefix } from "../support.ts"
import { start } from "./harness.ts"

/** PINGs through the connection until its failure satisfies `done` (the client keeps reconnecting meanwhile). */
const failureUntil = (redis: RedisConnection.RedisConnectionService, done: (error: RedisError) => boolean) =>
  redis
    .run((client) => client.ping())
    .pipe(
      Effect.flip,
      Effect.repeat({ until: done, schedule: Schedule.spaced("100 millis"), times: 300 }),
      Effect.orDie
    )

const spawned = (args: ReadonlyArray<string> = []) =>
  Effect.acquireRelease(
    Effect.promise(() => RedisTestServer.spawnRedisServer({ args })),
    (server) => Effect.promise(() => server.stop())
  )

const keysIn = (url: string, db: number) =>
  Effect.promise(async () => {
    const client = new Redis(url, { lazyConnect: true, db })
    await client.connect()
    try {
      return await client.keys("*")
    } finally {
      client.disconnect()
    }
  })

describe("a database index the server does not have", () => {
  it.live("fails the layer with a ConfigError naming the database and the fix, and writes nothing", () =>
    Effect.gen(function* () {
      const server = yield* spawned()
      const url = `${server.url}/20`
      const error = yield* RedisConnection.make({ url }).pipe(Effect.flip)
      expect(error._tag).toBe("ConfigError")
      expect(error).toMatchObject({ path: ["url"] })
      expect(error.message).toContain(`database 20`)
      expect(error.message).toContain(`127.0.0.1:${server.port}`)
      expect(error.message).toContain("ERR DB index is out of range")
      expect(error.message).toContain("databases")

      // The sink on that URL fails the same way and leaves db 0 untouched (no entries, no high-water key).
      const prefix = uniquePrefix("db20")
      const run = yield* start({ url, prefix, count: 100, sink: { guarantee: "exactly-once" } })
      const exit = yield* Fiber.await(run.fiber)
      expect(Exit.isFailure(exit)).toBe(true)
      expect(String(Exit.isFailure(exit) ? exit.cause : "")).toContain("database 20")
      expect(yield* keysIn(server.url, 0)).toEqual([])
    })
  )

  it.live("a database the server has is used (entries land in it, not in db 0)", () =>
    Effect.gen(function* () {
      const server = yield* spawned()
      const redis = yield* RedisConnection.make({ url: `${server.url}/3` })
      yield* redis.run((client) => client.xadd("in-db-3", "*", "f", "v"))
      expect(yield* keysIn(server.url, 3)).toEqual(["in-db-3"])
      expect(yield* keysIn(server.url, 0)).toEqual([])
    })
  )
})

describe("unreachable Redis: the message names the server and the real cause", () => {
  it.live("nothing listening: connection refused, with the host:port", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(() => RedisTestServer.freePort())
      const redis = yield* RedisConnection.make({ url: `redis://127.0.0.1:${port}` })
      const error = yield* failureUntil(redis, (e) => e.message.includes("ECONNREFUSED"))
      expect(error._tag).toBe("RedisUnavailable")
      expect(error.message).toContain(`127.0.0.1:${port}`)
      expect(error.message).toContain("connection refused")
      expect(error.message).toContain("is the server running")
      expect(error.message).not.toContain("enableOfflineQueue")
    })
  )

  it.live("a host name that does not resolve: ENOTFOUND, with the name", () =>
    Effect.gen(function* () {
      const redis = yield* RedisConnection.make({ url: "redis://redflow-missing-host.invalid:6390" })
      const error = yield* failureUntil(redis, (e) => e.message.includes("ENOTFOUND"))
      expect(error._tag).toBe("RedisUnavailable")
      expect(error.message).toContain("redflow-missing-host.invalid:6390")
      expect(error.message).toContain("does not resolve")
      expect(error.message).not.toContain("enableOfflineQueue")
    })
  )

  it.live("rediss:// against a plain server: the TLS handshake failed, is the server speaking TLS?", () =>
    Effect.gen(function* () {
      const server = yield* spawned()
      const redis = yield* RedisConnection.make({
        url: `rediss://127.0.0.1:${server.port}`,
        connectTimeout: "1 second"
      })
      const error = yield* failureUntil(redis, (e) => e.message.includes("TLS handshake failed"))
      expect(error._tag).toBe("RedisUnavailable")
      expect(error.message).toContain(`127.0.0.1:${server.port}`)
      expect(error.message).toContain("is the server speaking TLS")
      expect(error.message).not.toContain("enableOfflineQueue")
    })
  )

  it.live("a server at maxclients: its own refusal, ERR max number of clients reached", () =>
    Effect.gen(function* () {
      const server = yield* spawned(["--maxclients", "1"])
      const holder = yield* Effect.acquireRelease(
        Effect.promise(async () => {
          const client = new Redis(server.url, { lazyConnect: true })
          await client.connect()
          await client.ping()
          return client
        }),
        (client) => Effect.sync(() => client.disconnect())
      )
      expect(holder.status).toBe("ready")
      const redis = yield* RedisConnection.make({ url: server.url })
      const error = yield* failureUntil(redis, (e) => e.message.includes("ERR max number of clients reached"))
      expect(error._tag).toBe("RedisUnavailable")
      expect(error.message).toContain(`127.0.0.1:${server.port}`)
      expect(error.message).toContain("maxclients")
      // Once a client is free, the connection recovers.
      yield* Effect.sync(() => holder.disconnect())
      const pong = yield* redis
        .run((client) => client.ping())
        .pipe(Effect.retry({ schedule: Schedule.spaced("100 millis"), times: 300 }))
      expect(pong).toBe("PONG")
    })
  )

  it.live("the sink's lastError in health carries the server and the cause once the server goes away", () =>
    Effect.gen(function* () {
      const server = yield* Effect.promise(() => RedisTestServer.spawnRedisServer())
      yield* Effect.addFinalizer(() => Effect.promise(() => server.stop()))
      const prefix = uniquePrefix("refused-health")
      const health = yield* PipelineHealth.make()
      const run = yield* start({ url: server.url, prefix, count: 1_000_000, ratePerSecond: 500 }).pipe(
        Effect.provideService(PipelineHealth.PipelineHealth, health)
      )
      yield* run.checkpoint.pipe(Effect.repeat({ until: (n) => n > 0, schedule: Schedule.spaced("50 millis") }))
      // Stopped by pid: from now on nothing listens on its port.
      yield* Effect.promise(() => server.stop())
      const lastError = yield* health.components.pipe(
        // The sink's component, whatever its name: the only one in this health service.
        Effect.map((components) => Object.values(components).find((c) => c.lastError !== undefined)?.lastError ?? ""),
        Effect.repeat({ until: (e) => e.includes("ECONNREFUSED"), schedule: Schedule.spaced("100 millis"), times: 300 })
      )
      expect(lastError).toContain("RedisUnavailable")
      expect(lastError).toContain(`127.0.0.1:${server.port}`)
      expect(lastError).toContain("connection refused")
      expect(lastError).not.toContain("enableOfflineQueue")
    })
  )
})
