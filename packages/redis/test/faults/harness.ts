/**
 * Harness for the fault tests: run a sink in the background against a URL, watch what it commits, and check what
 * landed in Redis afterwards against the deterministic source.
 */
import { Effect, Fiber, Layer, Metric, Option, Ref, Stream } from "effect"
import { Metrics, Position } from "@redflow/core"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisConnection from "../../src/RedisConnection.ts"
import * as RedisStreamSink from "../../src/RedisStreamSink.ts"
import { type Entry, readStream } from "../support.ts"

export const TABLES = ["customers", "orders", "payments"] as const

export interface Run {
  readonly fiber: Fiber.Fiber<ReadonlyArray<RedisStreamSink.CommittedBatch>, unknown>
  /** Events pulled from the source so far (to see backpressure). */
  readonly pulled: Effect.Effect<number>
  /** The committed checkpoint as a sequence number (0 when none). */
  readonly checkpoint: Effect.Effect<number>
}

export interface RunOptions {
  readonly url: string
  readonly prefix: string
  readonly count: number
  readonly ratePerSecond?: number
  readonly sink?: Omit<RedisStreamSink.Options, "stream">
  readonly connection?: Omit<RedisConnection.Options, "url">
}

/** Starts the synthetic source into a sink on a background fiber. */
export const start = (options: RunOptions) =>
  Effect.gen(function* () {
    const pulled = yield* Ref.make(0)
    const { store } = yield* CheckpointStore.makeMemory()
    const pipeline = options.sink?.pipeline ?? options.prefix
    const fiber = yield* SyntheticSource.make({
      count: options.count,
      payloadBytes: 256,
      chunkSize: 100,
      ...(options.ratePerSecond !== undefined ? { ratePerSecond: options.ratePerSecond } : {})
    }).pipe(
      Stream.tap(() => Ref.update(pulled, (n) => n + 1)),
      RedisStreamSink.deliver({ ...options.sink, pipeline, stream: `${options.prefix}.\${source.table}` }),
      Stream.runCollect,
      Effect.provide(
        Layer.mergeAll(
          RedisConnection.layer({ url: options.url, ...options.connection }),
          Layer.succeed(CheckpointStore.CheckpointStore, store)
        )
      ),
      Effect.forkChild
    )
    const run: Run = {
      fiber,
      pulled: Ref.get(pulled),
      checkpoint: Effect.map(Effect.orDie(store.load(pipeline)), (p) =>
        Option.match(p, { onNone: () => 0, onSome: (position) => Number(Position.toSequence(position)) })
      )
    }
    return run
  })

export interface Landed {
  readonly entries: number
  readonly missing: ReadonlyArray<number>
  readonly duplicates: number
  /** Entries of a stream that came after an entry of a later source position (a replay out of order). */
  readonly outOfOrder: number
}

/**
 * Reads every stream of the run and compares it with the first `count` events of the source. `read` reads one
 * stream (by default from the standalone server at `url`).
 */
export const landed = (
  url: string,
  prefix: string,
  count: number,
  read: (stream: string) => Promise<ReadonlyArray<Entry>> = (stream) => readStream(url, stream)
) =>
  Effect.gen(function* () {
    const expected = new Map<string, number>()
    for (const event of yield* Stream.runCollect(SyntheticSource.make({ count, payloadBytes: 256 }))) {
      expected.set(event.id, Number(Position.toSequence(event.position)))
    }
    const seen = new Set<number>()
    let entries = 0
    let duplicates = 0
    let outOfOrder = 0
    for (const table of TABLES) {
      let last = 0
      for (const entry of yield* Effect.promise(() => read(`${prefix}.${table}`))) {
        entries++
        const sequence = expected.get(entry.fields.id!)
        if (sequence === undefined) throw new Error(`unexpected entry ${entry.id} with id ${entry.fields.id}`)
        if (seen.has(sequence)) duplicates++
        seen.add(sequence)
        if (sequence < last) outOfOrder++
        last = Math.max(last, sequence)
      }
    }
    const missing: Array<number> = []
    for (let n = 1; n <= count; n++) if (!seen.has(n)) missing.push(n)
    const result: Landed = { entries, missing, duplicates, outOfOrder }
    return result
  })

/** The current value of a sink counter for a pipeline, e.g. retries by reason. */
export const counter = (
  metric: typeof Metrics.sinkRetries,
  attributes: Readonly<Record<string, string>>
): Effect.Effect<number> =>
  Effect.map(Metric.value(Metric.withAttributes(metric, attributes)), (state) => Number(state.count))

export const sleep = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))

/** How often a run's streams saw their high-water mark go back or move (sink_data_loss_total, all tables). */
export const dataLoss = (prefix: string): Effect.Effect<number> =>
  Effect.map(
    Effect.forEach(TABLES, (t) =>
      counter(Metrics.sinkDataLoss, { pipeline: prefix, sink: "redis", stream: `${prefix}.${t}` })
    ),
    (counts) => counts.reduce((a, b) => a + b, 0)
  )

/** Waits until the run's checkpoint has reached `sequence` (the sink is writing). */
export const untilCheckpoint = (run: Run, sequence: number): Effect.Effect<void> =>
  Effect.gen(function* () {
    while ((yield* run.checkpoint) < sequence) yield* sleep(50)
  })
