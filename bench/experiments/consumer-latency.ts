/**
 * The consumer's latency on its own, at a fixed rate: a child process XADDs (id `*`) at `rate`/s, round robin over
 * `streams` streams, copies of one entry the sink wrote; this process reads them with `RedisStreamConsumer.messages`
 * (merged with `Stream.mergeAll` when there are several) and acknowledges each chunk, and reports the time from the
 * entry id's millisecond to the chunk's arrival (ms resolution). The producer is another process, so the sink's
 * work does not share this event loop, unlike `pnpm bench`'s latency runs.
 *
 *   pnpm exec node bench/experiments/consumer-latency.ts <rate> <count> <seconds> <streams>
 *   BUF=<mergeAll bufferSize, default 16>  NOACK=1 (hand chunks back without XACK)
 */
import * as ChildProcess from "node:child_process"
import { Effect, Fiber, Stream } from "effect"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as Payload from "../src/Payload.ts"
import { connect } from "../src/RedisClient.ts"
import { summarize } from "../src/Stats.ts"

const [rate = 10000, count = 500, seconds = 4, nStreams = 1] = process.argv.slice(2).map(Number)
const stream = `exp.cl.${process.pid}`
const url = "redis://127.0.0.1:6379"
const setup = await connect(url)
const streams = Array.from({ length: nStreams }, (_, i) => `${stream}.${i}`)
for (const s of streams) await setup.xgroup("CREATE", s, "g", "$", "MKSTREAM")
// One real entry written by the sink, whose fields the producer then writes again and again.
const payload = await Payload.generate(1)
await Effect.runPromise(
  Stream.fromIterable(payload.events.slice(0, 1)).pipe(
    Stream.run(RedisStreamSink.make({ stream: `${stream}.seed` })),
    Effect.provide(RedisConnection.layer({ url })),
    Effect.provide(CheckpointStore.layerMemory)
  )
)
const seed = (await setup.xrange(`${stream}.seed`, "-", "+"))[0]?.[1]
if (seed === undefined) throw new Error(`the sink wrote no entry to ${stream}.seed`)
await setup.del(`${stream}.seed`)
const bufferSize = Number(process.env.BUF ?? 16)
const acknowledge = process.env.NOACK === undefined
const lat: Array<number> = []
let started = false
let chunks = 0
const fiber = Effect.runFork(
  Stream.mergeAll(
    streams.map((s) =>
      RedisStreamConsumer.messages({ stream: s, group: "g", consumer: "c", count, block: "100 millis" })
    ),
    { concurrency: "unbounded", bufferSize }
  ).pipe(
    Stream.runForEachArray((chunk) => {
      const now = Date.now()
      chunks++
      if (started) for (const m of chunk) lat.push(now - Number(m.id.split("-")[0]))
      return acknowledge ? RedisStreamConsumer.ack(chunk) : Effect.void
    }),
    Effect.provide(RedisConnection.layer({ url }))
  )
)
const producer = ChildProcess.spawn(
  process.execPath,
  [
    "-e",
    `const R=require(${JSON.stringify(import.meta.resolve("ioredis").replace("file://", ""))});const r=new R();const t0=Date.now();let n=0;const total=${rate * seconds};
     const tick=()=>{const due=Math.min(total,Math.floor((Date.now()-t0)*${rate}/1000));const p=r.pipeline();for(;n<due;n++)p.xadd(${JSON.stringify(stream)}+"."+(n%${nStreams}),"*",...${JSON.stringify(seed)});p.exec();if(n<total)setTimeout(tick,1);else setTimeout(()=>process.exit(0),200)};tick()`
  ],
  { stdio: "inherit" }
)
setTimeout(() => (started = true), 1000)
await new Promise((r) => producer.once("exit", r))
await new Promise((r) => setTimeout(r, 300))
await Effect.runPromise(Fiber.interrupt(fiber))
const l = summarize(lat)
console.log(
  `rate ${rate} count ${count}: n ${l.count} chunks ${chunks} p50 ${l.p50} ms p90 ${l.p90} p99 ${l.p99} max ${l.max}`
)
await setup.del(...streams)
setup.disconnect()
process.exit(0)
