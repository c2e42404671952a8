import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as RedisTopology from "@redflow/testing/RedisTopology"
import { readClusterStream, uniquePrefix } from "../support.ts"
import { landed, sleep, start } from "./harness.ts"

describe("Cluster MOVED/ASK (spec: automatic redirect in cluster mode)", () => {
  for (const guarantee of ["exactly-once", "at-least-once"] as const) {
    it.live(
      `${guarantee}: a slot migrated mid-run (MOVED), then another half-migrated (ASK): every event lands once`,
      () =>
        Effect.gen(function* () {
          const cluster = yield* RedisTopology.cluster()
          const prefix = uniquePrefix(`cluster-${guarantee}`)
          const read = (stream: string) => readClusterStream(cluster.nodes, stream)
          const run = yield* start({
            url: cluster.url,
            prefix,
            count: 9_000,
            ratePerSecond: 4_000,
            sink: { guarantee, batch: { maxEvents: 200 } }
          })
          yield* sleep(600)
          // MOVED: the orders stream's slot (and its high-water mark, which shares it) moves to another node.
          const ordersSlot = yield* cluster.keySlot(`${prefix}.orders`)
          const ordersOwner = yield* cluster.ownerOf(ordersSlot)
          const target = cluster.nodes.find((n) => n.id !== ordersOwner.id)!
          yield* cluster.migrateSlot(ordersSlot, target)
          expect((yield* cluster.ownerOf(ordersSlot)).id).toBe(target.id)
          yield* sleep(500)
          // ASK: the payments stream's slot is left half-migrated for a while, its keys already on the new node.
          const paymentsSlot = yield* cluster.keySlot(`${prefix}.payments`)
          const paymentsOwner = yield* cluster.ownerOf(paymentsSlot)
          const to = cluster.nodes.find((n) => n.id !== paymentsOwner.id)!
          const migration = yield* cluster.beginSlotMigration(paymentsSlot, to)
          yield* migration.moveKeys()
          yield* sleep(500)
          yield* migration.moveKeys()
          yield* migration.complete
          yield* Fiber.join(run.fiber)
          const result = yield* landed(cluster.url, prefix, 9_000, read)
          expect(result.missing).toEqual([])
          expect(result.duplicates).toBe(0)
          expect(result.outOfOrder).toBe(0)
        })
    )
  }
})
