/**
 * MemoryGuard against real redis-servers with a real `maxmemory`: memory filled by a big string key past the high
 * water holds writes, freeing it lets them through; no maxmemory or an allkeys-* policy never holds.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Option } from "effect"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as MemoryGuard from "../../src/MemoryGuard.ts"
import * as RedisConnection from "../../src/RedisConnection.ts"
import { uniquePrefix, withClient } from "../support.ts"

const sleep = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))

const cmd = <A>(url: string, f: Parameters<typeof withClient<A>>[1]) => Effect.promise(() => withClient(url, f))

const usedMemory = (url: string) =>
  cmd(url, async (c) => {
    const info = await c.info("memory")
    const field = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, "m").exec(info)?.[1] ?? "0")
    return field("used_memory") - field("mem_not_counted_for_evict")
  })

/**
 * Fills memory to about `share` of `maxmemory` with keys `<key>:<i>` of at most 64 KB (one big SET would be refused:
 * its query buffer alone counts against maxmemory); answers the share reached.
 */
const fillTo = (url: string, key: string, maxmemory: number, share: number) =>
  Effect.gen(function* () {
    yield* free(url, key)
    const target = maxmemory * share
    for (let i = 0; ; i++) {
      const used = yield* usedMemory(url)
      if (used >= target - 1024) return used / maxmemory
      yield* cmd(url, (c) => c.set(`${key}:${i}`, "x".repeat(Math.min(64 * 1024, Math.round(target - used)))))
    }
  })

/** Deletes keys {@link fillTo} wrote, last first, until memory is below `share` (never dipping far below it). */
const shrinkTo = (url: string, key: string, maxmemory: number, share: number) =>
  Effect.gen(function* () {
    const keys = yield* cmd(url, (c) => c.keys(`${key}:*`))
    keys.sort((a, b) => Number(b.split(":").pop()) - Number(a.split(":").pop()))
    for (const k of keys) {
      const used = yield* usedMemory(url)
      if (used <= maxmemory * share) return used / maxmemory
      yield* cmd(url, (c) => c.del(k))
    }
    return (yield* usedMemory(url)) / maxmemory
  })

/** Deletes what {@link fillTo} wrote. */
const free = (url: string, key: string) =>
  cmd(url, async (c) => {
    const keys = await c.keys(`${key}:*`)
    if (keys.length > 0) await c.del(...keys)
  })

/** A server with `maxmemory` 8 MB above what it uses empty, and the guard's connection to it. */
const serverWith = (policy: string, maxmemory: "set" | "unset") =>
  Effect.gen(function* () {
    const server = yield* RedisTestServer.make({ args: ["--maxmemory-policy", policy] })
    const limit = (yield* usedMemory(server.url)) + 8 * 1024 * 1024
    if (maxmemory === "set") yield* cmd(server.url, (c) => c.config("SET", "maxmemory", String(limit)))
    const layer = RedisConnection.layer({ url: server.url })
    return { url: server.url, limit, layer, key: `${uniquePrefix("mem")}.ballast` }
  })

/** A guard whose connection lives as long as the test (a layer provided to `make` alone would close with it). */
const guardOn = (layer: ReturnType<typeof RedisConnection.layer>) =>
  Effect.flatMap(Layer.build(layer), (context) =>
    MemoryGuard.make({ pipeline: uniquePrefix("memguard"), interval: "50 millis" }).pipe(Effect.provideContext(context))
  )

describe("MemoryGuard", () => {
  it.live(
    "above high water it holds writes; between the waters it keeps holding; below low water it lets them go",
    () =>
      Effect.gen(function* () {
        const { key, layer, limit, url } = yield* serverWith("noeviction", "set")
        const guard = yield* guardOn(layer)

        // Well below the low water: writes go straight through.
        yield* guard.await
        expect(yield* guard.holding).toEqual(Option.none())

        expect(yield* fillTo(url, key, limit, 0.96)).toBeGreaterThan(0.9)
        yield* sleep(60)
        const write = yield* Effect.forkChild(guard.await)
        yield* sleep(300)
        expect(write.pollUnsafe()).toBeUndefined()
        expect(Option.getOrThrow(yield* guard.holding)).toMatch(/^used 9\d(\.\d)?% of maxmemory/)

        // Between low (80%) and high (90%) water: still held.
        const middle = yield* shrinkTo(url, key, limit, 0.85)
        expect(middle).toBeGreaterThan(0.8)
        expect(middle).toBeLessThan(0.9)
        yield* sleep(300)
        expect(write.pollUnsafe()).toBeUndefined()

        yield* free(url, key)
        yield* Fiber.join(write)
        expect(yield* guard.holding).toEqual(Option.none())
      })
  )

  it.live("raising maxmemory lets held writes go at the next read", () =>
    Effect.gen(function* () {
      const { key, layer, limit, url } = yield* serverWith("noeviction", "set")
      const guard = yield* guardOn(layer)
      yield* fillTo(url, key, limit, 0.96)
      const write = yield* Effect.forkChild(guard.await)
      yield* sleep(200)
      expect(write.pollUnsafe()).toBeUndefined()
      yield* cmd(url, (c) => c.config("SET", "maxmemory", String(limit * 4)))
      yield* Fiber.join(write)
      expect(yield* guard.holding).toEqual(Option.none())
    })
  )

  it.live("no maxmemory: never holds, however much memory is used", () =>
    Effect.gen(function* () {
      const { key, layer, limit, url } = yield* serverWith("noeviction", "unset")
      const guard = yield* guardOn(layer)
      yield* fillTo(url, key, limit, 0.99)
      for (let i = 0; i < 5; i++) {
        yield* guard.await
        expect(yield* guard.holding).toEqual(Option.none())
        yield* sleep(60)
      }
    })
  )

  it.live("allkeys-lru: Redis evicts instead of refusing, so the guard does not hold", () =>
    Effect.gen(function* () {
      const { key, layer, limit, url } = yield* serverWith("allkeys-lru", "set")
      const guard = yield* guardOn(layer)
      yield* fillTo(url, key, limit, 0.96)
      for (let i = 0; i < 3; i++) {
        yield* guard.await
        expect(yield* guard.holding).toEqual(Option.none())
        yield* sleep(60)
      }
    })
  )

  it.live("volatile-lru holds only once no key with a TTL is left to evict", () =>
    Effect.gen(function* () {
      const { key, layer, limit, url } = yield* serverWith("volatile-lru", "set")
      const guard = yield* guardOn(layer)
      yield* cmd(url, (c) => c.set(`${key}.cache`, "v", "EX", 3600))
      yield* fillTo(url, key, limit, 0.96)
      yield* guard.await
      expect(yield* guard.holding).toEqual(Option.none())
      yield* cmd(url, (c) => c.del(`${key}.cache`))
      yield* sleep(60)
      const write = yield* Effect.forkChild(guard.await)
      yield* sleep(200)
      expect(write.pollUnsafe()).toBeUndefined()
      yield* free(url, key)
      yield* Fiber.join(write)
    })
  )

  it.effect("lowWater must be below highWater: a ConfigError naming the option", () =>
    Effect.gen(function* () {
      const error = yield* MemoryGuard.make({ pipeline: "p", highWater: 0.8, lowWater: 0.85 }).pipe(
        Effect.provide(RedisConnection.layer({ url: "redis://127.0.0.1:1" })),
        Effect.flip
      )
      expect(error._tag).toBe("ConfigError")
      expect(error).toMatchObject({ component: "MemoryGuard", path: ["lowWater"] })
      const tooHigh = yield* MemoryGuard.make({ pipeline: "p", highWater: 1.5 }).pipe(
        Effect.provide(RedisConnection.layer({ url: "redis://127.0.0.1:1" })),
        Effect.flip
      )
      expect(tooHigh).toMatchObject({ component: "MemoryGuard", path: ["highWater"] })
    })
  )
})
