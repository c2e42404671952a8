/**
 * The contract's Go consumer (go-redis, docs/DESIGN.md "The reference consumers"), written with Redflow.
 *
 * The original creates the group, then loops `XREADGROUP … COUNT 10 BLOCK 5000 STREAMS orders.events >`,
 * `json.Unmarshal`s the `event` field into an `Event` (ignoring the error), calls `process(event)`, and `XAck`s.
 * What it leaves to chance:
 * - a malformed entry unmarshals into a zero `Event` that is processed and acknowledged as if it were real;
 * - `process` cannot fail: the entry is acknowledged whatever happened;
 * - it only ever reads `>`: after a crash its own pending entries are never read again, and a dead worker's
 *   entries stay pending forever (nobody runs XCLAIM);
 * - a replayed event (the sink is at-least-once) is processed twice.
 *
 * Here the same loop is one call: the `event` field is decoded and validated as a `CdcEvent` (a bad entry goes to
 * `orders.events.dead-letter`, with the reason), the entry is acknowledged only after `process` succeeded (a
 * failure gives it back for redelivery, up to 5 times), the worker's own pending entries are read first on start,
 * a dead worker's entries are claimed after 30 s, and events already processed (by id) are skipped.
 *
 * Run: `pnpm exec node examples/consumer-go.ts` (REDIS_URL, or a redis-server spawned for the run).
 */
import { Effect } from "effect"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as Idempotency from "@redflow/redis/Idempotency"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"
import { demo, isMain, runExample } from "./shared.ts"

export const consume = <E, R>(process: (event: CdcEvent) => Effect.Effect<void, E, R>, stream = "orders.events") =>
  Effect.gen(function* () {
    const processed = yield* Idempotency.makeRedis({ prefix: `processed:${stream}:mygroup:` })
    return yield* RedisStreamConsumer.run({
      stream,
      group: "mygroup",
      consumer: "worker1",
      count: 10,
      block: "5 seconds",
      ack: "each", // like the original's XAck after each message: only after `process` succeeded
      idempotency: processed,
      handler: process
    })
  })

if (isMain(import.meta)) runExample(() => demo(consume))
