/**
 * The PostgreSQL pipeline wired by hand from the library, as a process of its own: PostgresSource →
 * RedisStreamSink → Redis, with a file checkpoint and the slot acknowledged through it. It takes the same flags as
 * `redflow run` (a subset), so a bench can run either (`--via script` in throughput.ts, latency.ts and memory.ts):
 * this one shows what the command adds on top of the library.
 *
 *   node bench/postgres/pipeline.ts --source postgres://… --tables public.a,public.b --redis redis://… \
 *     --stream 'cdc.${source.table}' --guarantee exactly-once --checkpoint FILE --pipeline P --slot S \
 *     --publication P --snapshot never
 *
 * Without --checkpoint the checkpoints are kept in memory, as with redflow run. Runs until SIGTERM or SIGINT (then interrupts the pipeline and exits 0).
 */
import { parseArgs } from "node:util"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as Source from "@redflow/core/Source"
import * as PostgresSource from "@redflow/postgres/PostgresSource"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"

// Effect's default logger writes to console.log: keep stdout free, as the bench reads nothing from it.
console.log = (...args: Array<unknown>) => console.error(...args)

const { values } = parseArgs({
  options: {
    source: { type: "string" },
    tables: { type: "string" },
    redis: { type: "string" },
    stream: { type: "string" },
    guarantee: { type: "string", default: "at-least-once" },
    checkpoint: { type: "string" },
    pipeline: { type: "string", default: "redflow" },
    slot: { type: "string" },
    publication: { type: "string" },
    snapshot: { type: "string", default: "initial" },
    "batch-size": { type: "string" },
    "high-water": { type: "string" }
  }
})

const required = (name: keyof typeof values): string => {
  const v = values[name]
  if (typeof v !== "string" || v === "") {
    process.stderr.write(`pipeline.ts: --${name} is required (the same flags as redflow run)\n`)
    process.exit(2)
  }
  return v
}
const oneOf = <A extends string>(name: keyof typeof values, allowed: ReadonlyArray<A>): A => {
  const v = values[name] as string
  if (!allowed.includes(v as A)) {
    process.stderr.write(`pipeline.ts: --${name} takes ${allowed.join(" or ")}, got ${v}\n`)
    process.exit(2)
  }
  return v as A
}

const pipeline = values.pipeline
const sinkOptions: RedisStreamSink.Options = {
  stream: required("stream"),
  pipeline,
  guarantee: oneOf("guarantee", ["at-least-once", "exactly-once"] as const),
  ...(values["batch-size"] === undefined ? {} : { batch: { maxEvents: Number(values["batch-size"]) } })
}

const program = Effect.gen(function* () {
  const source = yield* PostgresSource.make({
    url: required("source"),
    tables: required("tables").split(","),
    slot: values.slot,
    publication: values.publication,
    snapshot: oneOf("snapshot", ["initial", "never"] as const),
    ...(values["high-water"] === undefined ? {} : { highWater: Number(values["high-water"]) })
  })
  const store = yield* CheckpointStore.CheckpointStore
  const from = yield* store.load(pipeline)
  process.stderr.write(`pipeline.ts: ${source.tables.join(", ")} (slot ${source.slot}) into ${sinkOptions.stream}\n`)
  yield* source
    .stream(from)
    .pipe(RedisStreamSink.deliver(sinkOptions), Stream.runDrain, Source.acknowledgeCommits(source, pipeline))
}).pipe(
  Effect.scoped,
  Effect.provide(
    Layer.mergeAll(
      RedisConnection.layer({ url: required("redis") }),
      // No --checkpoint: in memory, as redflow run does.
      values.checkpoint === undefined ? CheckpointStore.layerMemory : CheckpointStore.layerFile(values.checkpoint)
    )
  )
)

const fiber = Effect.runFork(program)
let stopping = false
const stop = () => {
  if (stopping) return
  stopping = true
  Effect.runFork(Fiber.interrupt(fiber))
}
process.once("SIGTERM", stop)
process.once("SIGINT", stop)
const exit = await Effect.runPromise(Fiber.await(fiber))
if (exit._tag === "Failure" && !stopping) {
  process.stderr.write(`pipeline.ts failed: ${Cause.pretty(exit.cause)}\n`)
  process.exit(1)
}
process.exit(0)
