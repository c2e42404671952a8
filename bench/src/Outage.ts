/**
 * The outage run, in a process of its own (see `bench/outage.ts`) so its RSS is the sink's alone, not the
 * benchmark runner's pre-generated events: the synthetic source offers `rate` events/s (generated on the fly, as a
 * live database would produce them) into the at-least-once sink with its file checkpoint; after `beforeSeconds`
 * Redis becomes unreachable for `outageSeconds`, then comes back; the run goes on until the sink has caught up with
 * the source and for `afterSeconds` more. RSS is sampled every 100 ms throughout.
 *
 * How Redis is made unreachable:
 * - `sigstop` (the default when the benchmark spawned the server): SIGSTOP of the redis-server process, SIGCONT
 *   after. The server accepts TCP connections (the kernel does) but answers nothing: commands time out, which is
 *   the hardest case for the client (no error comes back to stop it), and nothing in this process holds the bytes
 *   in flight except the client itself, so the RSS measured is the sink's.
 * - `blackhole` (when the server is `REDIS_URL`, whose process is not ours): the ChaosProxy in this process holds
 *   both directions. The bytes it holds are in this process's RSS too, so they are reported (`proxyHeldBytes`).
 */
import { Cause, Effect, Exit, Fiber, Layer, Stream } from "effect"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as Position from "@redflow/core/Position"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import * as ChaosProxy from "@redflow/testing/ChaosProxy"
import { collect } from "./Gc.ts"
import * as Payload from "./Payload.ts"
import { connect, deleteMatching, totalLength } from "./RedisClient.ts"
import { median, round, slope } from "./Stats.ts"
import { sinkOptions } from "./Throughput.ts"

export type Method = "sigstop" | "blackhole"

export interface Options {
  readonly url: string
  /** The server's pid, for `sigstop`. */
  readonly pid?: number | undefined
  readonly method: Method
  readonly rate: number
  readonly beforeSeconds: number
  readonly outageSeconds: number
  readonly afterSeconds: number
  /** Longest wait for the sink to catch up after Redis is back. */
  readonly catchUpLimitSeconds: number
  readonly checkpointPath: string
  readonly prefix: string
}

export interface Sample {
  readonly t: number
  readonly rssMB: number
  readonly heapMB: number
}

export interface Result {
  readonly method: Method
  readonly rate: number
  readonly outageSeconds: number
  readonly rssMB: {
    /** Before the sink starts (after a full GC): the process with its modules loaded. */
    readonly atStart: number
    /** Median over the last 2 s before the outage. */
    readonly before: number
    readonly peakBefore: number
    readonly peakDuringOutage: number
    /** Median over the second half of the outage, once the process has settled with nothing to do. */
    readonly settledDuringOutage: number
    /** From Redis coming back until the sink caught up with the source. */
    readonly peakCatchUp: number
    /** The `afterSeconds` window once caught up. */
    readonly peakAfter: number
    /** Median of the first and of the last quarter of the after window. */
    readonly afterStart: number
    readonly afterEnd: number
    /** afterEnd − afterStart. */
    readonly growthAfter: number
    /** Least-squares slope over the after window, MB per minute. */
    readonly slopeAfterMBPerMin: number
  }
  readonly heapMB: {
    /** heapUsed after a full GC before the sink starts. */
    readonly atStart: number
    readonly peakDuringOutage: number
    readonly afterEnd: number
    /** heapUsed after a forced full GC at the very end: what the run left live (compare with `atStart`). */
    readonly liveAtEnd: number
  }
  /** Events the source had offered but the sink not committed, when Redis came back. */
  readonly backlogAtRecovery: number
  /** Seconds from Redis coming back until the sink caught up; -1 when it did not within the limit. */
  readonly catchUpSeconds: number
  readonly committed: number
  /** Entries in the streams: more than `committed` means retried batches were written twice (at-least-once). */
  readonly entries: number
  readonly proxyHeldBytesPeak: number
  /** Why the sink stopped before it was interrupted, if it did. */
  readonly sinkError?: string
  readonly samples: ReadonlyArray<Sample>
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

export const run = async (options: Options, log: (message: string) => void): Promise<Result> => {
  const proxy = options.method === "blackhole" ? await ChaosProxy.start({ target: options.url }) : undefined
  const url = proxy?.url ?? options.url
  collect()
  const atStart = process.memoryUsage()
  const t0 = performance.now()
  const now = () => (performance.now() - t0) / 1000
  const samples: Array<Sample> = []
  let proxyHeldBytesPeak = 0
  const sampler = setInterval(() => {
    const m = process.memoryUsage()
    samples.push({ t: now(), rssMB: m.rss / 2 ** 20, heapMB: m.heapUsed / 2 ** 20 })
    if (proxy !== undefined) proxyHeldBytesPeak = Math.max(proxyHeldBytesPeak, proxy.stats().heldBytes)
  }, 100)

  let committed = 0
  let sourceStart = NaN
  const offered = () => (Number.isNaN(sourceStart) ? 0 : Math.floor((now() - sourceStart) * options.rate))
  const fiber = Effect.runFork(
    Stream.suspend(() => {
      sourceStart = now()
      return SyntheticSource.make({
        ratePerSecond: options.rate,
        payloadBytes: Payload.PAYLOAD_BYTES,
        tables: [...Payload.TABLES]
      })
    }).pipe(
      RedisStreamSink.deliver(sinkOptions(options.prefix, "at-least-once")),
      Stream.runForEach((batch) =>
        Effect.sync(() => {
          committed = Number(Position.toSequence(batch.position))
        })
      ),
      Effect.provide(Layer.mergeAll(RedisConnection.layer({ url }), CheckpointStore.layerFile(options.checkpointPath)))
    )
  )

  const stopServer = () => {
    if (options.method === "sigstop") process.kill(options.pid!, "SIGSTOP")
    else proxy!.blackhole()
  }
  const resumeServer = () => {
    if (options.method === "sigstop") process.kill(options.pid!, "SIGCONT")
    else proxy!.heal()
  }

  let outageStart = 0
  let outageEnd = 0
  let caughtUp = -1
  let backlogAtRecovery = 0
  try {
    await sleep(options.beforeSeconds * 1000)
    log(
      `steady at ${options.rate}/s, ${committed} committed; Redis unreachable (${options.method}) for ${options.outageSeconds} s`
    )
    outageStart = now()
    stopServer()
    for (let s = 0; s < options.outageSeconds; s += 5) {
      await sleep(Math.min(5, options.outageSeconds - s) * 1000)
      const last = samples[samples.length - 1]
      log(
        `  outage ${Math.min(options.outageSeconds, s + 5)} s: RSS ${last?.rssMB.toFixed(0)} MB, ${offered() - committed} events behind`
      )
    }
    outageEnd = now()
    resumeServer()
    backlogAtRecovery = offered() - committed
    log(`Redis back; ${backlogAtRecovery} events behind`)
    while (now() - outageEnd < options.catchUpLimitSeconds) {
      if (offered() - committed < options.rate * 0.1) {
        caughtUp = now()
        break
      }
      await sleep(50)
    }
    log(caughtUp < 0 ? "did not catch up within the limit" : `caught up in ${(caughtUp - outageEnd).toFixed(1)} s`)
    await sleep(options.afterSeconds * 1000)
  } finally {
    if (options.method === "sigstop" && outageStart > 0) {
      try {
        process.kill(options.pid!, "SIGCONT")
      } catch {
        // gone
      }
    }
    clearInterval(sampler)
  }
  const end = now()
  collect()
  const liveAtEnd = process.memoryUsage().heapUsed / 2 ** 20
  const exit = await Effect.runPromise(Effect.andThen(Fiber.interrupt(fiber), Fiber.await(fiber)))
  const sinkError = Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause) ? Cause.pretty(exit.cause) : undefined
  await proxy?.close()

  const client = await connect(options.url)
  const entries = await totalLength(client, Payload.streamsOf(options.prefix))
  await deleteMatching(client, `${options.prefix}*`)
  client.disconnect()

  const between = (from: number, to: number) => samples.filter((s) => s.t >= from && s.t < to)
  const peak = (xs: ReadonlyArray<Sample>, f: (s: Sample) => number = (s) => s.rssMB) =>
    xs.reduce((m, s) => Math.max(m, f(s)), 0)
  const recovered = caughtUp < 0 ? outageEnd + options.catchUpLimitSeconds : caughtUp
  const after = between(recovered, end)
  const quarter = Math.max(1, Math.floor(after.length / 4))
  const afterStart = median(after.slice(0, quarter).map((s) => s.rssMB))
  const afterEnd = median(after.slice(-quarter).map((s) => s.rssMB))
  const r = (x: number) => round(x, 1)
  return {
    method: options.method,
    rate: options.rate,
    outageSeconds: options.outageSeconds,
    rssMB: {
      atStart: r(atStart.rss / 2 ** 20),
      before: r(median(between(outageStart - 2, outageStart).map((s) => s.rssMB))),
      peakBefore: r(peak(between(0, outageStart))),
      peakDuringOutage: r(peak(between(outageStart, outageEnd))),
      settledDuringOutage: r(median(between((outageStart + outageEnd) / 2, outageEnd).map((s) => s.rssMB))),
      peakCatchUp: r(peak(between(outageEnd, recovered))),
      peakAfter: r(peak(after)),
      afterStart: r(afterStart),
      afterEnd: r(afterEnd),
      growthAfter: r(afterEnd - afterStart),
      slopeAfterMBPerMin: r(
        slope(
          after.map((s) => s.t),
          after.map((s) => s.rssMB)
        ) * 60
      )
    },
    heapMB: {
      atStart: r(atStart.heapUsed / 2 ** 20),
      peakDuringOutage: r(peak(between(outageStart, outageEnd), (s) => s.heapMB)),
      afterEnd: r(median(after.slice(-quarter).map((s) => s.heapMB))),
      liveAtEnd: r(liveAtEnd)
    },
    backlogAtRecovery,
    catchUpSeconds: caughtUp < 0 ? -1 : r(caughtUp - outageEnd),
    committed,
    entries,
    proxyHeldBytesPeak,
    ...(sinkError === undefined ? {} : { sinkError }),
    samples: samples.map((s) => ({ t: round(s.t, 1), rssMB: r(s.rssMB), heapMB: r(s.heapMB) }))
  }
}
