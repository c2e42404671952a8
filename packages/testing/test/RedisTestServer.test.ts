import * as Fs from "node:fs"
import { assert, describe, expect, it, layer } from "@effect/vitest"
import { ConfigProvider, Effect, Exit, Scope } from "effect"
import { RedisTestServer, RedisTopology } from "../src/index.ts"
import { connectedClient, rejection } from "./support.ts"

const dirOf = (args: ReadonlyArray<string>): string => args[args.indexOf("--dir") + 1] ?? ""

describe("RedisTestServer", () => {
  it.effect("spawns a redis-server that answers PING, and stops it by pid when the scope closes", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const server = yield* RedisTestServer.make({ useEnv: false, docker: false }).pipe(Scope.provide(scope))
      assert.strictEqual(server.source, "process")
      assert.match(server.url, /^redis:\/\/127\.0\.0\.1:\d+$/)
      const pid = server.pid
      assert.isNumber(pid)

      const pong = yield* Effect.scoped(
        connectedClient(server.url).pipe(Effect.flatMap((client) => Effect.promise(() => client.ping())))
      )
      assert.strictEqual(pong, "PONG")
      assert.isTrue(RedisTopology.isAlive(pid as number))
      assert.isTrue(Fs.existsSync(dirOf(server.args)))

      yield* Scope.close(scope, Exit.void)
      assert.isFalse(RedisTopology.isAlive(pid as number))
      assert.isFalse(Fs.existsSync(dirOf(server.args)), "the temp dir is removed")
    })
  )

  it.effect("stops the server when the test using it fails", () =>
    Effect.gen(function* () {
      let pid = 0
      const exit = yield* Effect.exit(
        Effect.scoped(
          Effect.gen(function* () {
            const server = yield* RedisTestServer.spawn()
            pid = server.pid
            return yield* Effect.fail("assertion failed")
          })
        )
      )
      assert.isTrue(Exit.isFailure(exit))
      assert.isAbove(pid, 0)
      assert.isFalse(RedisTopology.isAlive(pid))
    })
  )

  it.effect("passes extra server arguments: --requirepass and --maxmemory", () =>
    Effect.gen(function* () {
      const server = yield* RedisTestServer.make({ args: ["--requirepass", "s3cret", "--maxmemory", "10mb"] })
      assert.strictEqual(server.source, "process")
      assert.include(server.args.join(" "), "--requirepass s3cret")

      const denied = yield* Effect.promise(() =>
        rejection(Effect.runPromise(Effect.scoped(connectedClient(server.url))))
      )
      expect(denied).toMatch(/^NOAUTH\b/)

      const maxmemory = yield* Effect.scoped(
        connectedClient(server.url, { password: "s3cret" }).pipe(
          Effect.flatMap((client) => Effect.promise(() => client.config("GET", "maxmemory")))
        )
      )
      assert.deepStrictEqual(maxmemory, ["maxmemory", String(10 * 1024 * 1024)])
    })
  )

  it.effect("uses REDIS_URL when set and no extra arguments are asked for", () =>
    Effect.gen(function* () {
      const fromEnv = yield* RedisTestServer.make()
      assert.deepInclude(fromEnv, { source: "env", host: "redis.example", port: 7777 })
      assert.isUndefined(fromEnv.pid, "nothing was spawned")

      const withArgs = yield* RedisTestServer.make({ args: ["--maxmemory", "1mb"], docker: false })
      assert.strictEqual(withArgs.source, "process", "REDIS_URL cannot take extra args, so a server is spawned")
    }).pipe(
      Effect.provideService(
        ConfigProvider.ConfigProvider,
        ConfigProvider.fromEnv({ env: { REDIS_URL: "redis://redis.example:7777" } })
      )
    )
  )

  it.effect("fails with a message naming REDIS_URL, redis-server and Docker when none is available", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(
        RedisTestServer.make({ useEnv: false, binary: "/nonexistent/redis-server", docker: false })
      )
      assert.strictEqual(error._tag, "NoRedisAvailable")
      expect(error.message).toContain("REDIS_URL")
      expect(error.message).toContain("redis-server")
      expect(error.message).toContain("Docker")
      expect(error.message).toContain("/nonexistent/redis-server is not installed")
    })
  )

  it("spawnRedisServer gives a url, port and pid to plain async code and stop() ends the process", async () => {
    const server = await RedisTestServer.spawnRedisServer({ args: ["--enable-debug-command", "local"] })
    try {
      assert.strictEqual(server.url, `redis://127.0.0.1:${server.port}`)
      assert.isTrue(RedisTopology.isAlive(server.pid))
      const reply = await Effect.runPromise(
        Effect.scoped(
          connectedClient(server.url).pipe(
            Effect.flatMap((client) => Effect.promise(() => client.call("DEBUG", "SLEEP", "0")))
          )
        )
      )
      assert.strictEqual(reply, "OK", "DEBUG is enabled by the extra argument")
    } finally {
      await server.stop()
    }
    assert.isFalse(RedisTopology.isAlive(server.pid))
    assert.isFalse(Fs.existsSync(dirOf(server.args)))
  })

  it("freePort gives a port where a connection is refused", async () => {
    const port = await RedisTestServer.freePort()
    const error = await rejection(Effect.runPromise(Effect.scoped(connectedClient(`redis://127.0.0.1:${port}`))))
    expect(error).toMatch(/ECONNREFUSED/)
  })
})

layer(RedisTestServer.layer({ args: ["--maxmemory", "64mb"] }))("RedisTestServer.layer", (it) => {
  it.effect("gives the tests of a block one server", () =>
    Effect.gen(function* () {
      const server = yield* RedisTestServer.RedisTestServer
      const client = yield* connectedClient(server.url)
      yield* Effect.promise(() => client.set("shared", String(server.pid)))
    })
  )

  it.effect("where the previous test's write is still there", () =>
    Effect.gen(function* () {
      const server = yield* RedisTestServer.RedisTestServer
      const client = yield* connectedClient(server.url)
      assert.strictEqual(yield* Effect.promise(() => client.get("shared")), String(server.pid))
    })
  )
})
