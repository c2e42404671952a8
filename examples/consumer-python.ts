/**
 * The contract's Python consumer (redis-py) and its duplicate handling (docs/DESIGN.md), written with Redflow.
 *
 * The original wraps `xgroup_create` in `try/except ResponseError: pass` (hiding any other error too), loops
 * `xreadgroup(count=10, block=5000)`, `json.loads`es `data[b"event"]` (a bad entry raises and kills the loop),
 * processes, and `xack`s. Its dedup keeps `processed_ids` in a process-local `set()`: it grows forever, is lost on
 * restart, and is not shared with the other workers of the group, so a duplicate that reaches another worker, or
 * arrives after a restart, is processed again.
 *
 * Here the processed ids live in Redis (`SET processed:… 1 NX PX <ttl>`, shared by all workers, expiring), the
 * event is decoded and validated, and `Idempotency.once` marks an id only after `process` succeeded, so a failure
 * is retried rather than remembered as done.
 *
 * Run: `pnpm exec node examples/consumer-python.ts` (REDIS_URL, or a redis-server spawned for the run).
 */
import { Effect } from "effect"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as Idempotency from "@redflow/redis/Idempotency"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"
import { demo, isMain, runExample } from "./shared.ts"

export const consume = <E, R>(process: (event: CdcEvent) => Effect.Effect<void, E, R>, stream = "orders.events") =>
  Effect.gen(function* () {
    const processedIds = yield* Idempotency.makeRedis({ prefix: `processed:${stream}:mygroup:`, ttl: "7 days" })
    return yield* RedisStreamConsumer.run({
      stream,
      group: "mygroup",
      consumer: "worker1",
      count: 10,
      block: "5 seconds",
      handler: (event) => Idempotency.once(processedIds, event.id, process(event))
    })
  })

if (isMain(import.meta)) runExample(() => demo(consume))
