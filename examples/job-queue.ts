/**
 * Use case: a job queue with competing workers, one of the uses of the contract in docs/DESIGN.md: rows inserted
 * into a PostgreSQL `jobs` table start background jobs, shared out by a consumer group.
 *
 * The application enqueues a job by inserting a row (`INSERT INTO jobs (kind, customer_id, amount)`), in the same
 * transaction as whatever made it necessary, so a job exists exactly when its cause committed: no dual write to a
 * queue that can succeed while the transaction rolls back. Each job here sends an order confirmation email. Workers
 * in one consumer group share the table's stream, each job going to one of them; a worker that dies mid-job has its
 * jobs claimed by the others after `minIdle`; a job that keeps failing (a customer whose mailbox rejects mail) is
 * retried up to `maxDeliveries` times, then parked in the dead-letter stream with its last error for a human to look
 * at; and the idempotency store, keyed by event id, guarantees an email is not sent twice for one job even if its
 * entry is delivered again (a worker that crashed after sending, before acknowledging) or written again (an
 * at-least-once pipeline restarting from its last checkpoint re-sends what it wrote after it; the example shows it by
 * appending copies of the last entries).
 *
 * The "mail server" is a Redis list (the outbox) the workers push to, so the result can be checked.
 *
 * Run: `pnpm example job-queue` (DATABASE_URL and REDIS_URL, or servers started for the run).
 *
 * Library or `redflow run`: the workers belong to the application; the pipeline would be `redflow run` beside the
 * database in production. The example runs it in its own process (examples/harness.ts) so one command shows it all.
 */
import { Console, Duration, Effect, Fiber, Schema } from "effect"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as Idempotency from "@redflow/redis/Idempotency"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"
import * as StreamAdmin from "@redflow/redis/StreamAdmin"
import * as Harness from "./harness.ts"
import { allAcknowledged, isMain } from "./shared.ts"

export const setup: Harness.Setup = {
  name: "job-queue",
  tables: {
    jobs:
      "id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, kind text NOT NULL, customer_id int NOT NULL, " +
      "amount numeric(10,2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now()"
  },
  // The consumer warns of every dead-lettered entry; here that is the point, and the example reports them itself.
  logLevel: "Error"
}

export type Job = { readonly id: number; readonly kind: string; readonly customer_id: number; readonly amount: string }

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
  /** Where the ids of sent jobs' events are kept (the idempotency store). */
  readonly sentPrefix: string
  readonly workers: number
  /** Customers whose mailbox rejects mail (the poison jobs). */
  readonly badCustomers?: ReadonlySet<number>
  readonly minIdle?: Duration.Input
  readonly maxDeliveries?: number
}

/** The queue of an example run: its stream, outbox and dedup keys. */
export const queueOf = (example: Harness.Example, options: Partial<QueueOptions> = {}): QueueOptions => ({
  stream: example.stream("jobs"),
  outbox: `${example.keyPrefix}outbox`,
  sentPrefix: `${example.keyPrefix}mailer:sent:`,
  workers: 3,
  ...options
})

/** Enqueues `count` confirmation jobs in transactions of `perTransaction`; returns them as inserted. */
export const enqueue = (example: Harness.Example, count: number, perTransaction = 10) =>
  Effect.gen(function* () {
    const jobs: Array<Job> = []
    for (let from = 0; from < count; from += perTransaction) {
      const n = Math.min(perTransaction, count - from)
      const rows = yield* example.sql.query<Job>(
        `INSERT INTO ${example.tables.jobs} (kind, customer_id, amount)
         SELECT 'order-confirmation', 1 + (i * 7) % 37, (i % 97) + 0.99 FROM generate_series($1::int, $2::int) AS i
         RETURNING id, kind, customer_id, amount::text AS amount`,
        [from + 1, from + n]
      )
      jobs.push(...rows)
    }
    return jobs
  })

/**
 * Appends copies of the stream's last `count` entries, event ids included: what an at-least-once pipeline does when
 * it restarts from a checkpoint older than what it wrote.
 */
export const replayLast = (stream: string, count: number) =>
  Effect.gen(function* () {
    const redis = yield* RedisConnection.RedisConnection
    const last = (yield* redis.run((c) => c.xrevrange(stream, "+", "-", "COUNT", count))).reverse()
    for (const [, fields] of last) yield* redis.run((c) => c.xadd(stream, "*", ...fields))
    return last.length
  })

/** Sends the confirmation email of one job. */
const sendConfirmation = (options: QueueOptions, worker: string, event: CdcEvent) =>
  Effect.gen(function* () {
    const job = event.after as Job
    if (options.badCustomers?.has(job.customer_id))
      return yield* Effect.fail(new MailboxUnavailable({ customer: job.customer_id }))
    yield* Effect.sleep(Duration.millis(1 + (job.id % 5))) // talking to the mail server
    const redis = yield* RedisConnection.RedisConnection
    yield* redis.run((c) => c.rpush(options.outbox, JSON.stringify({ job: job.id, worker, amount: job.amount })))
  })

/** One worker: a consumer of the `mailer` group, a few jobs at a time. */
export const worker = (options: QueueOptions, name: string) =>
  Effect.gen(function* () {
    const sent = yield* Idempotency.makeRedis({ prefix: options.sentPrefix, ttl: "30 days" })
    return yield* RedisStreamConsumer.run({
      stream: options.stream,
      group: "mailer",
      consumer: name,
      concurrency: 4,
      // Few entries per read: a worker holds at most 2 × 10 jobs ahead, so jobs spread over the workers that are up
      // rather than going to whichever read first.
      count: 10,
      idempotency: sent,
      claimInterval: Duration.millis(Duration.toMillis(Duration.fromInputUnsafe(options.minIdle ?? "30 seconds")) / 2),
      ...(options.minIdle !== undefined ? { minIdle: options.minIdle } : {}),
      maxDeliveries: options.maxDeliveries ?? 3,
      // Only inserts are jobs; an update or delete of a job row is acknowledged and ignored.
      handler: (event) => (event.op === "c" ? sendConfirmation(options, name, event) : Effect.void)
    })
  })

/** All the workers, until interrupted. */
export const workers = (options: QueueOptions) =>
  Effect.all(
    Array.from({ length: options.workers }, (_, i) => worker(options, `worker-${i + 1}`)),
    { concurrency: "unbounded", discard: true }
  )

/** The outbox: one email per line, `{ job, worker, amount }`. */
export const outbox = (options: QueueOptions) =>
  Effect.gen(function* () {
    const redis = yield* RedisConnection.RedisConnection
    return (yield* redis.run((c) => c.lrange(options.outbox, 0, -1))).map(
      (s) => JSON.parse(s) as { job: number; worker: string; amount: string }
    )
  })

const app = (example: Harness.Example) =>
  Effect.gen(function* () {
    // Customer 7's mailbox rejects mail: their jobs end in the dead-letter stream.
    const options = queueOf(example, { badCustomers: new Set([7]), minIdle: "1 second" })
    const jobs = yield* enqueue(example, 300)
    const poisoned = jobs.filter((j) => j.customer_id === 7).length
    yield* Console.log(
      `\nEnqueued ${jobs.length} jobs (INSERT INTO jobs, 10 per transaction); customer 7's mailbox rejects mail, ` +
        `so their ${poisoned} jobs are poison.`
    )
    yield* example.written.atLeast(jobs.length)
    const replayed = yield* replayLast(options.stream, 20)
    yield* Console.log(
      `The pipeline wrote them to ${options.stream}; ${replayed} of them appended again with their event ids, ` +
        "as an at-least-once pipeline re-sends after a crash."
    )
    yield* Console.log(`${options.workers} workers start (consumer group mailer)...`)
    const running = yield* Effect.forkChild(workers(options))
    yield* allAcknowledged(options.stream, "mailer")
    yield* Fiber.interrupt(running)
    const sent = yield* outbox(options)
    const byWorker = new Map<string, number>()
    for (const s of sent) byWorker.set(s.worker, (byWorker.get(s.worker) ?? 0) + 1)
    const twice = sent.length - new Set(sent.map((s) => s.job)).size
    yield* Console.log(
      `${sent.length} emails sent (${[...byWorker].map(([w, n]) => `${w} ${n}`).join(", ")}), ${twice} twice.`
    )
    const dead = yield* StreamAdmin.range(`${options.stream}.dead-letter`)
    yield* Console.log(
      `${dead.length} entries dead-lettered (the ${poisoned} poison jobs, and copies among the re-sent), ` +
        `in ${options.stream}.dead-letter:`
    )
    for (const entry of dead.slice(0, 3)) {
      yield* Console.log(
        `  entry ${entry.fields.source_id} after ${entry.fields.deliveries} tries: ${entry.fields.error}`
      )
    }
    if (dead.length > 3) yield* Console.log(`  ... and ${dead.length - 3} more`)
  })

if (isMain(import.meta)) Harness.main(setup, app)
