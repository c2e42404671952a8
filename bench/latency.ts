/**
 * One end-to-end latency run in a process of its own, holding only the events it offers: a long-lived benchmark
 * runner with hundreds of MB of pre-generated events has major GC pauses a sink process would not have, and they
 * would show up in the tail. `reader` is `xreadgroup` (a plain loop in this process), `xreadgroup-process` (the same
 * loop in a process of its own, `latency-reader.ts`) or `consumer` (the consumer module). Started by `run.ts`:
 *
 *   node bench/latency.ts '{"url":"redis://127.0.0.1:6379","rate":1000,"seconds":10,"warmSeconds":1,
 *     "reader":"xreadgroup","checkpoint":"file","prefix":"bench.latency","dir":"/tmp"}' result.json
 */
import * as Fs from "node:fs/promises"
import * as Latency from "./src/Latency.ts"
import * as Payload from "./src/Payload.ts"

interface Options {
  readonly url: string
  readonly rate: number
  readonly seconds: number
  readonly warmSeconds: number
  readonly reader: "xreadgroup" | "xreadgroup-process" | "consumer"
  readonly checkpoint: "file" | "memory"
  readonly prefix: string
  readonly dir: string
}

const [optionsJson, resultPath] = process.argv.slice(2)
if (optionsJson === undefined || resultPath === undefined) {
  process.stderr.write("usage: node bench/latency.ts '<options json>' <result path>\n")
  process.exit(2)
}
const options = JSON.parse(optionsJson) as Options
const reader =
  options.reader === "xreadgroup"
    ? Latency.xreadgroup
    : options.reader === "xreadgroup-process"
      ? Latency.xreadgroupProcess
      : (await import("./src/ConsumerModule.ts")).latencyReader
const payload = await Payload.generate(Math.round(options.rate * (options.seconds + options.warmSeconds)))
const result = await Latency.run(payload, options.prefix, {
  url: options.url,
  rate: options.rate,
  seconds: options.seconds,
  warmSeconds: options.warmSeconds,
  guarantee: "at-least-once",
  checkpoint: options.checkpoint,
  dir: options.dir,
  reader
})
await Fs.writeFile(resultPath, JSON.stringify(result))
process.exit(0)
