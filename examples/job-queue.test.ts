import { expect, layer } from "@effect/vitest"
import { Effect, Fiber, Stream } from "effect"
import { Position } from "@redflow/core"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as StreamAdmin from "@redflow/redis/StreamAdmin"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { workers, type QueueOptions } from "./job-queue.ts"
import { allAcknowledged, publish } from "./shared.ts"

layer(RedisTestServer.layer(), { excludeTestServices: true })("job queue with competing workers", (it) => {
  it.effect("every new order's email is sent once by one of three workers; a failing job is dead-lettered", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const run = Date.now().toString(36)
      const events = Array.from(yield* Stream.runCollect(SyntheticSource.make({ count: 600, tables: ["orders"] })))
      const orders = events.filter((e) => e.op === "c").map((e) => e.after as { id: number; customer_id: number })
      const poisoned = orders[6]!.customer_id
      const options: QueueOptions = {
        stream: `examples.jobs.${run}.orders`,
        outbox: `examples.jobs.${run}.outbox`,
        workers: 3,
        badCustomers: new Set([poisoned]),
        minIdle: "200 millis",
        maxDeliveries: 3
      }
      yield* Effect.gen(function* () {
        yield* publish(options.stream, Stream.fromIterable(events))
        // The producer restarts and replays the last 100 events: their jobs must not run twice.
        yield* publish(
          options.stream,
          SyntheticSource.make({ count: 600, tables: ["orders"], from: Position.fromSequence(500) })
        )
        const running = yield* Effect.forkChild(workers(options))
        yield* allAcknowledged(options.stream, "mailer").pipe(Effect.timeout("20 seconds"))
        yield* Fiber.interrupt(running)

        const redis = yield* RedisConnection.RedisConnection
        const sent = (yield* redis.run((c) => c.lrange(options.outbox, 0, -1))).map(
          (s) => JSON.parse(s) as { order: number; worker: string }
        )
        const expected = orders.filter((o) => o.customer_id !== poisoned).map((o) => o.id)
        expect(sent.map((s) => s.order).sort((a, b) => a - b)).toEqual(expected.sort((a, b) => a - b))
        expect(new Set(sent.map((s) => s.worker))).toEqual(new Set(["worker-1", "worker-2", "worker-3"]))

        const dead = yield* StreamAdmin.range(`${options.stream}.dead-letter`)
        const poisonedOrders = orders.filter((o) => o.customer_id === poisoned)
        expect(dead.length).toBe(poisonedOrders.length)
        for (const entry of dead) {
          expect(entry.fields).toMatchObject({ group: "mailer", deliveries: "3", source_stream: options.stream })
          expect(entry.fields.error).toContain(`550 mailbox unavailable for customer ${poisoned}`)
        }
      }).pipe(Effect.provide(RedisConnection.layer({ url })))
    })
  )
})
