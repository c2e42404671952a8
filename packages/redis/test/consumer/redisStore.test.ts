/**
 * The Redis store of the consumer (internal/consumer/store.ts) against a real Redis: the calls whose meaning the
 * memory store copies (pending counts per consumer, the fence before parking, giving back with an idle time).
 */
import { expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Settings from "../../src/internal/consumer/settings.ts"
import * as Store from "../../src/internal/consumer/store.ts"
import * as RedisConnection from "../../src/RedisConnection.ts"
import * as StreamAdmin from "../../src/StreamAdmin.ts"
import { uniquePrefix } from "../support.ts"

layer(RedisTestServer.layer(), { excludeTestServices: true })("consumer store on Redis", (it) => {
  it.effect("deliveries counts only this consumer's entries; the fence and give-back act only on ours", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const redis = yield* RedisConnection.make({ url })
      const stream = uniquePrefix("store")
      const storeOf = (consumer: string) =>
        Effect.flatMap(Settings.decode({ stream, group: "g", consumer, minIdle: "10 seconds" }), (settings) =>
          Store.makeRedis(settings)
        ).pipe(Effect.provideService(RedisConnection.RedisConnection, redis))
      const [c1, c2] = [yield* storeOf("c1"), yield* storeOf("c2")]
      const add = (n: number) =>
        StreamAdmin.command("XADD", stream, [stream, "*", "event", `e${n}`], String).pipe(
          Effect.provideService(RedisConnection.RedisConnection, redis)
        )
      const [a, b] = [yield* add(1), yield* add(2)]
      expect(yield* c1.createGroup("0")).toBe(true)
      expect(yield* c2.createGroup("0")).toBe(false)
      expect((yield* c1.readGroup(">", 10, undefined)).map((e) => e.id)).toEqual([a, b])

      // c2 takes `a` over (as a claim would, one delivery more): it is no longer c1's.
      yield* StreamAdmin.claim(stream, "g", "c2", 0, [a]).pipe(
        Effect.provideService(RedisConnection.RedisConnection, redis)
      )
      expect([...(yield* c1.deliveries([a, b]))]).toEqual([[b, 1]])
      expect([...(yield* c2.deliveries([a, b]))]).toEqual([[a, 2]])

      // The fence holds only for the owner with the count it saw.
      expect(yield* c1.fence(a, 1)).toBe(false)
      expect(yield* c2.fence(a, 1)).toBe(false)
      expect(yield* c2.fence(a, 2)).toBe(true)
      expect(yield* c1.fence(b, 1)).toBe(true)

      // Give back: only entries still ours with that count; the count goes down by one, the idle time is set.
      expect(
        yield* c1.giveBack(
          [
            [a, 1],
            [b, 1]
          ],
          5000
        )
      ).toBe(1)
      const pending = yield* StreamAdmin.pendingEntries(stream, "g").pipe(
        Effect.provideService(RedisConnection.RedisConnection, redis)
      )
      const byId = new Map(pending.map((p) => [p.id, p]))
      expect(byId.get(a)).toMatchObject({ consumer: "c2", deliveries: 2 })
      expect(byId.get(b)).toMatchObject({ consumer: "c1", deliveries: 0 })
      expect(byId.get(b)!.idleMs).toBeGreaterThanOrEqual(5000)
      // Redis's answer to a fence after a give-back: the count moved, so it does not hold.
      expect(yield* c1.fence(b, 1)).toBe(false)
    })
  )
})
