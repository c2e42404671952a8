import { afterAll, afterEach, assert, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { Redis } from "ioredis"
import { ChaosProxy, RedisTestServer } from "../src/index.ts"
import { connectedClient, rejection } from "./support.ts"

// Plain async tests: they also cover the Promise forms (spawnRedisServer, ChaosProxy.start).

let server: RedisTestServer.SpawnedServer
let direct: Redis
const cleanups: Array<() => unknown> = []

beforeAll(async () => {
  server = await RedisTestServer.spawnRedisServer()
  direct = new Redis(server.url)
})

afterAll(async () => {
  direct.disconnect()
  await server.stop()
})

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

const proxyTo = async (): Promise<ChaosProxy.ChaosProxy> => {
  const proxy = await ChaosProxy.start({ target: server.url })
  cleanups.push(() => proxy.close())
  return proxy
}

/** A client through the proxy that fails fast; errors and reconnects are recorded. */
const clientVia = async (
  proxy: ChaosProxy.ChaosProxy,
  options: { commandTimeout?: number; reconnect?: boolean } = {}
) => {
  const errors: Array<NodeJS.ErrnoException> = []
  let reconnects = 0
  const client = new Redis(proxy.url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: options.reconnect === true ? () => 50 : () => null,
    ...(options.commandTimeout === undefined ? {} : { commandTimeout: options.commandTimeout })
  })
  client.on("error", (error: NodeJS.ErrnoException) => errors.push(error))
  client.on("reconnecting", () => reconnects++)
  cleanups.push(() => client.disconnect())
  await client.connect()
  return { client, errors, reconnects: () => reconnects }
}

const settled = <A>(promise: Promise<A>) => {
  const state: { done: boolean; value?: A; error?: unknown } = { done: false }
  promise.then(
    (value) => Object.assign(state, { done: true, value }),
    (error: unknown) => Object.assign(state, { done: true, error })
  )
  return state
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const until = async (condition: () => boolean | Promise<boolean>, timeoutMs = 5_000) => {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error("condition not reached in time")
    await sleep(10)
  }
}

describe("ChaosProxy", () => {
  it("passes commands and replies through and counts connections and bytes", async () => {
    const proxy = await proxyTo()
    const { client } = await clientVia(proxy)
    assert.strictEqual(await client.set("proxy:pass", "1"), "OK")
    assert.strictEqual(await client.get("proxy:pass"), "1")
    assert.strictEqual(proxy.connectionCount, 1)
    const stats = proxy.stats()
    assert.isAbove(stats.bytesToServer, 0)
    assert.isAbove(stats.bytesToClient, 0)
    assert.strictEqual(stats.accepted, 1)
  })

  it("blackhole holds bytes both ways, and heal delivers them in order", async () => {
    const proxy = await proxyTo()
    const { client } = await clientVia(proxy)
    await direct.del("proxy:queue", "proxy:held")

    // server -> client: the reply to a BLPOP is held
    const popped = settled(client.blpop("proxy:queue", 0))
    await until(async () => /blocked_clients:1/.test(await direct.info("clients")))
    proxy.blackhole()
    await direct.rpush("proxy:queue", "job-1")
    await sleep(200)
    assert.isFalse(popped.done, "the reply is held")
    assert.isAbove(proxy.stats().heldBytes, 0)

    // client -> server: a write is held, the server never sees it until the heal
    const written = settled(client.set("proxy:held", "late"))
    await sleep(200)
    assert.isNull(await direct.get("proxy:held"))
    assert.isFalse(written.done)

    proxy.heal()
    await until(() => popped.done && written.done)
    assert.deepStrictEqual(popped.value, ["proxy:queue", "job-1"])
    assert.strictEqual(written.value, "OK")
    assert.strictEqual(await direct.get("proxy:held"), "late")
    assert.strictEqual(proxy.stats().heldBytes, 0)
  })

  it("blackhole holds new connections too: connect completes only after the heal", async () => {
    const proxy = await proxyTo()
    proxy.blackhole()
    const client = new Redis(proxy.url, { lazyConnect: true, retryStrategy: () => null })
    cleanups.push(() => client.disconnect())
    const ready = settled(client.connect())
    await sleep(200)
    assert.isFalse(ready.done, "no reply to the handshake while partitioned")
    proxy.heal()
    await until(() => ready.done)
    assert.isUndefined(ready.error)
    assert.strictEqual(await client.ping(), "PONG")
  })

  it("dropReplies lets a write reach the server but loses its reply; heal resets that connection", async () => {
    const proxy = await proxyTo()
    const { client, errors } = await clientVia(proxy, { commandTimeout: 300, reconnect: true })
    await direct.del("proxy:dropped")

    proxy.dropReplies()
    const error = await client.set("proxy:dropped", "1").then(
      () => undefined,
      (e: Error) => e.message
    )
    expect(error).toMatch(/Command timed out/)
    assert.strictEqual(await direct.get("proxy:dropped"), "1", "the write happened, only the reply was lost")
    assert.isAbove(proxy.stats().droppedBytes, 0)

    proxy.heal()
    assert.strictEqual(proxy.stats().reset, 1, "the connection that lost a reply is reset")
    await until(() => errors.some((e) => e.code === "ECONNRESET"))
    await until(() => client.status === "ready")
    assert.strictEqual(await client.ping(), "PONG")
  })

  it("refuse resets new connections at once and leaves open ones alone", async () => {
    const proxy = await proxyTo()
    const { client: existing } = await clientVia(proxy)

    proxy.refuse()
    const fresh = new Redis(proxy.url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
    cleanups.push(() => fresh.disconnect())
    const errors: Array<NodeJS.ErrnoException> = []
    fresh.on("error", (e: NodeJS.ErrnoException) => errors.push(e))
    const connectError = await fresh.connect().then(
      () => undefined,
      (e: Error) => e.message
    )
    assert.isDefined(connectError, "a new connect fails")
    assert.isTrue(errors.some((e) => e.code === "ECONNRESET"))
    assert.strictEqual(proxy.stats().refused, 1)
    assert.strictEqual(await existing.ping(), "PONG", "the open connection still works")

    proxy.heal()
    const again = new Redis(proxy.url, { lazyConnect: true, retryStrategy: () => null })
    cleanups.push(() => again.disconnect())
    await again.connect()
    assert.strictEqual(await again.ping(), "PONG")
  })

  it("resetAll destroys open connections with RST: the client sees ECONNRESET and reconnects", async () => {
    const proxy = await proxyTo()
    const { client, errors, reconnects } = await clientVia(proxy, { reconnect: true })
    assert.strictEqual(await client.ping(), "PONG")

    assert.strictEqual(proxy.resetAll(), 1)
    await until(() => errors.some((e) => e.code === "ECONNRESET"))
    await until(() => client.status === "ready")
    assert.isAtLeast(reconnects(), 1)
    assert.strictEqual(await client.ping(), "PONG")
    assert.strictEqual(proxy.connectionCount, 1)
    assert.strictEqual(proxy.stats().accepted, 2)
  })

  it("a server that goes away resets the client connection", async () => {
    const own = await RedisTestServer.spawnRedisServer()
    const proxy = await ChaosProxy.start({ target: { host: own.host, port: own.port } })
    cleanups.push(() => proxy.close())
    const client = new Redis(proxy.url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
    cleanups.push(() => client.disconnect())
    client.on("error", () => undefined)
    await client.connect()
    await own.stop()
    await until(() => client.status === "end")
    assert.strictEqual(proxy.connectionCount, 0)
  })
})

describe("ChaosProxy.make", () => {
  it.effect("is closed with its scope: its port refuses connections afterwards", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const proxy = yield* ChaosProxy.make({ target: server }).pipe(Scope.provide(scope))
      const client = yield* connectedClient(proxy.url)
      assert.strictEqual(yield* Effect.promise(() => client.ping()), "PONG")

      yield* Scope.close(scope, Exit.void)
      assert.strictEqual(proxy.connectionCount, 0)
      const refused = yield* Effect.promise(() =>
        rejection(Effect.runPromise(Effect.scoped(connectedClient(proxy.url))))
      )
      expect(refused).toMatch(/ECONNREFUSED/)
    })
  )
})
