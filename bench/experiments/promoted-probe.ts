/**
 * Which allocation sites feed V8's old generation at a steady offered rate: a sampling heap profile that keeps
 * objects later collected by a major GC (promoted, then dead) but not those a scavenge collected.
 */
import { Effect, Layer, Stream } from "effect"
import * as Inspector from "node:inspector/promises"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"

const url = process.argv[2] ?? "redis://127.0.0.1:6390"
const rate = Number(process.argv[3] ?? 10000)
const seconds = Number(process.argv[4] ?? 8)
const session = new Inspector.Session()
session.connect()
Effect.runFork(
  SyntheticSource.make({ ratePerSecond: rate, payloadBytes: 1024, tables: ["customers", "orders", "payments"] }).pipe(
    RedisStreamSink.deliver({ stream: "mem.${source.table}", pipeline: "mem", guarantee: "at-least-once" }),
    Stream.runDrain,
    Effect.provide(Layer.mergeAll(RedisConnection.layer({ url }), CheckpointStore.layerFile("/tmp/mem/cp.json")))
  )
)
await new Promise((r) => setTimeout(r, 2000))
await session.post("HeapProfiler.startSampling", {
  samplingInterval: 4096,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: false
} as never)
await new Promise((r) => setTimeout(r, seconds * 1000))
const { profile } = (await session.post("HeapProfiler.stopSampling")) as any
const bySite = new Map<string, number>()
const walk = (node: any, stack: Array<string>) => {
  const f = node.callFrame
  const here = `${f.functionName || "(anon)"} ${String(f.url).split("/").slice(-2).join("/")}:${f.lineNumber + 1}`
  const s = [...stack, here]
  if (node.selfSize > 0) {
    const key = s.slice(-4).join(" < ")
    bySite.set(key, (bySite.get(key) ?? 0) + node.selfSize)
  }
  for (const c of node.children) walk(c, s)
}
walk(profile.head, [])
const total = [...bySite.values()].reduce((a, b) => a + b, 0)
console.log(`total sampled ${(total / 2 ** 20).toFixed(1)} MB`)
for (const [k, v] of [...bySite].sort((a, b) => b[1] - a[1]).slice(0, Number(process.env.TOP ?? 25)))
  console.log(`${(v / 2 ** 20).toFixed(1).padStart(7)} MB  ${k.split(" < ").reverse().join(" < ")}`)
process.exit(0)
