/**
 * What issue 15's building blocks cost on the write path, against a redis-server of its own (spawned here):
 *
 *   pnpm exec node bench/retention.ts [--batches 200] [--batch 500] [--only retention|publish|sink|tracing]
 *
 * - retention: a stream with 3 consumer groups; each round XADDs a 500-entry batch (one pipelined round trip, as the
 *   sink's script call is one), then runs StreamRetention.apply on it. Measured: µs per XADD batch alone (a second
 *   stream with the same groups, no retention) and per retention call, and their ratio. Two cases: the groups keep up
 *   (each reads and acknowledges the batch between rounds, untimed, so every call trims 500 entries) and one group
 *   lags (never reads; maxLen 1,000 with onLag hold: nothing can be trimmed, the call finds the holding group).
 * - publish: events/s of the same write path with nothing published, one notice per batch
 *   (RedisStreamChannel's choice) and one PUBLISH per event, with 0 and 10 subscribers (in a child process, so
 *   their work does not share this process's CPU).
 * - sink: events/s of RedisStreamSink end to end (batches × batch synthetic events, default window) into a stream
 *   with 3 groups, with no trimming, trim.maxLen (in the write script), trim.acked (StreamRetention after each
 *   write) and publish (a notice per write); a warm-up pass, then the modes interleaved three times.
 * - tracing: µs per message of RedisStreamConsumer.run over a filled stream with Effect's native tracer (tracing off:
 *   the handler span is skipped) and with a tracer that records spans (what tracing on costs before any export).
 */
import { fork } from "node:child_process"
import { Redis } from "ioredis"
import { Effect, Layer, ManagedRuntime, Stream, Tracer } from "effect"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import * as StreamRetention from "@redflow/redis/StreamRetention"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"

const args = process.argv.slice(2)
const flag = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback
}

const median = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}
const mean = (xs: ReadonlyArray<number>) => xs.reduce((a, b) => a + b, 0) / xs.length
const us = (ns: bigint) => Number(ns) / 1000

async function main() {
  const batches = Number(flag("batches", "200"))
  const batch = Number(flag("batch", "500"))
  const only = flag("only", "")
  const server = await RedisTestServer.start({ useEnv: false, docker: false })
  const url = server.url
  const redis = new Redis(url)
  const runtime = ManagedRuntime.make(RedisConnection.layer({ url }) as Layer.Layer<RedisConnection.RedisConnection>)
  // ~300-byte events, the sink's fields
  const fields = (i: number) => [
    "event",
    JSON.stringify(SyntheticSource.eventAt(i + 1, { tables: ["orders"] })),
    "id",
    String(i),
    "op",
    "c",
    "table",
    "orders"
  ]
  const xaddBatch = async (stream: string, base: number) => {
    const p = redis.pipeline()
    for (let i = 0; i < batch; i++) p.xadd(stream, "*", ...fields(base + i))
    await p.exec()
  }
  const readAndAck = async (stream: string, group: string) => {
    const reply = (await redis.xreadgroup("GROUP", group, "c", "COUNT", batch, "STREAMS", stream, ">")) as Array<
      [string, Array<[string, Array<string>]>]
    > | null
    const ids = (reply?.[0]?.[1] ?? []).map(([id]) => id)
    if (ids.length > 0) await redis.xack(stream, group, ...ids)
  }
  const report: Record<string, unknown> = {
    redis: (await redis.info("server")).match(/redis_version:(\S+)/)?.[1],
    batch,
    batches
  }
  try {
    if (only === "" || only === "retention") {
      for (const lagging of [false, true]) {
        const plain = `bench.retention.plain.${lagging}`
        const trimmed = `bench.retention.trimmed.${lagging}`
        for (const s of [plain, trimmed])
          for (const g of ["g1", "g2", "g3"]) await redis.xgroup("CREATE", s, g, "0", "MKSTREAM")
        const options: StreamRetention.AckedTrim = lagging
          ? { acked: true, maxLen: 1000, onLag: "hold" }
          : { acked: true }
        const xaddOnly: Array<number> = []
        const xaddThen: Array<number> = []
        const script: Array<number> = []
        for (let round = 0; round < batches + 10; round++) {
          const warm = round < 10
          let t = process.hrtime.bigint()
          await xaddBatch(plain, round * batch)
          if (!warm) xaddOnly.push(us(process.hrtime.bigint() - t))
          t = process.hrtime.bigint()
          await xaddBatch(trimmed, round * batch)
          const t1 = process.hrtime.bigint()
          await runtime.runPromise(StreamRetention.apply(trimmed, options))
          const t2 = process.hrtime.bigint()
          if (!warm) {
            xaddThen.push(us(t1 - t))
            script.push(us(t2 - t1))
          }
          for (const g of lagging ? ["g1", "g2"] : ["g1", "g2", "g3"]) {
            await readAndAck(plain, g)
            await readAndAck(trimmed, g)
          }
          // the plain stream is trimmed by hand, untimed, so both streams stay the same size
          await redis.xtrim(plain, "MAXLEN", String(await redis.xlen(trimmed)))
        }
        report[`retention.${lagging ? "oneGroupLags" : "groupsKeepUp"}`] = {
          xaddBatchUs: { median: median(xaddOnly), mean: mean(xaddOnly) },
          retentionCallUs: { median: median(script), mean: mean(script) },
          ratio: { median: median(script) / median(xaddOnly), mean: mean(script) / mean(xaddOnly) },
          streamLength: await redis.xlen(trimmed)
        }
      }
    }

    if (only === "" || only === "publish") {
      for (const subscribers of [0, 10]) {
        const channel = `bench.channel.${subscribers}`
        const child =
          subscribers === 0
            ? undefined
            : fork(new URL(import.meta.url).pathname, ["--subscribers", url, String(subscribers), channel])
        if (child !== undefined) await new Promise((resolve) => child.once("message", resolve))
        // a warm-up pass, then the modes interleaved three times: the first pass ran slower whatever its mode
        const passes = ["warmup", 1, 2, 3] as const
        for (const pass of passes)
          for (const mode of ["none", "notice", "perEvent"] as const) {
            const stream = `bench.publish.${subscribers}.${mode}.${pass}`
            const start = process.hrtime.bigint()
            for (let round = 0; round < batches; round++) {
              const p = redis.pipeline()
              for (let i = 0; i < batch; i++) p.xadd(stream, "*", ...fields(round * batch + i))
              const ids = ((await p.exec()) ?? []).map(([, id]) => id as string)
              if (mode === "notice") {
                await redis.publish(
                  channel,
                  JSON.stringify({ stream, first: ids[0], last: ids[ids.length - 1], count: ids.length })
                )
              } else if (mode === "perEvent") {
                const q = redis.pipeline()
                for (let i = 0; i < batch; i++) q.publish(channel, fields(round * batch + i)[1]!)
                await q.exec()
              }
              await redis.xtrim(stream, "MAXLEN", "~", "10000")
            }
            const seconds = Number(process.hrtime.bigint() - start) / 1e9
            await redis.del(stream)
            if (pass === "warmup") continue
            const key = `publish.${subscribers}subscribers.${mode}.eventsPerSecond`
            report[key] = [
              ...((report[key] as Array<number> | undefined) ?? []),
              Math.round((batches * batch) / seconds)
            ]
          }
        if (child !== undefined) {
          const received = await new Promise<{ received: number }>((resolve) => {
            child.once("message", (m) => resolve(m as { received: number }))
            child.send("stop")
          })
          report[`publish.${subscribers}subscribers.received`] = received.received
        }
      }
    }

    if (only === "" || only === "sink") {
      // The sink end to end: events/s with no trimming, trim.maxLen (MAXLEN ~ in the write script) and trim.acked
      // (StreamRetention after each write), into a stream with 3 groups; then publish (a notice per write).
      const events = batches * batch
      const modes = ["none", "maxLen", "acked", "publish"] as const
      for (const pass of ["warmup", 1, 2, 3] as const) {
        for (const mode of modes) {
          const stream = `bench.sink.${mode}.${pass}`
          for (const g of ["g1", "g2", "g3"]) await redis.xgroup("CREATE", stream, g, "$", "MKSTREAM")
          const options: RedisStreamSink.Options = {
            stream,
            pipeline: stream,
            durability: "ignore",
            ...(mode === "maxLen" ? { trim: { maxLen: 1_000_000 } } : {}),
            ...(mode === "acked" ? { trim: { acked: true } } : {}),
            ...(mode === "publish" ? { publish: { channel: `${stream}.changed` } } : {})
          }
          const start = process.hrtime.bigint()
          await runtime.runPromise(
            SyntheticSource.make({ count: events }).pipe(
              Stream.run(RedisStreamSink.make(options)),
              Effect.provide(CheckpointStore.layerMemory)
            )
          )
          const seconds = Number(process.hrtime.bigint() - start) / 1e9
          await redis.del(stream)
          if (pass === "warmup") continue
          const key = `sink.${mode}.eventsPerSecond`
          report[key] = [...((report[key] as Array<number> | undefined) ?? []), Math.round(events / seconds)]
        }
      }
    }

    if (only === "" || only === "tracing") {
      const count = batches * batch
      for (const mode of ["off", "recording", "off", "recording"] as const) {
        const stream = `bench.tracing.${mode}.${Math.random().toString(36).slice(2)}`
        for (let round = 0; round < count / batch; round++) await xaddBatch(stream, round * batch)
        const spans: Array<Tracer.Span> = []
        const tracer = Tracer.make({
          span(options) {
            const span = new Tracer.NativeSpan(options)
            spans.push(span)
            return span
          }
        })
        const run = RedisStreamConsumer.run({
          stream,
          group: "g",
          consumer: "c",
          limit: count,
          count: batch,
          handler: () => Effect.void
        })
        const start = process.hrtime.bigint()
        await runtime.runPromise(mode === "off" ? run : run.pipe(Effect.withTracer(tracer)))
        const perMessage = us(process.hrtime.bigint() - start) / count
        const key = `tracing.${mode}`
        const previous = (report[key] as Array<number> | undefined) ?? []
        report[key] = [...previous, Number(perMessage.toFixed(2))]
        report[`${key}.spans`] = spans.length
      }
    }
  } finally {
    await runtime.dispose()
    redis.disconnect()
    await server.stop()
  }
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
}

// Child mode: N subscribers counting messages until told to stop.
if (args[0] === "--subscribers") {
  const url = args[1]!
  const n = Number(args[2])
  const channel = args[3]!
  const clients = Array.from({ length: n }, () => new Redis(url))
  let received = 0
  await Promise.all(clients.map((c) => c.subscribe(channel)))
  for (const c of clients) c.on("message", () => void received++)
  process.send!({ ready: true })
  process.on("message", () => {
    process.send!({ received })
    for (const c of clients) c.disconnect()
    process.exit(0)
  })
} else {
  // last: main uses the helpers above, which are not initialized until their declarations run
  await main()
}
