import { assert, describe, expect, it, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { Cluster } from "ioredis"
import { RedisTopology } from "../src/index.ts"
import { connectedClient, rejection } from "./support.ts"

describe("RedisTopology.primaryReplica", () => {
  it.effect("replicates a write to the replica, which refuses writes with READONLY", () =>
    Effect.gen(function* () {
      const { master, replica } = yield* RedisTopology.primaryReplica()
      assert.notStrictEqual(master.port, replica.port)
      const toMaster = yield* connectedClient(master.url)
      const toReplica = yield* connectedClient(replica.url)

      yield* Effect.promise(() => toMaster.set("greeting", "hello"))
      const acked = yield* Effect.promise(() => toMaster.wait(1, 5_000))
      assert.strictEqual(acked, 1, "the replica acknowledged the write")
      assert.strictEqual(yield* Effect.promise(() => toReplica.get("greeting")), "hello")

      const refused = yield* Effect.promise(() => rejection(toReplica.set("greeting", "from replica")))
      expect(refused).toMatch(/^READONLY\b/)
      const role = yield* Effect.promise(() => toReplica.role())
      assert.strictEqual(role[0], "slave")
    })
  )
})

describe("RedisTopology process faults", () => {
  it.effect("pause makes a server hang, resume brings it back, kill ends it", () =>
    Effect.gen(function* () {
      const node = yield* RedisTopology.standalone()
      const client = yield* connectedClient(node.url, { commandTimeout: 300 })

      yield* RedisTopology.pause(node.pid)
      const hung = yield* Effect.promise(() => rejection(client.ping()))
      expect(hung).toMatch(/Command timed out/)

      yield* RedisTopology.resume(node.pid)
      const fresh = yield* connectedClient(node.url, { commandTimeout: 1_000 })
      assert.strictEqual(yield* Effect.promise(() => fresh.ping()), "PONG")

      yield* RedisTopology.kill(node.pid)
      assert.isFalse(RedisTopology.isAlive(node.pid))
      const error = yield* Effect.flip(RedisTopology.kill(node.pid))
      assert.strictEqual(error._tag, "ProcessSignalFailed")
      assert.strictEqual(error.reason, "ESRCH")
    })
  )
})

class TestCluster extends Context.Service<TestCluster, RedisTopology.Cluster>()("test/TestCluster") {}

layer(Layer.effect(TestCluster, RedisTopology.cluster()), { excludeTestServices: true })(
  "RedisTopology.cluster",
  (it) => {
    it.effect("has three masters reporting cluster_state:ok and covering all 16384 slots", () =>
      Effect.gen(function* () {
        const cluster = yield* TestCluster
        assert.strictEqual(cluster.nodes.length, 3)
        for (const node of cluster.nodes) {
          const client = yield* connectedClient(node.url)
          const info = String(yield* Effect.promise(() => client.call("CLUSTER", "INFO")))
          expect(info).toContain("cluster_state:ok")
          expect(info).toContain("cluster_slots_assigned:16384")
          assert.strictEqual(yield* Effect.promise(() => client.call("CLUSTER", "MYID")), node.id)
        }
        expect(cluster.url).toBe(`redis+cluster://${cluster.nodes.map((n) => n.address).join(",")}`)
      })
    )

    it.effect("migrateSlot moves a slot and its keys: the old owner answers MOVED, a cluster client follows", () =>
      Effect.gen(function* () {
        const cluster = yield* TestCluster
        const key = "orders:{moved}"
        const slot = yield* cluster.keySlot(key)
        const from = yield* cluster.ownerOf(slot)
        const to = cluster.nodes.find((n) => n.id !== from.id) as RedisTopology.ClusterNode

        const oldOwner = yield* connectedClient(from.url)
        yield* Effect.promise(() => oldOwner.set(key, "v1"))

        const moved = yield* cluster.migrateSlot(slot, to)
        assert.strictEqual(moved.from.id, from.id)
        assert.strictEqual((yield* cluster.ownerOf(slot)).id, to.id)

        const redirect = yield* Effect.promise(() => rejection(oldOwner.get(key)))
        assert.strictEqual(redirect, `MOVED ${slot} ${to.address}`)
        const newOwner = yield* connectedClient(to.url)
        assert.strictEqual(yield* Effect.promise(() => newOwner.get(key)), "v1", "the key moved with its slot")

        const client = yield* Effect.acquireRelease(
          Effect.sync(() => new Cluster(cluster.nodes.map(({ host, port }) => ({ host, port })))),
          (c) => Effect.sync(() => c.disconnect())
        )
        assert.strictEqual(yield* Effect.promise(() => client.get(key)), "v1")
      })
    )

    it.effect("beginSlotMigration leaves a slot half-moved: the owner answers ASK for a moved key", () =>
      Effect.gen(function* () {
        const cluster = yield* TestCluster
        const [kept, moving] = ["{ask}:kept", "{ask}:moving"]
        const slot = yield* cluster.keySlot(kept)
        const from = yield* cluster.ownerOf(slot)
        const to = cluster.nodes.find((n) => n.id !== from.id) as RedisTopology.ClusterNode
        const source = yield* connectedClient(from.url)
        yield* Effect.promise(() => source.mset(kept, "here", moving, "there"))

        const migration = yield* cluster.beginSlotMigration(slot, to)
        assert.strictEqual(yield* migration.moveKeys([moving]), 1)

        assert.strictEqual(yield* Effect.promise(() => source.get(kept)), "here", "a key not yet moved is served")
        const ask = yield* Effect.promise(() => rejection(source.get(moving)))
        assert.strictEqual(ask, `ASK ${slot} ${to.address}`)

        yield* migration.complete
        assert.strictEqual((yield* cluster.ownerOf(slot)).id, to.id)
        const moved = yield* Effect.promise(() => rejection(source.get(kept)))
        assert.strictEqual(moved, `MOVED ${slot} ${to.address}`)
      })
    )
  }
)
