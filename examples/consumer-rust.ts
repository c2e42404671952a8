/**
 * The contract's Rust consumer (redis-rs, docs/DESIGN.md "The reference consumers"), written with Redflow.
 *
 * The original creates the group (swallowing every error, not just "already exists"), loops `xread_options` with
 * `group("mygroup", "worker1").count(10).block(5000)`, `serde_json::from_str`s each `event` with `?` (one bad entry
 * ends the whole consumer), processes it and `xack`s it, one round trip per message.
 *
 * Here it is the message stream itself, acknowledged a chunk at a time (one XACK per read instead of one per
 * message): events arrive decoded and validated (bad entries are dead-lettered, not fatal), each one is processed
 * at most once per event id, a failed one is given back (`nack`) and the rest of the chunk goes on, and only what
 * succeeded is acknowledged.
 *
 * Run: `pnpm exec node examples/consumer-rust.ts` (REDIS_URL, or a redis-server spawned for the run).
 */
import { Effect, Stream } from "effect"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as Idempotency from "@redflow/redis/Idempotency"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"
import { demo, isMain, runExample } from "./shared.ts"

export const consume = <E, R>(process: (event: CdcEvent) => Effect.Effect<void, E, R>, stream = "orders.events") =>
  Effect.gen(function* () {
    const processed = yield* Idempotency.makeRedis({ prefix: `processed:${stream}:mygroup:` })
    return yield* RedisStreamConsumer.messages({ stream, group: "mygroup", consumer: "worker1", count: 10 }).pipe(
      Stream.mapArrayEffect((chunk) =>
        Effect.gen(function* () {
          const done: Array<RedisStreamConsumer.Message> = []
          for (const message of chunk) {
            const outcome = yield* Effect.result(Idempotency.once(processed, message.event.id, process(message.event)))
            if (outcome._tag === "Success") done.push(message)
            else yield* message.nack(String(outcome.failure))
          }
          yield* RedisStreamConsumer.ack(done)
          return chunk
        })
      ),
      Stream.runDrain
    )
  })

if (isMain(import.meta)) runExample(() => demo(consume))
