/**
 * Experiment (not part of `pnpm bench`): the sink's memory at a steady offered rate, once a second: RSS, V8 heap, and
 * each heap space's size/used. Run with `--trace-gc-nvp` to see what survives each young-generation GC.
 *
 *   node bench/experiments/mem-probe.ts redis://127.0.0.1:6390 10000 15    # url, events/s, seconds; CP=memory for the
 *                                                                        # in-memory checkpoint
 */
import { Effect, Layer, Stream } from "effect"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import * as v8 from "node:v8"

const url = process.argv[2] ?? "redis://127.0.0.1:6390"
const rate = Number(process.argv[3] ?? 10000)
const seconds = Number(process.argv[4] ?? 15)
const mb = (n: number) => (n / 2 ** 20).toFixed(1)
const show = (label: string) => {
  const m = process.memoryUsage()
  const spaces = v8
    .getHeapSpaceStatistics()
    .map((s) => `${s.space_name.replace("_space", "")}:${mb(s.space_size)}/${mb(s.space_used_size)}`)
    .join(" ")
  console.log(
    `${label} rss ${mb(m.rss)} heapTotal ${mb(m.heapTotal)} used ${mb(m.heapUsed)} ext ${mb(m.external)} ab ${mb(m.arrayBuffers)} | ${spaces}`
  )
}
show("start")
let committed = 0
// Oldest event's wait (arrival in the sink → checkpoint) per batch, worst in each second: a sink that lags holds more.
let worstWait = 0
Effect.runFork(
  SyntheticSource.make({ ratePerSecond: rate, payloadBytes: 1024, tables: ["customers", "orders", "payments"] }).pipe(
    RedisStreamSink.deliver({ stream: "mem.${source.table}", pipeline: "mem", guarantee: "at-least-once" }),
    Stream.runForEach((b) =>
      Effect.sync(() => {
        committed += b.events
        worstWait = Math.max(worstWait, Date.now() - b.enqueuedAt)
      })
    ),
    Effect.provide(
      Layer.mergeAll(
        RedisConnection.layer({ url }),
        process.env.CP === "memory" ? CheckpointStore.layerMemory : CheckpointStore.layerFile("/tmp/mem/cp.json")
      )
    )
  )
)
let peak = 0
const t = setInterval(() => {
  peak = Math.max(peak, process.memoryUsage().rss)
}, 50)
for (let i = 1; i <= seconds; i++) {
  await new Promise((r) => setTimeout(r, 1000))
  show(`t=${i} committed=${committed} worst-wait=${worstWait}ms`)
  worstWait = 0
}
clearInterval(t)
console.log(`peak rss ${mb(peak)}`)
process.exit(0)
