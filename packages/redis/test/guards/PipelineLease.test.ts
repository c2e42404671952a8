/**
 * PipelineLease against a real Redis: two holders in one process (two scopes), a holder whose lease is let go by
 * Redis while it is "paused", renewals that cannot go through, and the fence refusing a stale writer's script.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Option, Scope } from "effect"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Script from "../../src/internal/script.ts"
import * as PipelineLease from "../../src/PipelineLease.ts"
import * as RedisConnection from "../../src/RedisConnection.ts"
import { uniquePrefix, withClient } from "../support.ts"

const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const connection = RedisConnection.layer({ url })
const sleep = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))
const cmd = <A>(f: Parameters<typeof withClient<A>>[1], at = url) => Effect.promise(() => withClient(at, f))

const options = (pipeline: string) => ({ pipeline, ttl: "1500 millis", renewEvery: "100 millis" }) as const

/** Acquires in a scope of its own, closed by the test. */
const acquireIn = (scope: Scope.Closeable, o: PipelineLease.Options) =>
  PipelineLease.acquire(o).pipe(Scope.provide(scope))

describe("PipelineLease", () => {
  it.live("a second holder waits, takes over when the first's scope closes, with a higher token", () =>
    Effect.gen(function* () {
      const pipeline = uniquePrefix("lease-handover")
      const scopeA = yield* Scope.make()
      const scopeB = yield* Scope.make()
      const a = yield* acquireIn(scopeA, { ...options(pipeline), holder: "a" })
      const waiting = yield* Effect.forkChild(acquireIn(scopeB, { ...options(pipeline), holder: "b" }))
      // Several ttls: the first keeps renewing, the second keeps waiting.
      yield* sleep(2_000)
      expect(waiting.pollUnsafe()).toBeUndefined()
      expect(yield* PipelineLease.current(pipeline)).toEqual(Option.some({ holder: "a", token: a.token }))

      yield* Scope.close(scopeA, Exit.void)
      const b = yield* Fiber.join(waiting)
      expect(b.token).toBeGreaterThan(a.token)
      expect(yield* PipelineLease.current(pipeline)).toEqual(Option.some({ holder: "b", token: b.token }))
      expect(yield* cmd((c) => c.get(PipelineLease.fenceKey(pipeline)))).toBe(String(b.token))
      yield* Scope.close(scopeB, Exit.void)
      expect(yield* PipelineLease.current(pipeline)).toEqual(Option.none())
    }).pipe(Effect.provide(connection))
  )

  it.live("a holder whose lease Redis let go (a paused process) is taken over, and its lost fails", () =>
    Effect.gen(function* () {
      const pipeline = uniquePrefix("lease-paused")
      const scopeA = yield* Scope.make()
      const scopeB = yield* Scope.make()
      // A long renewal interval stands in for a paused process: its lease expires before it renews.
      const a = yield* acquireIn(scopeA, { pipeline, ttl: "10 seconds", renewEvery: "600 millis", holder: "a" })
      yield* cmd((c) => c.pexpire(PipelineLease.leaseKey(pipeline), 1))
      const b = yield* acquireIn(scopeB, { ...options(pipeline), holder: "b" })
      expect(b.token).toBeGreaterThan(a.token)

      const error = yield* Effect.flip(a.lost)
      expect(error).toMatchObject({ _tag: "LeaseLost", reason: "taken", holder: "b", token: b.token })
      expect(error.message).toContain("taken over by b")
      // Closing the stale holder's scope does not release the new holder's lease.
      yield* Scope.close(scopeA, Exit.void)
      expect(yield* PipelineLease.current(pipeline)).toEqual(Option.some({ holder: "b", token: b.token }))
      yield* Scope.close(scopeB, Exit.void)
    }).pipe(Effect.provide(connection))
  )

  it.live("renewals that cannot go through for a whole ttl: lost (unreachable), and a standby takes over", () =>
    Effect.gen(function* () {
      // A server of its own: the holder's user loses its right to run scripts, so no renewal goes through.
      const server = yield* RedisTestServer.make({ args: ["--save", ""] })
      yield* cmd((c) => c.call("ACL", "SETUSER", "a", "on", ">pw", "~*", "+@all"), server.url)
      const pipeline = uniquePrefix("lease-unreachable")
      const holderConnection = yield* Layer.build(
        RedisConnection.layer({ url: server.url.replace("redis://", "redis://a:pw@") })
      )
      const standbyConnection = yield* Layer.build(RedisConnection.layer({ url: server.url }))
      const a = yield* PipelineLease.acquire({ ...options(pipeline), holder: "a" }).pipe(
        Effect.provideContext(holderConnection)
      )
      yield* cmd((c) => c.call("ACL", "SETUSER", "a", "-@scripting"), server.url)
      const error = yield* Effect.flip(a.lost)
      expect(error).toMatchObject({ _tag: "LeaseLost", reason: "unreachable" })

      const b = yield* PipelineLease.acquire({ ...options(pipeline), holder: "b" }).pipe(
        Effect.provideContext(standbyConnection)
      )
      expect(b.token).toBeGreaterThan(a.token)
    })
  )

  it.live("the fence refuses a stale writer's script (writing nothing) and lets the current holder's through", () =>
    Effect.gen(function* () {
      const pipeline = uniquePrefix("lease-fence")
      const stream = `${pipeline}.events`
      const write = Script.make({
        name: "fenced-xadd",
        source: `#!lua
${PipelineLease.fenceCheck({ fenceKey: "KEYS[2]", token: "ARGV[1]" })}
return redis.call('XADD', KEYS[1], '*', 'event', ARGV[2])
`,
        keys: (_token: number, _event: string) => [stream, PipelineLease.fenceKey(pipeline)],
        args: (token: number, event: string) => [token, event],
        parse: String
      })
      const scopeA = yield* Scope.make()
      const a = yield* acquireIn(scopeA, { ...options(pipeline), holder: "a" })
      yield* Script.run(write, a.token, "from a")
      yield* Scope.close(scopeA, Exit.void)
      const b = yield* PipelineLease.acquire({ ...options(pipeline), holder: "b" })

      const refused = yield* Script.run(write, a.token, "stale").pipe(Effect.flip)
      const fenced = PipelineLease.fenced(pipeline, a.token, refused)
      expect(Option.getOrThrow(fenced)).toMatchObject({ _tag: "LeaseFenced", token: a.token, current: b.token })
      expect(Option.getOrThrow(fenced).message).toContain(`a newer holder (token ${b.token}) took the pipeline over`)

      yield* Script.run(write, b.token, "from b")
      const events = yield* cmd(async (c) => (await c.xrange(stream, "-", "+")).map(([, f]) => f[1]))
      expect(events).toEqual(["from a", "from b"])
    }).pipe(Effect.provide(connection))
  )

  it.effect("renewEvery must be shorter than ttl", () =>
    Effect.gen(function* () {
      const error = yield* PipelineLease.acquire({ pipeline: "p", ttl: "1 second", renewEvery: "2 seconds" }).pipe(
        Effect.flip
      )
      expect(error).toMatchObject({ _tag: "ConfigError", component: "PipelineLease", path: ["renewEvery"] })
    }).pipe(Effect.provide(RedisConnection.layer({ url: "redis://127.0.0.1:1" })))
  )
})
