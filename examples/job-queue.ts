/**
 * Use case: a job queue with competing workers, one of the uses of the contract in docs/DESIGN.md: new rows start
 * background jobs, shared out by a consumer group.
 *
 * Every new order (an insert into `orders`) is a job: send the order confirmation email. Workers in one consumer
 * group share the stream, each job going to one of them; a worker that dies mid-job has its jobs claimed by the
 * others after `minIdle`; a job that keeps failing (here: a customer whose mailbox rejects mail) is retried up to
 * `maxDeliveries` times, then parked in the dead-letter stream with its last error for a human to look at; and the
 * idempotency store guarantees an email is not sent twice for one order even if its event is redelivered or
 * replayed.
 *
 * The "mail server" is a Redis list (`outbox`) the workers push to, so the result can be checked.
 *
 * Run: `pnpm exec node examples/job-queue.ts` (REDIS_URL, or a redis-server spawned for the run).
 */
import { Console, Duration, Effect, Fiber, Schema } from "effect"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as Idempotency from "@redflow/redis/Idempotency"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"
import * as StreamAdmin from "@redflow/redis/StreamAdmin"
import { allAcknowledged, isMain, publishSynthetic, runExample } from "./shared.ts"

export class MailboxUnavailable extends Schema.TaggedError<MailboxUnavailable>()("MailboxUnavailable", {
  customer: Schema.Number
}) {
  override get message() {
    return `550 mailbox unavailable for customer ${this.customer}`
  }
}

export interface QueueOptions {
  readonly stream: string
  /** The Redis list standing for the mail server. */
  readonly outbox: string
  readonly workers: number
  /** Customers whose mailbox rejects mail (the poison jobs). */
  readonly badCustomers?: ReadonlySet<number>
  readonly minIdle?: Duration.Input
  readonly maxDeliveries?: number
}

/** Sends the confirmation email of a new order: one job. */
const sendConfirmation = (options: QueueOptions, worker: string, event: CdcEvent) =>
  Effect.gen(function* () {
    const order = event.after as { id: number; customer_id: number; amount: string; currency: string }
    if (options.badCustomers?.has(order.customer_id))
      return yield* Effect.fail(new MailboxUnavailable({ customer: order.customer_id }))
    yield* Effect.sleep(Duration.millis(1 + (order.id % 5))) // talking to the mail server
    const redis = yield* RedisConnection.RedisConnection
    yield* redis.run((c) => c.rpush(options.outbox, JSON.stringify({ order: order.id, worker, amount: order.amount })))
  })

/** One worker: a consumer of the `mailer` group, a few jobs at a time. */
export const worker = (options: QueueOptions, name: string) =>
  Effect.gen(function* () {
    const sent = yield* Idempotency.makeRedis({ prefix: `${options.stream}:mailer:sent:`, ttl: "30 days" })
    return yield* RedisStreamConsumer.run({
      stream: options.stream,
      group: "mailer",
      consumer: name,
      concurrency: 4,
      idempotency: sent,
      claimInterval: Duration.millis(Duration.toMillis(Duration.fromInputUnsafe(options.minIdle ?? "30 seconds")) / 2),
      ...(options.minIdle !== undefined ? { minIdle: options.minIdle } : {}),
      maxDeliveries: options.maxDeliveries ?? 3,
      // Only inserts are jobs; updates and deletes of orders are acknowledged and ignored.
      handler: (event) => (event.op === "c" ? sendConfirmation(options, name, event) : Effect.void)
    })
  })

/** All the workers, until interrupted. */
export const workers = (options: QueueOptions) =>
  Effect.all(
    Array.from({ length: options.workers }, (_, i) => worker(options, `worker-${i + 1}`)),
    { concurrency: "unbounded", discard: true }
  )

if (isMain(import.meta)) {
  runExample(() =>
    Effect.gen(function* () {
      // The customer of the 7th order cannot receive mail: their jobs end in the dead-letter stream.
      const poisoned = SyntheticSource.eventAt(7, { tables: ["orders"] }).after!.customer_id as number
      const options: QueueOptions = {
        stream: "cdc.shop.orders",
        outbox: "outbox",
        workers: 3,
        badCustomers: new Set([poisoned]),
        minIdle: "1 second"
      }
      yield* publishSynthetic(options.stream, 300)
      const running = yield* Effect.forkChild(workers(options))
      yield* allAcknowledged(options.stream, "mailer")
      yield* Fiber.interrupt(running)
      const redis = yield* RedisConnection.RedisConnection
      const sent = (yield* redis.run((c) => c.lrange(options.outbox, 0, -1))).map(
        (s) => JSON.parse(s) as { order: number; worker: string }
      )
      const byWorker = new Map<string, number>()
      for (const s of sent) byWorker.set(s.worker, (byWorker.get(s.worker) ?? 0) + 1)
      yield* Console.log(`${sent.length} emails sent: ${[...byWorker].map(([w, n]) => `${w} ${n}`).join(", ")}`)
      for (const dead of yield* StreamAdmin.range(`${options.stream}.dead-letter`)) {
        yield* Console.log(
          `dead letter: entry ${dead.fields.source_id} after ${dead.fields.deliveries} tries: ${dead.fields.error}`
        )
      }
    })
  )
}
