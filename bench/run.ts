/**
 * The benchmark suite of issue 6: Redflow against hand-written ioredis loops on the same pre-generated events
 * (1 KiB rows, three tables), in batches of 500. Throughput contenders run side by side in this process, in
 * alternating order, each ratio against the baseline of the same round; the latency and outage runs each get a fresh
 * child process (`latency.ts`, `outage.ts`) so that neither GC pauses over this process's pre-generated events nor
 * its heap end up in their figures.
 *
 *   pnpm bench                     full run (about 12 minutes)
 *   pnpm bench --quick             reduced run (under 2 minutes)
 *   pnpm bench --json              one JSON object with every figure on stdout (progress stays on stderr)
 *   pnpm bench --profile sink-alo  CPU profile of one contender (sink-alo, sink-eo, sink-alo-memory, baseline,
 *                                  consumer, consumer-baseline), written to bench/results/*.cpuprofile and summarized
 *
 * Other options: --events N (per throughput run), --rounds N, --only ceiling,throughput,process,consumer,latency,outage,
 * --outage-seconds N, --via sources|compiled (the `process` section's redflow: the compiled bin as npm installs it by
 * default in a full run, the type-stripped sources with --quick; see `process.ts`). Redis: `REDIS_URL` when set, else a `redis-server` spawned on a free port (stopped at the end).
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs/promises"
import * as Os from "node:os"
import * as Path from "node:path"
import type { Redis } from "ioredis"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Ceiling from "./src/Ceiling.ts"
import * as CompiledApp from "./src/CompiledApp.ts"
import * as Consumer from "./src/Consumer.ts"
import { collect } from "./src/Gc.ts"
import * as Latency from "./src/Latency.ts"
import * as Machine from "./src/Machine.ts"
import type * as Outage from "./src/Outage.ts"
import * as OutageProcess from "./src/OutageProcess.ts"
import * as Payload from "./src/Payload.ts"
import * as Profile from "./src/Profile.ts"
import { format as formatProfile, summarize as summarizeProfile } from "./src/ProfileSummary.ts"
import { log } from "./src/Progress.ts"
import { connect, deleteMatching, serverCpuMicros } from "./src/RedisClient.ts"
import { type LatencySummary, median, round } from "./src/Stats.ts"
import * as Throughput from "./src/Throughput.ts"
import * as Report from "./src/Report.ts"

// Effect's default logger writes to console.log: keep stdout for the report or the JSON.
console.log = (...args: Array<unknown>) => console.error(...args)

// ---------------------------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------------------------

const SECTIONS = ["ceiling", "throughput", "process", "consumer", "latency", "outage"] as const
type Section = (typeof SECTIONS)[number]
const PROFILES = ["sink-alo", "sink-eo", "sink-alo-memory", "baseline", "consumer", "consumer-baseline"] as const
type ProfileTarget = (typeof PROFILES)[number]

const argv = process.argv.slice(2)
const flag = (name: string) => argv.includes(name)
const value = (name: string): string | undefined => {
  const i = argv.indexOf(name)
  return i >= 0 ? argv[i + 1] : undefined
}
const numberOption = (name: string): number | undefined => {
  const v = value(name)
  if (v === undefined) return undefined
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} takes a positive number, got ${v}`)
  return n
}

const quick = flag("--quick")
const json = flag("--json")
const profileTarget = value("--profile") as ProfileTarget | undefined
if (profileTarget !== undefined && !PROFILES.includes(profileTarget)) {
  throw new Error(`--profile takes one of ${PROFILES.join(", ")}, got ${profileTarget}`)
}
const only = value("--only")?.split(",") as Array<Section> | undefined
for (const s of only ?? []) if (!SECTIONS.includes(s)) throw new Error(`--only takes ${SECTIONS.join(",")}, got ${s}`)
const runs = (section: Section) => only === undefined || only.includes(section)

const config = {
  mode: quick ? "quick" : "full",
  throughput: {
    events: numberOption("--events") ?? (quick ? 30_000 : 200_000),
    warmupEvents: quick ? 10_000 : 20_000,
    rounds: numberOption("--rounds") ?? (quick ? 3 : 7),
    batch: Throughput.BATCH
  },
  process: {
    events: quick ? 60_000 : 300_000,
    rounds: numberOption("--rounds") ?? (quick ? 3 : 5),
    via: value("--via") ?? (quick ? "sources" : "compiled")
  },
  consumer: {
    events: numberOption("--events") ?? (quick ? 30_000 : 200_000),
    warmupEvents: quick ? 5_000 : 20_000,
    rounds: numberOption("--rounds") ?? (quick ? 3 : 7),
    count: Consumer.COUNT
  },
  latency: {
    rates: [1_000, 10_000],
    seconds: quick ? 3 : 10,
    warmSeconds: 1,
    runs: quick ? 1 : 3
  },
  outage: {
    rate: 10_000,
    beforeSeconds: quick ? 3 : 15,
    outageSeconds: numberOption("--outage-seconds") ?? (quick ? 5 : 30),
    afterSeconds: quick ? 5 : 30,
    catchUpLimitSeconds: 120,
    runs: quick ? 1 : 3
  },
  ceiling: { requests: quick ? 50_000 : 200_000, runs: quick ? 1 : 3 },
  checkpointCommits: quick ? 50 : 200
} as const

const runId = `${Date.now().toString(36)}`
const benchDir = Path.dirname(new URL(import.meta.url).pathname)
const resultsDir = Path.join(benchDir, "results")

// ---------------------------------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------------------------------

interface Context {
  readonly url: string
  readonly server: RedisTestServer.Server
  readonly client: Redis
  readonly payload: Payload.Payload
  readonly dir: string
}

/** The `redflow` bin the `process` section and the whole-process outage run: compiled (installed once) or sources. */
let installedApp: string | undefined
const compiledApp = (): string => (installedApp ??= CompiledApp.install((line) => log("compiled", line)))
const redflowBin = (via: string): string => {
  if (via === "sources") return CompiledApp.sourcesBinOf(CompiledApp.ROOT)
  if (via !== "compiled") throw new Error(`--via takes sources or compiled, got ${via}`)
  return CompiledApp.binOf(compiledApp())
}

type ConsumerModule = typeof import("./src/ConsumerModule.ts")

/** The consumer module's side, or the reason it cannot run (it had not landed when the bench was written). */
const loadConsumerModule = async (): Promise<ConsumerModule | string> => {
  try {
    return await import("./src/ConsumerModule.ts")
  } catch (e) {
    return `TODO: RedisStreamConsumer could not be loaded (${(e as Error).message.split("\n")[0]})`
  }
}

const ceiling = (ctx: Context) => {
  if (!Ceiling.available()) {
    log("ceiling", "redis-benchmark not found: skipped")
    return { available: false as const }
  }
  const target = { host: ctx.server.host, port: ctx.server.port, password: new URL(ctx.url).password || undefined }
  const configs = Ceiling.CONFIGS.map((c) => {
    const values: Array<number> = []
    for (let i = 0; i < config.ceiling.runs; i++) {
      const key = `bench.${runId}.ceiling`
      values.push(Ceiling.xaddPerSecond(target, c, config.ceiling.requests, ctx.payload.meanEventBytes, key))
      ChildProcess.spawnSync("redis-cli", ["-h", target.host, "-p", String(target.port), "DEL", key])
    }
    log("ceiling", `redis-benchmark XADD, ${c.name}: ${Math.round(median(values))}/s`)
    return { ...c, xaddPerSecond: Math.round(median(values)), runs: values.map((v) => Math.round(v)) }
  })
  return {
    available: true as const,
    requests: config.ceiling.requests,
    eventBytes: ctx.payload.meanEventBytes,
    configs
  }
}

interface Contender {
  readonly key: string
  readonly label: string
  readonly run: (count: number, prefix: string) => Promise<Throughput.RunResult>
}

const sinkContenders = (ctx: Context): Array<Contender> => {
  const sink = (guarantee: Throughput.Guarantee, checkpoint: "file" | "memory") => (count: number, prefix: string) =>
    Throughput.sink({ url: ctx.url, guarantee, checkpoint, dir: ctx.dir }, ctx.client, ctx.payload, count, prefix)
  return [
    {
      key: "baseline",
      label: "baseline: ioredis pipeline of 500 XADDs",
      run: (count, prefix) => Throughput.baseline(ctx.client, ctx.payload, count, prefix)
    },
    { key: "sinkAlo", label: "RedisStreamSink at-least-once, file checkpoint", run: sink("at-least-once", "file") },
    { key: "sinkEo", label: "RedisStreamSink exactly-once, file checkpoint", run: sink("exactly-once", "file") },
    {
      key: "sinkAloMemory",
      label: "(diagnostic) at-least-once, memory checkpoint",
      run: sink("at-least-once", "memory")
    }
  ]
}

/**
 * Runs contenders in rounds, alternating the order (forwards, then backwards) so drift on a shared machine falls
 * on both sides; each round's ratios are against that round's baseline.
 */
const rounds = async (
  ctx: Context,
  section: string,
  contenders: ReadonlyArray<Contender>,
  count: number,
  warmup: number,
  roundCount: number,
  cleanup: (prefix: string) => Promise<void>
) => {
  for (const c of contenders) {
    log(section, `warm-up ${c.key} (${warmup} events)`)
    const prefix = `bench.${runId}.${section}.warm.${c.key}`
    await c.run(warmup, prefix)
    await cleanup(prefix)
  }
  const perRound: Array<Record<string, number>> = []
  const busy: Record<string, Array<number>> = {}
  for (let r = 0; r < roundCount; r++) {
    const order = r % 2 === 0 ? contenders : [...contenders].reverse()
    const row: Record<string, number> = {}
    for (const c of order) {
      collect()
      const prefix = `bench.${runId}.${section}.${r}.${c.key}`
      const serverBefore = await serverCpuMicros(ctx.client)
      const result = await c.run(count, prefix)
      const serverMicros = (await serverCpuMicros(ctx.client)) - serverBefore
      await cleanup(prefix)
      row[c.key] = Math.round(result.eventsPerSecond)
      ;(busy[c.key] ??= []).push(serverMicros / 1000 / result.ms)
      log(
        section,
        `round ${r + 1}/${roundCount} ${c.key}: ${Math.round(result.eventsPerSecond)} events/s (Redis busy ${((serverMicros / 1000 / result.ms) * 100).toFixed(0)} %)`
      )
    }
    perRound.push(row)
  }
  const baselineKey = contenders[0]!.key
  const figures = contenders.map((c) => ({
    key: c.key,
    label: c.label,
    eventsPerSecond: Math.round(median(perRound.map((row) => row[c.key]!))),
    ratio: c.key === baselineKey ? 1 : round(median(perRound.map((row) => row[c.key]! / row[baselineKey]!)), 3),
    ratios: perRound.map((row) => round(row[c.key]! / row[baselineKey]!, 3)),
    serverBusy: round(median(busy[c.key]!), 3)
  }))
  return { events: count, rounds: roundCount, perRound, figures }
}

const throughput = async (ctx: Context) => {
  const commit = await Throughput.checkpointCommitMs(ctx.dir, config.checkpointCommits)
  log(
    "throughput",
    `one file checkpoint commit: median ${commit.median.toFixed(2)} ms, p90 ${commit.p90.toFixed(2)} ms`
  )
  const result = await rounds(
    ctx,
    "throughput",
    sinkContenders(ctx),
    config.throughput.events,
    config.throughput.warmupEvents,
    config.throughput.rounds,
    async (prefix) => {
      await deleteMatching(ctx.client, `*${prefix}*`)
    }
  )
  return {
    ...result,
    batch: Throughput.BATCH,
    checkpointCommitMs: { median: round(commit.median, 3), p90: round(commit.p90, 3) }
  }
}

const consumerContenders = (ctx: Context, stream: string, module: ConsumerModule | string): Array<Contender> => {
  const out: Array<Contender> = [
    {
      key: "baseline",
      label: "baseline: XREADGROUP COUNT 500 + JSON.parse + XACK",
      run: (count, group) => Consumer.baseline(ctx.client, stream, group, count)
    }
  ]
  out.push({
    key: "baselineDecode",
    label: "(diagnostic) baseline with the envelope's validating decode",
    run: (count, group) => Consumer.baseline(ctx.client, stream, group, count, "envelope")
  })
  if (typeof module !== "string") {
    out.push(
      {
        key: "run",
        label: "RedisStreamConsumer.run (handler per event, batched XACK)",
        run: (count, group) => module.run(ctx.url, stream, group, count)
      },
      {
        key: "messages",
        label: "RedisStreamConsumer.messages + ack per chunk",
        run: (count, group) => module.messages(ctx.url, stream, group, count)
      }
    )
  }
  return out
}

const consumer = async (ctx: Context) => {
  const module = await loadConsumerModule()
  const stream = `bench.${runId}.consumer`
  const count = config.consumer.events
  log("consumer", `pre-filling ${stream} with ${count} entries`)
  await Consumer.prefill(ctx.client, ctx.payload, count, stream)
  const result = await rounds(
    ctx,
    "consumer",
    consumerContenders(ctx, stream, module),
    count,
    config.consumer.warmupEvents,
    config.consumer.rounds,
    async (group) => {
      await ctx.client.xgroup("DESTROY", stream, group)
    }
  )
  await deleteMatching(ctx.client, `*${stream}*`)
  return { ...result, count: Consumer.COUNT, ...(typeof module === "string" ? { todo: module } : {}) }
}

/** One latency run in a child process (see `latency.ts`: its heap holds only the events it offers). */
const latencyRun = async (
  ctx: Context,
  rate: number,
  reader: "xreadgroup" | "consumer",
  checkpoint: "file" | "memory",
  prefix: string
): Promise<Latency.Result> => {
  const resultPath = Path.join(ctx.dir, `${prefix}.result.json`)
  const options = {
    url: ctx.url,
    rate,
    seconds: config.latency.seconds,
    warmSeconds: config.latency.warmSeconds,
    reader,
    checkpoint,
    prefix,
    dir: ctx.dir
  }
  const child = ChildProcess.spawn(
    process.execPath,
    [Path.join(benchDir, "latency.ts"), JSON.stringify(options), resultPath],
    // The child's stdout (its Effect logs) goes to our stderr: our stdout is for the report or the JSON.
    { stdio: ["ignore", 2, 2] }
  )
  const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)))
  if (code !== 0) throw new Error(`the latency run exited with ${code}`)
  return JSON.parse(await Fs.readFile(resultPath, "utf8")) as Latency.Result
}

const latency = async (ctx: Context) => {
  const module = await loadConsumerModule()
  // The headline (a plain reader, the file checkpoint of the throughput runs), the consumer module as the reader,
  // and a diagnostic with the in-memory checkpoint that shows what the per-batch fsync costs in latency.
  const variants: Array<{ reader: "xreadgroup" | "consumer"; checkpoint: "file" | "memory" }> = [
    { reader: "xreadgroup", checkpoint: "file" },
    ...(typeof module === "string" ? [] : [{ reader: "consumer" as const, checkpoint: "file" as const }]),
    { reader: "xreadgroup", checkpoint: "memory" }
  ]
  const results = []
  for (const rate of config.latency.rates) {
    for (const { reader, checkpoint } of variants) {
      const perRun: Array<Latency.Result> = []
      for (let i = 0; i < config.latency.runs; i++) {
        const prefix = `bench.${runId}.latency.${rate}.${i}.${reader}.${checkpoint}`
        const r = await latencyRun(ctx, rate, reader, checkpoint, prefix)
        await deleteMatching(ctx.client, `*${prefix}*`)
        perRun.push(r)
        log(
          "latency",
          `${rate}/s via ${r.reader}, ${checkpoint} checkpoint, run ${i + 1}/${config.latency.runs}: p50 ${r.latency.p50.toFixed(3)} ms, p99 ${r.latency.p99.toFixed(3)} ms, max ${r.latency.max.toFixed(1)} ms${r.missing > 0 ? `, ${r.missing} MISSING` : ""}`
        )
      }
      const med = (f: (s: LatencySummary) => number, of: (r: Latency.Result) => LatencySummary = (r) => r.latency) =>
        round(median(perRun.map((r) => f(of(r)))), 3)
      results.push({
        rate,
        reader: perRun[0]!.reader,
        checkpoint,
        runs: perRun.length,
        eventsPerRun: perRun[0]!.events,
        p50: med((s) => s.p50),
        p90: med((s) => s.p90),
        p99: med((s) => s.p99),
        max: round(Math.max(...perRun.map((r) => r.latency.max)), 3),
        fromSchedule: {
          p50: med(
            (s) => s.p50,
            (r) => r.fromSchedule
          ),
          p99: med(
            (s) => s.p99,
            (r) => r.fromSchedule
          ),
          max: round(Math.max(...perRun.map((r) => r.fromSchedule.max)), 3)
        },
        missing: perRun.reduce((n, r) => n + r.missing, 0),
        achievedRate: Math.round(median(perRun.map((r) => r.achievedRate))),
        perRun: perRun.map((r) => ({
          p50: round(r.latency.p50, 3),
          p99: round(r.latency.p99, 3),
          max: round(r.latency.max, 3)
        }))
      })
    }
  }
  return {
    sink: "at-least-once, batch.maxEvents 500; each run in a fresh process holding only its events",
    seconds: config.latency.seconds,
    warmSeconds: config.latency.warmSeconds,
    results,
    ...(typeof module === "string" ? { todo: module } : {})
  }
}

/**
 * The whole process (`process.ts` as a child, its JSON on stdout): `redflow produce` from spawn to exit against a
 * plain script doing the same work, in both guarantees, on this run's server.
 */
const wholeProcess = async (ctx: Context): Promise<Report.ProcessFigure> => {
  const args = [
    Path.join(benchDir, "process.ts"),
    "--json",
    "--events",
    String(config.process.events),
    "--rounds",
    String(config.process.rounds),
    ...(config.process.via === "compiled" ? ["--app", compiledApp()] : ["--via", "sources"])
  ]
  log("process", `redflow produce (${config.process.via}) against the plain script, ${config.process.events} events`)
  const child = ChildProcess.spawn(process.execPath, args, {
    env: { ...process.env, REDIS_URL: ctx.url },
    stdio: ["ignore", "pipe", 2]
  })
  let stdout = ""
  child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()))
  const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)))
  if (code !== 0) throw new Error(`process.ts exited with ${code}`)
  const result = JSON.parse(stdout.trim().split("\n").pop()!) as Report.ProcessFigure
  for (const c of result.contenders)
    log("process", `${c.contender}: ${c.eventsPerSecond} events/s, ratio ${c.ratio} (${c.perRound.join(" ")})`)
  return result
}

/** One outage run in a child process (so its RSS is the sink's alone). */
const outageRun = async (ctx: Context, index: number): Promise<Outage.Result> => {
  const method: Outage.Method = ctx.server.pid !== undefined ? "sigstop" : "blackhole"
  const options: Outage.Options = {
    url: ctx.url,
    pid: ctx.server.pid,
    method,
    rate: config.outage.rate,
    beforeSeconds: config.outage.beforeSeconds,
    outageSeconds: config.outage.outageSeconds,
    afterSeconds: config.outage.afterSeconds,
    catchUpLimitSeconds: config.outage.catchUpLimitSeconds,
    checkpointPath: Path.join(ctx.dir, `outage-${index}.checkpoint.json`),
    prefix: `bench.${runId}.outage.${index}`
  }
  const resultPath = Path.join(ctx.dir, `outage-${index}.result.json`)
  const child = ChildProcess.spawn(
    process.execPath,
    [Path.join(benchDir, "outage.ts"), JSON.stringify(options), resultPath],
    // The child's stdout (its Effect logs) goes to our stderr: our stdout is for the report or the JSON.
    { stdio: ["ignore", 2, 2] }
  )
  const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)))
  if (ctx.server.pid !== undefined) {
    try {
      process.kill(ctx.server.pid, "SIGCONT")
    } catch {
      // gone
    }
  }
  if (code !== 0) throw new Error(`the outage run exited with ${code}`)
  return JSON.parse(await Fs.readFile(resultPath, "utf8")) as Outage.Result
}

const outage = async (ctx: Context) => {
  const perRun: Array<Outage.Result> = []
  for (let i = 0; i < config.outage.runs; i++) {
    log("outage", `run ${i + 1}/${config.outage.runs}`)
    const r = await outageRun(ctx, i)
    perRun.push(r)
    log(
      "outage",
      `run ${i + 1}: RSS before ${r.rssMB.before} MB, peak during outage ${r.rssMB.peakDuringOutage} MB, peak catching up ${r.rssMB.peakCatchUp} MB, after ${r.rssMB.afterStart} → ${r.rssMB.afterEnd} MB`
    )
  }
  const wholeProcess: Array<OutageProcess.Result> = []
  if (ctx.server.pid !== undefined) {
    // The same outage for `redflow produce` as a user runs it, with Node's defaults and with a smaller young generation.
    for (const nodeOptions of [[], ["--max-semi-space-size=16"]]) {
      log("outage", `whole process (${config.process.via}), node options: ${nodeOptions.join(" ") || "none"}`)
      const r = await OutageProcess.run(
        {
          url: ctx.url,
          pid: ctx.server.pid,
          bin: redflowBin(config.process.via),
          nodeOptions,
          rate: config.outage.rate,
          beforeSeconds: config.outage.beforeSeconds,
          outageSeconds: config.outage.outageSeconds,
          afterSeconds: config.outage.afterSeconds,
          prefix: `bench.${runId}.outage-process.${wholeProcess.length}`
        },
        (message) => log("outage", `  ${message}`)
      )
      log(
        "outage",
        `  peak RSS before ${r.rssMB.peakBefore} MB, during the outage ${r.rssMB.peakDuringOutage} MB, after ${r.rssMB.peakAfter} MB`
      )
      wholeProcess.push(r)
    }
  }
  const med = (f: (r: Outage.Result) => number) => round(median(perRun.map(f)), 1)
  const worst = (f: (r: Outage.Result) => number) => round(Math.max(...perRun.map(f)), 1)
  return {
    method: perRun[0]!.method,
    methodWhy:
      perRun[0]!.method === "sigstop"
        ? "SIGSTOP of the spawned redis-server: TCP still accepts, nothing answers, commands time out (the hardest case for a client); nothing in the measured process holds the bytes in flight but the client"
        : "ChaosProxy blackhole (REDIS_URL: the server's process is not ours); the proxy runs in the measured process, its held bytes are reported",
    ...config.outage,
    rssMB: {
      atStart: med((r) => r.rssMB.atStart),
      before: med((r) => r.rssMB.before),
      peakDuringOutage: med((r) => r.rssMB.peakDuringOutage),
      peakDuringOutageWorst: worst((r) => r.rssMB.peakDuringOutage),
      riseDuringOutage: med((r) => r.rssMB.peakDuringOutage - r.rssMB.before),
      settledDuringOutage: med((r) => r.rssMB.settledDuringOutage),
      peakCatchUp: med((r) => r.rssMB.peakCatchUp),
      peakCatchUpWorst: worst((r) => r.rssMB.peakCatchUp),
      afterStart: med((r) => r.rssMB.afterStart),
      afterEnd: med((r) => r.rssMB.afterEnd),
      growthAfter: med((r) => r.rssMB.growthAfter),
      growthAfterWorst: worst((r) => r.rssMB.growthAfter),
      slopeAfterMBPerMin: med((r) => r.rssMB.slopeAfterMBPerMin)
    },
    heapMB: {
      atStart: med((r) => r.heapMB.atStart),
      peakDuringOutage: med((r) => r.heapMB.peakDuringOutage),
      liveAtEnd: med((r) => r.heapMB.liveAtEnd)
    },
    backlogAtRecovery: med((r) => r.backlogAtRecovery),
    catchUpSeconds: med((r) => r.catchUpSeconds),
    wholeProcess: { via: config.process.via, runs: wholeProcess },
    perRun: perRun.map(({ samples: _samples, ...rest }) => rest),
    samples: perRun.map((r) => r.samples)
  }
}

/** A section's result with the 1-minute load average before and after it (other work on the machine shows here). */
const withLoad = async <A extends object>(f: () => Promise<A>): Promise<A & { readonly loadAverage: string }> => {
  const before = Os.loadavg()[0]!
  const result = await f()
  return { ...result, loadAverage: `${before.toFixed(2)} → ${Os.loadavg()[0]!.toFixed(2)}` }
}

// ---------------------------------------------------------------------------------------------------------------
// Profile mode
// ---------------------------------------------------------------------------------------------------------------

const profileMode = async (ctx: Context, target: ProfileTarget) => {
  const count = config.throughput.events
  const stamp = new Date().toISOString().replace(/[:.]/g, "-")
  const path = Path.join(resultsDir, `profile-${target}-${stamp}.cpuprofile`)
  let contender: Contender
  let cleanup: (prefix: string) => Promise<void> = async (prefix) => {
    await deleteMatching(ctx.client, `*${prefix}*`)
  }
  if (target === "consumer" || target === "consumer-baseline") {
    const module = await loadConsumerModule()
    if (typeof module === "string" && target === "consumer") throw new Error(module)
    const stream = `bench.${runId}.profile.consumer`
    log("profile", `pre-filling ${stream} with ${count} entries`)
    await Consumer.prefill(ctx.client, ctx.payload, count, stream)
    contender = consumerContenders(ctx, stream, module).find(
      (c) => c.key === (target === "consumer" ? "run" : "baseline")
    )!
    cleanup = async (group) => {
      await ctx.client.xgroup("DESTROY", stream, group)
    }
  } else {
    const key = {
      "sink-alo": "sinkAlo",
      "sink-eo": "sinkEo",
      "sink-alo-memory": "sinkAloMemory",
      baseline: "baseline"
    }[target]
    contender = sinkContenders(ctx).find((c) => c.key === key)!
  }
  log("profile", `warm-up ${target}`)
  await contender.run(Math.min(count, config.throughput.warmupEvents), `bench.${runId}.profile.warm`)
  await cleanup(`bench.${runId}.profile.warm`)
  collect()
  log("profile", `profiling ${target} over ${count} events`)
  const { value, profile } = await Profile.around(path, () => contender.run(count, `bench.${runId}.profile.run`))
  await cleanup(`bench.${runId}.profile.run`)
  await deleteMatching(ctx.client, `*bench.${runId}.profile*`)
  const summary = summarizeProfile(profile)
  log("profile", `wrote ${path}`)
  return { target, events: count, eventsPerSecond: Math.round(value.eventsPerSecond), path, summary }
}

// ---------------------------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------------------------

const main = async () => {
  const server = await RedisTestServer.start()
  const dir = await Fs.mkdtemp(Path.join(Os.tmpdir(), "redflow-bench-"))
  let client: Redis | undefined
  try {
    log(
      "setup",
      `Redis ${server.url} (${server.source === "env" ? "REDIS_URL" : server.source}${server.pid !== undefined ? `, pid ${server.pid}` : ""})`
    )
    client = await connect(server.url)
    const machine = Machine.describe(Machine.redisVersion(await client.info("server")))
    log(
      "setup",
      `${machine.cpus} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, Node ${machine.node}, Redis ${machine.redis}, load ${machine.loadAverageAtStart.join(" ")}`
    )
    const needed = Math.max(config.throughput.events, config.consumer.events)
    log(
      "setup",
      `generating ${needed} events (payloadBytes ${Payload.PAYLOAD_BYTES}, tables ${Payload.TABLES.join(", ")})`
    )
    const payload = await Payload.generate(needed)
    log("setup", `mean encoded event: ${payload.meanEventBytes} bytes`)
    const ctx: Context = { url: server.url, server, client, payload, dir }

    if (profileTarget !== undefined) {
      const result = await profileMode(ctx, profileTarget)
      if (json)
        process.stdout.write(
          `${JSON.stringify({ machine, ...result, summary: { ...result.summary, functions: [...result.summary.functions].sort((a, b) => b.selfMs - a.selfMs).slice(0, 40) } }, null, 2)}\n`
        )
      else process.stdout.write(`${profileHeader(result)}\n${formatProfile(result.summary, 30)}\n`)
      return
    }

    const started = new Date()
    const results: Report.Results = {
      machine,
      mode: config.mode,
      startedAt: started.toISOString(),
      config,
      payload: {
        events: needed,
        payloadBytes: Payload.PAYLOAD_BYTES,
        tables: Payload.TABLES,
        meanEventBytes: payload.meanEventBytes
      },
      ...(runs("ceiling") ? { ceiling: await withLoad(async () => ceiling(ctx)) } : {}),
      ...(runs("throughput") ? { throughput: await withLoad(() => throughput(ctx)) } : {}),
      ...(runs("process") ? { process: await withLoad(() => wholeProcess(ctx)) } : {}),
      ...(runs("consumer") ? { consumer: await withLoad(() => consumer(ctx)) } : {}),
      ...(runs("latency") ? { latency: await withLoad(() => latency(ctx)) } : {}),
      ...(runs("outage") ? { outage: await withLoad(() => outage(ctx)) } : {})
    }
    const finished = {
      ...results,
      durationSeconds: Math.round((Date.now() - started.getTime()) / 1000),
      loadAverageAtEnd: Os.loadavg().map((l) => round(l, 2)),
      targets: Report.targets(results)
    }
    await Fs.mkdir(resultsDir, { recursive: true })
    const file = Path.join(resultsDir, `${config.mode}-${started.toISOString().replace(/[:.]/g, "-")}.json`)
    await Fs.writeFile(file, `${JSON.stringify(finished, null, 2)}\n`)
    log("done", `results in ${Path.relative(process.cwd(), file)}`)
    if (json) {
      const { outage, ...rest } = finished
      const compact = outage === undefined ? rest : { ...rest, outage: { ...outage, samples: undefined } }
      process.stdout.write(`${JSON.stringify(compact, null, 2)}\n`)
    } else process.stdout.write(`${Report.format(finished)}\n`)
  } finally {
    client?.disconnect()
    await Fs.rm(dir, { recursive: true, force: true })
    await server.stop()
  }
}

const profileHeader = (result: { target: string; events: number; eventsPerSecond: number; path: string }) =>
  `${result.target}: ${result.events} events at ${result.eventsPerSecond} events/s under the profiler (sampling slows it down); profile ${result.path}\n`

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
    process.exit(1)
  }
)
