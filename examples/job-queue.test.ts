import { expect, layer } from "@effect/vitest"
import { Effect, Fiber, Layer } from "effect"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as StreamAdmin from "@redflow/redis/StreamAdmin"
import * as PostgresTestServer from "@redflow/testing/PostgresTestServer"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Harness from "./harness.ts"
import { enqueue, type Job, outbox, queueOf, replayLast, setup, workers } from "./job-queue.ts"
import { allAcknowledged } from "./shared.ts"

layer(Layer.mergeAll(PostgresTestServer.layer(), RedisTestServer.layer()), { excludeTestServices: true })(
  "job queue fed by a PostgreSQL jobs table",
  (it) => {
    it.effect("every inserted job's email is sent once by one of three workers; a failing job is dead-lettered", () =>
      Effect.gen(function* () {
        const postgres = yield* PostgresTestServer.PostgresTestServer
        const redis = yield* RedisTestServer.RedisTestServer
        const example = yield* Harness.make(setup, { databaseUrl: postgres.url, redisUrl: redis.url })
        yield* example
          .supervise(
            Effect.gen(function* () {
              const jobs = yield* enqueue(example, 600, 25)
              const poisoned = jobs[6]!.customer_id
              // minIdle: how long a worker may look dead before its entries are taken over. Much shorter, and a worker
              // slowed down by a busy machine is taken for dead: its entry is delivered a fourth time, or twice into
              // the dead-letter stream (seen with 200 ms at a load average of 8 on 2 cores).
              const options = queueOf(example, { badCustomers: new Set([poisoned]), minIdle: "1 second" })
              yield* example.written.atLeast(600)
              // The pipeline restarts at-least-once from an older checkpoint and writes the last 100 jobs again,
              // with the same event ids: their emails must not be sent twice.
              yield* replayLast(options.stream, 100)
              expect(yield* StreamAdmin.length(options.stream)).toBe(700)
              const running = yield* Effect.forkChild(workers(options))
              yield* allAcknowledged(options.stream, "mailer")
              yield* Fiber.interrupt(running)

              const sent = yield* outbox(options)
              const expected = jobs.filter((j) => j.customer_id !== poisoned).map((j) => j.id)
              expect(sent.map((s) => s.job).sort((a, b) => a - b)).toEqual(expected.sort((a, b) => a - b))
              expect(new Set(sent.map((s) => s.worker))).toEqual(new Set(["worker-1", "worker-2", "worker-3"]))

              // Each poison entry is dead-lettered after 3 tries, copies included (a copy is an entry of its own),
              // most with the mailbox's error. A copy tried while its twin held the event (both claimed in the same
              // round) is given back as in progress, and after 3 such tries is parked with that reason instead.
              const dead = yield* StreamAdmin.range(`${options.stream}.dead-letter`)
              const poisonedJobs = jobs.filter((j) => j.customer_id === poisoned)
              const poisonedCopies = jobs.slice(500).filter((j) => j.customer_id === poisoned)
              expect(poisonedJobs.length).toBeGreaterThan(0)
              expect(new Set(dead.map((d) => d.fields.source_id)).size).toBe(
                poisonedJobs.length + poisonedCopies.length
              )
              expect(dead.length, "an entry dead-lettered twice").toBe(poisonedJobs.length + poisonedCopies.length)
              const jobOf = (entry: StreamAdmin.Entry) => (JSON.parse(entry.fields.event!) as { after: Job }).after.id
              const bounced = dead.filter((d) =>
                d.fields.error?.includes(`550 mailbox unavailable for customer ${poisoned}`)
              )
              expect(new Set(dead.map(jobOf))).toEqual(new Set(poisonedJobs.map((j) => j.id)))
              expect(new Set(bounced.map(jobOf))).toEqual(new Set(poisonedJobs.map((j) => j.id)))
              for (const entry of dead) {
                expect(entry.fields).toMatchObject({ group: "mailer", deliveries: "3", source_stream: options.stream })
                expect(entry.fields.error).toMatch(
                  new RegExp(`550 mailbox unavailable for customer ${poisoned}|is being processed by another consumer`)
                )
              }
            })
          )
          .pipe(Effect.provide(RedisConnection.layer({ url: redis.url })))
      })
    )
  }
)
