/**
 * The consumer module's side of the consuming benchmark. Loaded with a dynamic import by the runner, so the bench
 * still runs (with a TODO entry) where `RedisStreamConsumer` has not landed.
 */
import { Deferred, Effect, Fiber, Stream } from "effect"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"
import { COUNT, result } from "./Consumer.ts"
import { GROUP, now, type Reader } from "./Latency.ts"
import type { RunResult } from "./Throughput.ts"

/**
 * `RedisStreamConsumer.run`, the application loop users run: a handler per event (counting here), batched acks,
 * default options except `count: 500`. The clock stops when the handler has seen `count` events.
 */
export const run = async (url: string, stream: string, group: string, count: number): Promise<RunResult> => {
  const program = Effect.gen(function* () {
    const done = yield* Deferred.make<number>()
    let handled = 0
    const started = performance.now()
    const fiber = yield* RedisStreamConsumer.run({
      stream,
      group,
      consumer: "bench",
      count: COUNT,
      handler: () =>
        Effect.suspend(() => (++handled === count ? Deferred.succeed(done, performance.now() - started) : Effect.void))
    }).pipe(Effect.forkChild)
    const ms = yield* Deferred.await(done)
    yield* Fiber.interrupt(fiber)
    return ms
  }).pipe(Effect.provide(RedisConnection.layer({ url })))
  return result(count, await Effect.runPromise(program))
}

/**
 * `RedisStreamConsumer.messages` with one `ack` per chunk: the building block, without the handler machinery.
 */
export const messages = async (url: string, stream: string, group: string, count: number): Promise<RunResult> => {
  const program = Effect.gen(function* () {
    let handled = 0
    let ms = 0
    const started = performance.now()
    yield* RedisStreamConsumer.messages({ stream, group, consumer: "bench", count: COUNT }).pipe(
      Stream.take(count),
      Stream.runForEachArray((chunk) =>
        Effect.map(RedisStreamConsumer.ack(chunk), () => {
          handled += chunk.length
          if (handled >= count) ms = performance.now() - started
        })
      )
    )
    return ms
  }).pipe(Effect.provide(RedisConnection.layer({ url })))
  return result(count, await Effect.runPromise(program))
}

/**
 * A latency reader on the consumer module: one `messages` stream per table stream (group already created at `$`),
 * merged, one `ack` per chunk; an entry counts as had when its chunk reaches the stream's consumer.
 */
export const latencyReader: Reader = {
  name: "RedisStreamConsumer.messages",
  start: async (url, streams, onEntry) => {
    const fiber = Effect.runFork(
      Stream.mergeAll(
        streams.map((stream) =>
          RedisStreamConsumer.messages({ stream, group: GROUP, consumer: "reader", count: COUNT, block: "100 millis" })
        ),
        // A buffer of one chunk: mergeAll's default (16) lets each stream's pull take whatever is there at once, so
        // small chunks queue up behind one another's XACK round trips instead of coalescing in the consumer (at
        // 10,000/s over three streams, p50 17 ms with 16 against 5 ms with 1: bench/experiments/consumer-latency.ts).
        { concurrency: "unbounded", bufferSize: 1 }
      ).pipe(
        Stream.runForEachArray((chunk) => {
          const at = now()
          for (const m of chunk) {
            const id = m.fields.id
            if (id !== undefined) onEntry(id, at)
          }
          return RedisStreamConsumer.ack(chunk)
        }),
        Effect.provide(RedisConnection.layer({ url }))
      )
    )
    return async () => {
      await Effect.runPromise(Fiber.interrupt(fiber))
    }
  }
}
