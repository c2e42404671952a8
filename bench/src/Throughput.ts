/**
 * Publishing throughput: the hand-written ioredis pipeline loop (the baseline) and `RedisStreamSink` in both
 * guarantees, on the same pre-generated events, in batches of 500.
 */
import * as Path from "node:path"
import { Effect, Layer, Stream } from "effect"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as Position from "@redflow/core/Position"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import type { Redis } from "ioredis"
import * as Payload from "./Payload.ts"
import { totalLength } from "./RedisClient.ts"

export const BATCH = 500

export interface RunResult {
  readonly events: number
  readonly ms: number
  readonly eventsPerSecond: number
}

const result = (events: number, ms: number): RunResult => ({ events, ms, eventsPerSecond: (events * 1000) / ms })

/**
 * The baseline: what a user would write by hand. Per batch of 500, encode each event (JSON, as the sink's native
 * envelope), XADD it with the sink's fields to its table's stream, all in one pipeline, and await the pipeline
 * before the next batch.
 */
export const baseline = async (
  client: Redis,
  payload: Payload.Payload,
  count: number,
  prefix: string
): Promise<RunResult> => {
  const events = payload.events
  const started = performance.now()
  for (let from = 0; from < count; from += BATCH) {
    const to = Math.min(count, from + BATCH)
    const pipeline = client.pipeline()
    for (let i = from; i < to; i++) {
      const event = events[i]!
      pipeline.xadd(
        Payload.streamOf(prefix, event),
        "*",
        "event",
        JSON.stringify(event),
        "id",
        event.id,
        "op",
        event.op,
        "table",
        event.source.table
      )
    }
    const replies = await pipeline.exec()
    for (const [error] of replies ?? []) if (error) throw error
  }
  const ms = performance.now() - started
  await verify(client, prefix, count)
  return result(count, ms)
}

export type Guarantee = "at-least-once" | "exactly-once"

export interface SinkSetup {
  readonly url: string
  readonly guarantee: Guarantee
  /** `file`: `CheckpointStore.layerFile` in `dir` (a fresh file per run); `memory`: `layerMemory`. */
  readonly checkpoint: "file" | "memory"
  readonly dir: string
}

/**
 * The sink's options for a run under `prefix`: one stream per table, otherwise the sink's documented defaults (the
 * issue fixes batches of 500 for the hand-written baselines only; the sink's batching is its own: a window of
 * `batch.maxEvents` = 4000 events, writes of up to 1000).
 */
export const sinkOptions = (prefix: string, guarantee: Guarantee): RedisStreamSink.Options => ({
  stream: `${prefix}.\${source.table}`,
  pipeline: "bench",
  guarantee
})

export const checkpointLayer = (setup: Pick<SinkSetup, "checkpoint" | "dir">, prefix: string) =>
  setup.checkpoint === "file"
    ? CheckpointStore.layerFile(Path.join(setup.dir, `${prefix}.checkpoint.json`))
    : CheckpointStore.layerMemory

/**
 * `RedisStreamSink.make` over the events in the source's chunks. The connection is made (by the layer) before the
 * clock starts; the clock stops when the sink has committed the last batch.
 */
export const sink = async (
  setup: SinkSetup,
  client: Redis,
  payload: Payload.Payload,
  count: number,
  prefix: string
): Promise<RunResult> => {
  const chunks = Payload.chunks(payload, count)
  const program = Effect.gen(function* () {
    const started = performance.now()
    const summary = yield* Stream.fromArrays(...chunks).pipe(
      Stream.run(RedisStreamSink.make(sinkOptions(prefix, setup.guarantee)))
    )
    return { ms: performance.now() - started, summary }
  }).pipe(Effect.provide(Layer.mergeAll(RedisConnection.layer({ url: setup.url }), checkpointLayer(setup, prefix))))
  const { ms, summary } = await Effect.runPromise(program)
  if (summary.events !== count || summary.written !== count) {
    throw new Error(`the sink reported ${summary.events} events, ${summary.written} written, expected ${count}`)
  }
  await verify(client, prefix, count)
  return result(count, ms)
}

/** Every event landed, once: a benchmark that wrote less would be measuring the wrong thing. */
const verify = async (client: Redis, prefix: string, count: number) => {
  const length = await totalLength(client, Payload.streamsOf(prefix))
  if (length !== count) throw new Error(`${prefix}: ${length} entries in the streams, expected ${count}`)
}

/**
 * What one file checkpoint commit costs on its own (write a temp file, fsync, rename, fsync the directory): the
 * sink pays it once per batch, between one batch's acknowledgement and the next batch's write.
 */
export const checkpointCommitMs = async (dir: string, commits: number): Promise<{ median: number; p90: number }> => {
  const times: Array<number> = []
  await Effect.runPromise(
    Effect.gen(function* () {
      const store = yield* CheckpointStore.makeFile(Path.join(dir, "commit-cost.checkpoint.json"))
      for (let i = 1; i <= commits; i++) {
        const started = performance.now()
        yield* store.commit("bench", Position.fromSequence(i))
        times.push(performance.now() - started)
      }
    })
  )
  times.sort((a, b) => a - b)
  return { median: times[Math.floor(times.length / 2)]!, p90: times[Math.floor(times.length * 0.9)]! }
}
