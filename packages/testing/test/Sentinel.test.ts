import { assert, describe, it } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import { Redis } from "ioredis"
import { RedisTopology } from "../src/index.ts"
import { connectedClient } from "./support.ts"

describe("RedisTopology.sentinel", () => {
  it.live(
    "reports the master, and promotes the replica after the master is SIGKILLed",
    () =>
      Effect.gen(function* () {
        const topology = yield* RedisTopology.sentinel()
        assert.strictEqual(topology.sentinels.length, 3)
        assert.strictEqual(topology.masterName, "mymaster")
        assert.deepStrictEqual(yield* topology.currentMaster, { host: "127.0.0.1", port: topology.master.port })

        const sentinel = yield* connectedClient(topology.sentinels[0]!.url)
        const replicas = (yield* Effect.promise(() =>
          sentinel.call("SENTINEL", "REPLICAS", topology.masterName)
        )) as Array<Array<string>>
        assert.strictEqual(replicas.length, 1)
        assert.include(replicas[0] ?? [], String(topology.replica.port))

        // A client that finds the master through the sentinels, as an application would.
        const client = yield* Effect.acquireRelease(
          Effect.sync(() => {
            const c = new Redis({
              sentinels: topology.sentinels.map(({ host, port }) => ({ host, port })),
              name: topology.masterName,
              maxRetriesPerRequest: 1
            })
            c.on("error", () => undefined)
            return c
          }),
          (c) => Effect.sync(() => c.disconnect())
        )
        yield* Effect.promise(() => client.set("before", "failover"))

        yield* RedisTopology.kill(topology.master.pid)
        assert.isFalse(RedisTopology.isAlive(topology.master.pid))

        const promoted = yield* topology.waitForNewMaster({ timeout: "20 seconds" })
        assert.strictEqual(promoted.port, topology.replica.port)
        assert.strictEqual(promoted.pid, topology.replica.pid)
        assert.deepStrictEqual(yield* topology.currentMaster, { host: "127.0.0.1", port: topology.replica.port })

        const role = yield* Effect.scoped(
          connectedClient(promoted.url).pipe(Effect.flatMap((c) => Effect.promise(() => c.role())))
        )
        assert.strictEqual(role[0], "master")

        // The sentinel client reaches the new master: the write made before the failover is there, a new one lands.
        yield* Effect.tryPromise(() => client.set("after", "failover")).pipe(
          Effect.retry(Schedule.spaced("200 millis").pipe(Schedule.upTo({ times: 50 })))
        )
        assert.strictEqual(yield* Effect.promise(() => client.get("before")), "failover")
        assert.strictEqual(yield* Effect.promise(() => client.get("after")), "failover")
      }),
    40_000
  )
})
