import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as RedisTopology from "@redflow/testing/RedisTopology"
import * as RedisConnection from "../../src/RedisConnection.ts"
import * as RedisStreamConsumer from "../../src/RedisStreamConsumer.ts"
import * as StreamAdmin from "../../src/StreamAdmin.ts"
import { readClusterStream, uniquePrefix } from "../support.ts"
import { sleep, start } from "./harness.ts"

describe("RedisStreamConsumer on a Redis Cluster", () => {
  it.live("reads, acknowledges and survives its stream's slot moving to another node mid-run (MOVED)", () =>
    Effect.gen(function* () {
      const cluster = yield* RedisTopology.cluster()
      const prefix = uniquePrefix("cluster-consumer")
      const stream = `${prefix}.orders`
      const produced = yield* start({ url: cluster.url, prefix, count: 6_000, ratePerSecond: 6_000 })
      yield* Fiber.join(produced.fiber)
      const entries = yield* Effect.promise(() => readClusterStream(cluster.nodes, stream))
      expect(entries.length).toBeGreaterThan(1_000)

      const handled: Array<string> = []
      const consumer = yield* RedisStreamConsumer.run({
        stream,
        group: "g",
        consumer: "w1",
        count: 50,
        block: "200 millis",
        handler: (event) => Effect.sleep("1 millis").pipe(Effect.andThen(Effect.sync(() => handled.push(event.id))))
      }).pipe(Effect.provide(RedisConnection.layer({ url: cluster.url })), Effect.forkChild)

      yield* sleep(300)
      expect(handled.length).toBeGreaterThan(0)
      expect(handled.length).toBeLessThan(entries.length)
      // The stream's slot moves to another node while the consumer reads and acknowledges.
      const slot = yield* cluster.keySlot(stream)
      const owner = yield* cluster.ownerOf(slot)
      const target = cluster.nodes.find((n) => n.id !== owner.id)!
      yield* cluster.migrateSlot(slot, target)
      expect((yield* cluster.ownerOf(slot)).id).toBe(target.id)

      const deadline = Date.now() + 30_000
      while (new Set(handled).size < entries.length && Date.now() < deadline) yield* sleep(100)
      yield* sleep(500)
      yield* Fiber.interrupt(consumer)
      // Every entry handled, once (nothing is redelivered within minIdle), and acknowledged.
      expect(handled.length).toBe(entries.length)
      expect(new Set(handled)).toEqual(new Set(entries.map((e) => e.fields.id)))
      const [group] = yield* StreamAdmin.groups(stream).pipe(
        Effect.provide(RedisConnection.layer({ url: cluster.url }))
      )
      expect(group?.pending).toBe(0)
      expect(group?.lag).toBe(0)
    })
  )
})
