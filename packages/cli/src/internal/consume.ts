/**
 * `redflow consume`: a consumer-group worker on `RedisStreamConsumer.run`. It acknowledges each event after
 * processing it; with `--count N` it stops after N events were processed and acknowledged (the consumer's `limit`:
 * it reads no more than N, so it leaves nothing read ahead and unprocessed behind).
 */
import * as Clock from "effect/Clock"
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import type * as Envelope from "@redflow/core/Envelope"
import * as Metrics from "@redflow/core/Metrics"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"
import * as StreamAdmin from "@redflow/redis/StreamAdmin"
import { namingFlags } from "./optionFlags.ts"
import * as Flags from "./flags.ts"
import * as MetricValues from "./metricValues.ts"
import * as Monitoring from "./monitoring.ts"
import * as Output from "./output.ts"
import * as Redis from "./redis.ts"
import * as Shutdown from "./shutdown.ts"

export interface ConsumeInput {
  readonly redis: Option.Option<string>
  readonly stream: string
  readonly group: string
  readonly consumer: string
  readonly count: Option.Option<number>
  readonly claimIdle: Option.Option<number>
  readonly deadLetter: Option.Option<string>
  readonly maxDeliveries: Option.Option<number>
  readonly concurrency: number
  readonly startId: string
  readonly envelope: Envelope.Format
  readonly print: boolean
  readonly metricsPort: Option.Option<number>
}

/** Consumer options from the flags. */
export const consumerOptions = (input: {
  readonly stream: string
  readonly group: string
  readonly consumer: string
  readonly claimIdle: Option.Option<number>
  readonly deadLetter: Option.Option<string>
  readonly maxDeliveries: Option.Option<number>
  readonly startId: string
  readonly envelope?: Envelope.Format
}): RedisStreamConsumer.Options => ({
  stream: input.stream,
  group: input.group,
  consumer: input.consumer,
  startId: input.startId,
  ...(input.envelope !== undefined ? { envelope: input.envelope } : {}),
  block: "500 millis",
  ...Option.match(input.claimIdle, { onNone: () => ({}), onSome: (ms) => ({ minIdle: Duration.millis(ms) }) }),
  ...Option.match(input.deadLetter, { onNone: () => ({}), onSome: (s) => ({ deadLetterStream: s }) }),
  ...Option.match(input.maxDeliveries, { onNone: () => ({}), onSome: (n) => ({ maxDeliveries: n }) })
})

/** The command's work, once its flags are parsed. */
export const run = (input: ConsumeInput) =>
  Effect.gen(function* () {
    const json = yield* Flags.Json
    const url = yield* Flags.resolveRedisUrl(input.redis)
    const target = Option.getOrUndefined(input.count)
    // Options that cannot work (a --dead-letter equal to --stream, a bad --start-id) exit 2 before connecting.
    yield* namingFlags(RedisStreamConsumer.validateOptions(consumerOptions(input)))
    return yield* Effect.gen(function* () {
      yield* Monitoring.announce(true)
      const stop = yield* Shutdown.drainOnSignal
      const processed = yield* Ref.make(0)
      const startedAt = yield* Clock.currentTimeMillis
      // When the last event was handled: the summary's rate is over the time spent consuming, not the idle time after.
      let lastHandledAt = startedAt
      const attributes = { stream: input.stream, group: input.group }
      const handler = (event: CdcEvent, message: RedisStreamConsumer.Message) =>
        Effect.gen(function* () {
          yield* Ref.update(processed, (n) => n + 1)
          lastHandledAt = yield* Clock.currentTimeMillis
          if (input.print) yield* Console.log(JSON.stringify({ entry: message.id, stream: message.stream, event }))
        })
      // The line's events/s is over the time since the line before (as the demo's), so an idle worker shows 0.
      let last = { at: startedAt, processed: 0 }
      yield* Output.progressLine(
        Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis
          const n = yield* Ref.get(processed)
          const pending = yield* MetricValues.sum(Metrics.consumerPending.id, attributes)
          const perSecond = Output.rate(n - last.processed, now - last.at)
          last = { at: now, processed: n }
          return `consumed ${Output.count(n)}${target !== undefined ? `/${Output.count(target)}` : ""} events · ${Output.count(perSecond)} events/s · pending ${Output.count(pending)}`
        })
      )
      const consumer = RedisStreamConsumer.run({
        ...consumerOptions(input),
        concurrency: input.concurrency,
        ...(target !== undefined ? { limit: target } : {}),
        handler
      }).pipe(PipelineHealth.track(`consumer:${input.group}:${input.consumer}`))
      // The consumer returns once --count messages were handled and acknowledged. A signal asks it to drain:
      // interrupting it stops reading, lets the handlers in flight finish and acknowledges them, and gives back what
      // it had read ahead.
      yield* Effect.raceFirst(namingFlags(consumer), stop)
      const durationMs = (yield* Clock.currentTimeMillis) - startedAt
      const count = yield* Ref.get(processed)
      const pending = yield* StreamAdmin.pending(input.stream, input.group)
      const summary = {
        command: "consume",
        stream: input.stream,
        group: input.group,
        consumer: input.consumer,
        processed: count,
        acked: yield* MetricValues.sum(Metrics.consumerAcked.id, attributes),
        claimed: yield* MetricValues.sum(Metrics.consumerClaimed.id, attributes),
        deadLettered: yield* MetricValues.sum(Metrics.consumerDeadLettered.id, attributes),
        pending: pending.count,
        pendingOfConsumer: pending.consumers.find((c) => c.name === input.consumer)?.pending ?? 0,
        stopped: yield* Shutdown.signalled,
        durationMs,
        busyMs: lastHandledAt - startedAt,
        eventsPerSecond: Output.rate(count, lastHandledAt - startedAt)
      }
      if (json) return yield* Output.printJson(summary)
      yield* Output.line(
        `${summary.stopped ? "stopped: " : ""}${Output.count(count)} events processed and acknowledged in ${(summary.busyMs / 1000).toFixed(2)} s` +
          ` (${Output.count(summary.eventsPerSecond)} events/s)${durationMs - summary.busyMs >= 1000 ? `, then idle ${Math.round((durationMs - summary.busyMs) / 1000)} s` : ""}; claimed ${summary.claimed}, dead-lettered ${summary.deadLettered}; ` +
          `${Output.count(summary.pending)} pending in ${input.group}`
      )
    }).pipe(
      Effect.scoped,
      Effect.provide(Monitoring.layer(input.metricsPort).pipe(Layer.provideMerge(Redis.layer(url))))
    )
  })
