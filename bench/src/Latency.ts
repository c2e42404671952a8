/**
 * End-to-end latency at a fixed offered rate: from the moment the source hands an event to the sink to the moment
 * a reader on another connection has it. The source paces pre-generated events (drift-free: event i is due at
 * start + i / rate, and every wake-up emits all events due); the sink is the at-least-once sink with its file
 * checkpoint; the reader is a plain `XREADGROUP BLOCK` loop or the consumer module.
 */
import * as ChildProcess from "node:child_process"
import * as Path from "node:path"
import * as Url from "node:url"
import { Cause, Duration, Effect, Layer, Stream } from "effect"
import type * as Arr from "effect/Array"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import * as Payload from "./Payload.ts"
import { connect, field, parseRead } from "./RedisClient.ts"
import { type LatencySummary, summarize } from "./Stats.ts"
import { checkpointLayer, type Guarantee, sinkOptions } from "./Throughput.ts"

export const GROUP = "bench-latency"

/**
 * Milliseconds on the system's monotonic clock (`CLOCK_MONOTONIC` on Linux), which every process on the machine shares:
 * a reader in another process stamps arrivals on the same clock as the source's emissions.
 */
export const now = (): number => Number(process.hrtime.bigint()) / 1e6

/** Something that reads the streams and reports each entry's event id with the time it arrived. */
export interface Reader {
  readonly name: string
  /** Reports what it saw only when stopped (a reader in another process): the run then waits a fixed 500 ms. */
  readonly reportsAtStop?: boolean
  /** Starts reading through group {@link GROUP} (already created at `$`); resolves to a stop function. */
  readonly start: (
    url: string,
    streams: ReadonlyArray<string>,
    onEntry: (eventId: string, now: number) => void
  ) => Promise<() => Promise<void>>
}

/** A plain loop: `XREADGROUP … COUNT 500 BLOCK 100 NOACK STREAMS <the three streams>` on its own connection. */
export const xreadgroup: Reader = {
  name: "XREADGROUP BLOCK",
  start: async (url, streams, onEntry) => {
    const client = await connect(url)
    let stopped = false
    const loop = (async () => {
      const args = ["GROUP", GROUP, "reader", "COUNT", 500, "BLOCK", 100, "NOACK", "STREAMS", ...streams]
      for (const _ of streams) args.push(">")
      while (!stopped) {
        const reply = parseRead(await client.call("XREADGROUP", ...args))
        const at = now()
        for (const [, entries] of reply) {
          for (const [, flat] of entries) {
            const id = field(flat, "id")
            if (id !== undefined) onEntry(id, at)
          }
        }
      }
    })()
    return async () => {
      stopped = true
      await loop
      client.disconnect()
    }
  }
}

/**
 * The same loop in a process of its own (`latency-reader.ts`), as a user's consumer runs: its replies are not
 * collected by the sink's garbage collector, and its work does not share the sink's event loop. It reports at stop.
 */
export const xreadgroupProcess: Reader = {
  name: "XREADGROUP BLOCK, own process",
  reportsAtStop: true,
  start: async (url, streams, onEntry) => {
    const script = Path.join(Path.dirname(Url.fileURLToPath(import.meta.url)), "..", "latency-reader.ts")
    const child = ChildProcess.spawn(process.execPath, [script, url, JSON.stringify(streams)], {
      stdio: ["pipe", "pipe", "inherit"]
    })
    let out = ""
    child.stdout.setEncoding("utf8")
    child.stdout.on("data", (d: string) => (out += d))
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve))
    await new Promise<void>((resolve, reject) => {
      const onData = () => {
        if (out.startsWith("ready\n")) {
          child.stdout.off("data", onData)
          resolve()
        }
      }
      child.stdout.on("data", onData)
      void exited.then((code) => reject(new Error(`the latency reader exited with ${code} before it was ready`)))
    })
    return async () => {
      child.stdin.end("stop\n")
      const code = await exited
      if (code !== 0) throw new Error(`the latency reader exited with ${code}`)
      const seen = JSON.parse(out.slice("ready\n".length)) as Array<[string, number]>
      for (const [id, at] of seen) onEntry(id, at)
    }
  }
}

export interface Options {
  readonly url: string
  readonly rate: number
  /** Measured seconds, after `warmSeconds` whose events are not counted. */
  readonly seconds: number
  readonly warmSeconds: number
  readonly guarantee: Guarantee
  readonly checkpoint: "file" | "memory"
  readonly dir: string
  readonly reader: Reader
}

export interface Result {
  readonly rate: number
  readonly reader: string
  readonly events: number
  /** From the source handing the event over to the reader having it (the headline figure), in ms. */
  readonly latency: LatencySummary
  /** From the event's scheduled time (includes the source's timer lateness and any backpressure), in ms. */
  readonly fromSchedule: LatencySummary
  /** Events the reader never saw (should be 0). */
  readonly missing: number
  readonly achievedRate: number
}

/** A paced stream of `events[0..count)`: event i is emitted at (or just after) start + i / rate. */
const paced = (
  events: ReadonlyArray<CdcEvent>,
  count: number,
  rate: number,
  emitAt: Float64Array,
  clock: { start: number }
): Stream.Stream<CdcEvent> =>
  Stream.fromPull(
    Effect.sync(() => {
      let next = 0
      const emit = Effect.sync(() => {
        const t = now()
        const due = Math.min(
          count,
          next + Payload.CHUNK,
          Math.max(next + 1, Math.floor(((t - clock.start) * rate) / 1000) + 1)
        )
        for (let i = next; i < due; i++) emitAt[i] = t
        const chunk = events.slice(next, due) as unknown as Arr.NonEmptyReadonlyArray<CdcEvent>
        next = due
        return chunk
      })
      return Effect.suspend(() => {
        if (next >= count) return Cause.done()
        if (Number.isNaN(clock.start)) clock.start = now()
        const wait = clock.start + (next * 1000) / rate - now()
        return wait > 0 ? Effect.andThen(Effect.sleep(Duration.millis(wait)), emit) : emit
      })
    })
  )

export const run = async (payload: Payload.Payload, prefix: string, options: Options): Promise<Result> => {
  const count = Math.round(options.rate * (options.seconds + options.warmSeconds))
  if (count > payload.events.length) throw new Error(`latency needs ${count} events, ${payload.events.length} made`)
  const warm = Math.round(options.rate * options.warmSeconds)
  const streams = Payload.streamsOf(prefix)
  const setup = await connect(options.url)
  for (const s of streams) await setup.xgroup("CREATE", s, GROUP, "$", "MKSTREAM")
  setup.disconnect()

  const emitAt = new Float64Array(count).fill(NaN)
  const seenAt = new Float64Array(count).fill(NaN)
  let seen = 0
  const stop = await options.reader.start(options.url, streams, (id, now) => {
    const i = payload.indexById.get(id)
    if (i !== undefined && i < count && Number.isNaN(seenAt[i]!)) {
      seenAt[i] = now
      seen++
    }
  })
  const clock = { start: NaN }
  try {
    await Effect.runPromise(
      paced(payload.events, count, options.rate, emitAt, clock).pipe(
        Stream.run(RedisStreamSink.make(sinkOptions(prefix, options.guarantee))),
        Effect.provide(Layer.mergeAll(RedisConnection.layer({ url: options.url }), checkpointLayer(options, prefix)))
      )
    )
    if (options.reader.reportsAtStop) await new Promise((r) => setTimeout(r, 500))
    else {
      const deadline = now() + 10_000
      while (seen < count && now() < deadline) await new Promise((r) => setTimeout(r, 10))
    }
  } finally {
    await stop()
  }
  const latency: Array<number> = []
  const fromSchedule: Array<number> = []
  let missing = 0
  for (let i = warm; i < count; i++) {
    if (Number.isNaN(seenAt[i]!)) {
      missing++
      continue
    }
    latency.push(seenAt[i]! - emitAt[i]!)
    fromSchedule.push(seenAt[i]! - (clock.start + (i * 1000) / options.rate))
  }
  const lastEmit = emitAt[count - 1]!
  return {
    rate: options.rate,
    reader: options.reader.name,
    events: count - warm,
    latency: summarize(latency),
    fromSchedule: summarize(fromSchedule),
    missing,
    achievedRate: Math.round(((count - 1) * 1000) / (lastEmit - clock.start))
  }
}
