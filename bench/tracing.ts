/**
 * What tracing costs the sink, against a redis-server of its own (spawned here): events/s of `RedisStreamSink.make`
 * over the same pre-generated events (1 KiB rows, three tables, the sink's defaults, at-least-once, memory
 * checkpoints) for three contenders, in rotating order within each round:
 *
 * - `baseline`: the sink as it was at `--baseline` (default: the merge base of `HEAD` and `main`), before the write path had spans and traceparent
 *   fields: its `packages/redis/src` is extracted with `git archive` into `tmp/` and loaded next to this checkout's
 *   (same `effect`, same `@redflow/core`);
 * - `off`: this checkout's sink under Effect's native tracer (tracing off, what runs unless `OTEL_*` names an
 *   endpoint);
 * - `on`: this checkout's sink under a tracer that records its spans in memory (tracing on, without the export).
 *
 *   pnpm exec node --expose-gc bench/tracing.ts [--events 100000] [--rounds 7] [--baseline <commit>]
 *     [--contenders baseline,off,on]
 *
 * `off` and `on` share this checkout's modules, so in one process `off` runs code that V8 also compiled for the
 * traced paths; `--contenders baseline,off` measures tracing off alone, as a process without a tracer runs it.
 * `--baseline HEAD` runs the same code as both `baseline` and `off`: what the harness itself makes of no change.
 *
 * Prints one JSON object: per contender the events/s of each round and their median, and per round the ratios
 * off/baseline and on/baseline (each against the baseline of the same round); the same for this process's CPU time
 * per event (user + system, `process.cpuUsage`), which a loaded machine disturbs less than the wall clock.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { Effect, Layer, Stream, Tracer } from "effect"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Payload from "./src/Payload.ts"
import { connect, deleteMatching, totalLength } from "./src/RedisClient.ts"
import { median, round } from "./src/Stats.ts"

console.log = (...args: Array<unknown>) => console.error(...args)

const argv = process.argv.slice(2)
const option = (name: string, fallback: string) => {
  const i = argv.indexOf(`--${name}`)
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback
}
const events = Number(option("events", "100000"))
const rounds = Number(option("rounds", "7"))
const baselineRef = option("baseline", "")
const only = option("contenders", "baseline,off,on").split(",")

const repo = Path.resolve(import.meta.dirname, "..")
const git = (...args: Array<string>) => ChildProcess.execFileSync("git", args, { cwd: repo, encoding: "utf8" }).trim()

/** The baseline's redis package sources, next to this checkout's dependencies. */
const extractBaseline = (ref: string) => {
  const sha = git("rev-parse", "--short", ref)
  const root = Path.join(repo, "tmp", `bench-baseline-${sha}`)
  const pkg = Path.join(root, "packages", "redis")
  if (!Fs.existsSync(Path.join(pkg, "src", "RedisStreamSink.ts"))) {
    Fs.mkdirSync(root, { recursive: true })
    ChildProcess.execSync(`git archive ${sha} packages/redis/src | tar -x -C ${JSON.stringify(root)}`, { cwd: repo })
    Fs.symlinkSync(Path.join(repo, "packages", "redis", "node_modules"), Path.join(pkg, "node_modules"))
  }
  return { sha, src: Path.join(pkg, "src") }
}

interface Contender {
  readonly name: "baseline" | "off" | "on"
  readonly run: (prefix: string, chunks: Array<ReadonlyArray<unknown>>) => Promise<{ ms: number; cpuMs: number }>
}

type SinkModule = typeof RedisStreamSink
type ConnectionModule = typeof RedisConnection

const sinkRun =
  (
    url: string,
    sink: SinkModule,
    connection: ConnectionModule,
    wrap: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  ) =>
  async (prefix: string, chunks: Array<ReadonlyArray<unknown>>) => {
    const program = Effect.gen(function* () {
      const started = performance.now()
      const cpu = process.cpuUsage()
      const summary = yield* Stream.fromArrays(...(chunks as Array<ReadonlyArray<never>>)).pipe(
        Stream.run(sink.make({ stream: `${prefix}.\${source.table}`, pipeline: "bench" }))
      )
      const used = process.cpuUsage(cpu)
      return { ms: performance.now() - started, cpuMs: (used.user + used.system) / 1000, summary }
    }).pipe(wrap, Effect.provide(Layer.mergeAll(connection.layer({ url }), CheckpointStore.layerMemory)))
    const { ms, cpuMs, summary } = await Effect.runPromise(program)
    if (summary.written !== events) throw new Error(`${prefix}: ${summary.written} written, expected ${events}`)
    return { ms, cpuMs }
  }

const main = async () => {
  // By default the commit this branch starts from: the sink before the change, whatever main has gained since.
  const baseline = extractBaseline(baselineRef === "" ? git("merge-base", "HEAD", "main") : baselineRef)
  const oldSink = (await import(Path.join(baseline.src, "RedisStreamSink.ts"))) as SinkModule
  const oldConnection = (await import(Path.join(baseline.src, "RedisConnection.ts"))) as ConnectionModule
  const server = await RedisTestServer.start({ useEnv: false, docker: false })
  const client = await connect(server.url)
  let spans = 0
  const recording = Tracer.make({
    span(options) {
      spans++
      return new Tracer.NativeSpan(options)
    }
  })
  const contenders = (
    [
      { name: "baseline", run: sinkRun(server.url, oldSink, oldConnection, (e) => e) },
      { name: "off", run: sinkRun(server.url, RedisStreamSink, RedisConnection, (e) => e) },
      { name: "on", run: sinkRun(server.url, RedisStreamSink, RedisConnection, Effect.withTracer(recording)) }
    ] satisfies Array<Contender>
  ).filter((c) => only.includes(c.name))
  const payload = await Payload.generate(events)
  const chunks = Payload.chunks(payload, events)
  const perSecond: Record<string, Array<number>> = { baseline: [], off: [], on: [] }
  const ratios: Record<string, Array<number>> = { off: [], on: [] }
  // CPU time of this process (the sink; Redis runs in its own) per event: less disturbed by a loaded machine.
  const cpuUs: Record<string, Array<number>> = { baseline: [], off: [], on: [] }
  const cpuRatios: Record<string, Array<number>> = { off: [], on: [] }
  try {
    // A warm-up run of each, untimed: the first run of a module pays its compilation.
    for (const c of contenders) {
      await c.run(`bench.tracing.warm.${c.name}`, chunks)
      await deleteMatching(client, "bench.tracing.*")
    }
    for (let r = 0; r < rounds; r++) {
      const order = contenders.map((_, i) => contenders[(i + r) % contenders.length]!)
      const thisRound: Record<string, number> = {}
      const thisCpu: Record<string, number> = {}
      for (const c of order) {
        ;(globalThis as { gc?: () => void }).gc?.()
        const prefix = `bench.tracing.${r}.${c.name}`
        const { ms, cpuMs } = await c.run(prefix, chunks)
        const length = await totalLength(client, Payload.streamsOf(prefix))
        if (length !== events) throw new Error(`${prefix}: ${length} entries, expected ${events}`)
        await deleteMatching(client, "bench.tracing.*")
        thisRound[c.name] = (events * 1000) / ms
        perSecond[c.name]!.push(Math.round(thisRound[c.name]!))
        thisCpu[c.name] = (cpuMs * 1000) / events
        cpuUs[c.name]!.push(round(thisCpu[c.name]!, 2))
      }
      for (const name of ["off", "on"] as const) {
        if (thisRound[name] === undefined) continue
        ratios[name]!.push(round(thisRound[name] / thisRound.baseline!, 3))
        cpuRatios[name]!.push(round(thisCpu[name]! / thisCpu.baseline!, 3))
      }
      console.error(
        `round ${r + 1}/${rounds}: ${order.map((c) => `${c.name} ${Math.round(thisRound[c.name]!)}/s`).join(", ")}`
      )
    }
  } finally {
    client.disconnect()
    await server.stop()
  }
  const report = {
    code: git("rev-parse", "--short", "HEAD"),
    baseline: baseline.sha,
    events,
    rounds,
    meanEventBytes: payload.meanEventBytes,
    eventsPerSecond: Object.fromEntries(
      Object.entries(perSecond)
        .filter(([, v]) => v.length > 0)
        .map(([k, v]) => [k, { rounds: v, median: Math.round(median(v)) }])
    ),
    ratioToBaseline: Object.fromEntries(
      Object.entries(ratios)
        .filter(([, v]) => v.length > 0)
        .map(([k, v]) => [k, { rounds: v, median: round(median(v), 3) }])
    ),
    cpuMicrosPerEvent: Object.fromEntries(
      Object.entries(cpuUs)
        .filter(([, v]) => v.length > 0)
        .map(([k, v]) => [k, { rounds: v, median: round(median(v), 2) }])
    ),
    cpuRatioToBaseline: Object.fromEntries(
      Object.entries(cpuRatios)
        .filter(([, v]) => v.length > 0)
        .map(([k, v]) => [k, { rounds: v, median: round(median(v), 3) }])
    ),
    spansRecordedOn: spans
  }
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
}

await main()
