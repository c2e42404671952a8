/** The benchmark's results: their shape, the targets judged against them, and a plain-text report. */
import type { Machine } from "./Machine.ts"

export interface Figure {
  readonly key: string
  readonly label: string
  /** Median over the rounds. */
  readonly eventsPerSecond: number
  /** Median over the rounds of this contender's throughput / the same round's baseline. */
  readonly ratio: number
  readonly ratios: ReadonlyArray<number>
  /** Median over the rounds of the server's main-thread CPU time (INFO cpu) / the run's wall time. */
  readonly serverBusy: number
}

export interface RoundsResult {
  readonly events: number
  readonly rounds: number
  readonly perRound: ReadonlyArray<Record<string, number>>
  readonly figures: ReadonlyArray<Figure>
}

export interface LatencyFigure {
  readonly rate: number
  readonly reader: string
  readonly checkpoint: string
  readonly runs: number
  readonly eventsPerRun: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
  readonly fromSchedule: { readonly p50: number; readonly p99: number; readonly max: number }
  readonly missing: number
  readonly achievedRate: number
}

export interface OutageFigure {
  readonly method: string
  readonly methodWhy: string
  readonly rate: number
  readonly outageSeconds: number
  readonly runs: number
  readonly rssMB: {
    readonly atStart: number
    readonly before: number
    readonly peakDuringOutage: number
    readonly peakDuringOutageWorst: number
    readonly settledDuringOutage: number
    /** Peak during the outage minus the level before it: what the outage itself cost. */
    readonly riseDuringOutage: number
    readonly peakCatchUp: number
    readonly peakCatchUpWorst: number
    readonly afterStart: number
    readonly afterEnd: number
    readonly growthAfter: number
    readonly growthAfterWorst: number
    readonly slopeAfterMBPerMin: number
  }
  readonly heapMB: {
    readonly atStart: number
    readonly peakDuringOutage: number
    readonly liveAtEnd: number
  }
  readonly backlogAtRecovery: number
  readonly catchUpSeconds: number
  /** The same outage for `redflow produce` as its own process (see `OutageProcess.ts`). */
  readonly wholeProcess?: {
    readonly via: string
    readonly runs: ReadonlyArray<{
      readonly nodeOptions: string
      readonly rssMB: {
        readonly peakBefore: number
        readonly peakDuringOutage: number
        readonly peakAfter: number
        readonly highWater: number
      }
    }>
  }
  readonly perRun: ReadonlyArray<{ readonly committed: number; readonly entries: number; readonly sinkError?: string }>
}

/** `process.ts`'s result: `redflow produce` as a whole process against the plain script. */
export interface ProcessFigure {
  readonly via: string
  readonly events: number
  readonly payloadBytes: number
  readonly rounds: number
  readonly load: ReadonlyArray<string>
  readonly contenders: ReadonlyArray<{
    readonly contender: string
    readonly medianMs: number
    readonly eventsPerSecond: number
    /** The plain script's wall time / this contender's, median of the rounds (1 for the plain script). */
    readonly ratio: number
    readonly perRound: ReadonlyArray<number>
  }>
}

export interface CeilingFigure {
  readonly available: boolean
  readonly requests?: number
  readonly eventBytes?: number
  readonly configs?: ReadonlyArray<{ readonly name: string; readonly xaddPerSecond: number }>
}

export interface Results {
  readonly machine: Machine
  readonly mode: string
  readonly startedAt: string
  readonly config: unknown
  readonly payload: {
    readonly events: number
    readonly payloadBytes: number
    readonly tables: ReadonlyArray<string>
    readonly meanEventBytes: number
  }
  readonly ceiling?: CeilingFigure & Loaded
  readonly throughput?: RoundsResult &
    Loaded & {
      readonly batch: number
      readonly checkpointCommitMs: { readonly median: number; readonly p90: number }
    }
  readonly process?: ProcessFigure & Loaded
  readonly consumer?: RoundsResult & Loaded & { readonly count: number; readonly todo?: string }
  readonly latency?: Loaded & {
    readonly sink: string
    readonly seconds: number
    readonly warmSeconds: number
    readonly results: ReadonlyArray<LatencyFigure>
    readonly todo?: string
  }
  readonly outage?: OutageFigure & Loaded
}

/** The 1-minute load average before → after a section: how busy the shared machine was. */
export interface Loaded {
  readonly loadAverage: string
}

export interface Target {
  readonly figure: string
  readonly target: string
  readonly value: string
  /** `undefined` when the figure was not measured. */
  readonly met: boolean | undefined
}

/** How much RSS may rise over the window after recovery and still count as "no growth". */
export const GROWTH_TOLERANCE_MB = 5

/**
 * The targets, judged against the results: issue 16's (the whole process, the sink against the ioredis loop and
 * against the server's one-connection ceiling, the consumer, the latency tail, the outage's RSS), and issue 6's p50,
 * which issue 16 keeps.
 */
export const targets = (results: Results): Array<Target> => {
  const out: Array<Target> = []
  const figure = (r: RoundsResult | undefined, key: string) => r?.figures.find((f) => f.key === key)
  const ratioTarget = (name: string, threshold: number, value: { ratio: number; detail: string } | undefined) =>
    out.push({
      figure: name,
      target: `≥ ${threshold.toFixed(2)}`,
      value: value === undefined ? "not measured" : `${value.ratio.toFixed(2)} (${value.detail})`,
      met: value === undefined ? undefined : value.ratio >= threshold
    })
  const plain = results.process?.contenders.find((c) => c.contender === "plain")
  for (const guarantee of ["at-least-once", "exactly-once"] as const) {
    const c = results.process?.contenders.find((x) => x.contender === guarantee)
    ratioTarget(
      `redflow produce ${guarantee} (${results.process?.via ?? "whole process"}) / plain script`,
      1.5,
      c === undefined || plain === undefined
        ? undefined
        : { ratio: c.ratio, detail: `${c.eventsPerSecond} vs ${plain.eventsPerSecond} events/s` }
    )
  }
  const baseline = figure(results.throughput, "baseline")
  for (const [key, name] of [
    ["sinkAlo", "sink at-least-once / ioredis pipeline loop"],
    ["sinkEo", "sink exactly-once / ioredis pipeline loop"]
  ] as const) {
    const f = figure(results.throughput, key)
    ratioTarget(
      name,
      2,
      f === undefined
        ? undefined
        : { ratio: f.ratio, detail: `${f.eventsPerSecond} vs ${baseline!.eventsPerSecond} events/s` }
    )
  }
  const oneClient = results.ceiling?.configs?.find((c) => c.name === "1 client, pipeline 500")
  const sinkAlo = figure(results.throughput, "sinkAlo")
  ratioTarget(
    "sink at-least-once / redis-benchmark, 1 client pipelining 500",
    0.75,
    oneClient === undefined || sinkAlo === undefined
      ? undefined
      : {
          ratio: sinkAlo.eventsPerSecond / oneClient.xaddPerSecond,
          detail: `${sinkAlo.eventsPerSecond} vs ${oneClient.xaddPerSecond} XADD/s; not in the same rounds`
        }
  )
  const run = figure(results.consumer, "run")
  const consumerBaseline = figure(results.consumer, "baseline")
  if (run === undefined && results.consumer?.todo !== undefined)
    out.push({
      figure: "RedisStreamConsumer.run / its loop",
      target: "≥ 1.10",
      value: results.consumer.todo,
      met: undefined
    })
  else
    ratioTarget(
      "RedisStreamConsumer.run / its XREADGROUP + JSON.parse + XACK loop",
      1.1,
      run === undefined
        ? undefined
        : { ratio: run.ratio, detail: `${run.eventsPerSecond} vs ${consumerBaseline!.eventsPerSecond} events/s` }
    )
  const latencyAt = (rate: number) =>
    results.latency?.results.find((r) => r.rate === rate && r.reader === "XREADGROUP BLOCK" && r.checkpoint === "file")
  const at1000 = latencyAt(1000)
  out.push({
    figure: "end-to-end p50 at 1,000 events/s, file checkpoint",
    target: "< 1 ms",
    value: at1000 === undefined ? "not measured" : `${at1000.p50.toFixed(3)} ms`,
    met: at1000 === undefined ? undefined : at1000.p50 < 1
  })
  for (const [rate, bound] of [
    [1000, 2],
    [10000, 3]
  ] as const) {
    const l = latencyAt(rate)
    out.push({
      figure: `end-to-end p99 at ${rate.toLocaleString("en-US")} events/s, file checkpoint`,
      target: `< ${bound} ms`,
      value: l === undefined ? "not measured" : `${l.p99.toFixed(3)} ms`,
      met: l === undefined ? undefined : l.p99 < bound
    })
  }
  const o = results.outage
  for (const w of o?.wholeProcess?.runs ?? [])
    out.push({
      figure: `peak RSS during a ${o!.outageSeconds} s outage, redflow produce (${o!.wholeProcess!.via}) ${w.nodeOptions || "with Node's defaults"}`,
      target: "< 150 MB",
      value: `${w.rssMB.peakDuringOutage} MB (before it ${w.rssMB.peakBefore} MB)`,
      met: w.rssMB.peakDuringOutage < 150
    })
  out.push({
    figure: `peak RSS during a ${o?.outageSeconds ?? 30} s outage at 10,000 events/s offered, the sink in the bench's process`,
    target: "< 150 MB, and no growth after recovery",
    value:
      o === undefined
        ? "not measured"
        : `${o.rssMB.peakDuringOutageWorst} MB worst of ${o.runs} (median ${o.rssMB.peakDuringOutage}); after recovery ${o.rssMB.afterStart} → ${o.rssMB.afterEnd} MB (worst growth ${o.rssMB.growthAfterWorst} MB)`,
    met:
      o === undefined
        ? undefined
        : o.rssMB.peakDuringOutageWorst < 150 && o.rssMB.growthAfterWorst <= GROWTH_TOLERANCE_MB
  })
  return out
}

/** A Markdown table; `align` has one letter per column, `l` or `r` (default: the first left, the rest right). */
const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>, align?: string): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const left = (i: number) => (align === undefined ? i === 0 : align[i] === "l")
  const line = (cells: ReadonlyArray<string>) =>
    `| ${cells.map((c, i) => (left(i) ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(" | ")} |`
  return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.map(line)].join("\n")
}

const met = (m: boolean | undefined) => (m === undefined ? "—" : m ? "met" : "NOT met")

/** The plain-text report (Markdown tables), as printed by `pnpm bench`. */
export const format = (
  r: Results & { readonly targets: ReadonlyArray<Target>; readonly durationSeconds: number }
): string => {
  const m = r.machine
  const out: Array<string> = []
  out.push(`# Redflow benchmark (${r.mode}), ${r.startedAt}, ${r.durationSeconds} s`)
  out.push("")
  out.push(
    `${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, ${m.os} (${m.kernel}), Node ${m.node}, Redis ${m.redis}, ioredis ${m.ioredis}, effect ${m.effect}; load average at start ${m.loadAverageAtStart.join(" ")}`
  )
  out.push(`Code measured: ${m.revision}`)
  out.push(`Payload: mean encoded event ${r.payload.meanEventBytes} bytes (rows of about 1 KiB, three tables)`)
  if (r.ceiling !== undefined) {
    out.push("", "## Server ceiling (redis-benchmark XADD)")
    if (!r.ceiling.available) out.push("redis-benchmark not found")
    else
      out.push(
        table(
          ["redis-benchmark", "XADD/s"],
          (r.ceiling.configs ?? []).map((c) => [c.name, String(c.xaddPerSecond)])
        )
      )
  }
  const rounds = (title: string, x: (RoundsResult & Loaded) | undefined, note: string) => {
    if (x === undefined) return
    out.push(
      "",
      `## ${title}`,
      `${x.events} events per run, median of ${x.rounds} rounds; ratio = median of per-round ratios; Redis busy = the server's main-thread CPU time (INFO cpu) as a share of the run's wall time; load average ${x.loadAverage}. ${note}`
    )
    out.push(
      table(
        ["contender", "events/s", "ratio", "Redis busy", "per-round ratios"],
        x.figures.map((f) => [
          f.label,
          String(f.eventsPerSecond),
          f.ratio.toFixed(3),
          `${(f.serverBusy * 100).toFixed(0)} %`,
          f.ratios.map((v) => v.toFixed(2)).join(" ")
        ])
      )
    )
  }
  rounds(
    "Publishing throughput",
    r.throughput,
    r.throughput === undefined
      ? ""
      : `One file checkpoint commit alone: median ${r.throughput.checkpointCommitMs.median} ms.`
  )
  if (r.process !== undefined) {
    const p = r.process
    out.push(
      "",
      "## The whole process",
      `\`redflow produce --events ${p.events} --payload-bytes ${p.payloadBytes}\` (${p.via}) timed from spawn to exit against a plain script doing the same work (build, \`JSON.stringify\`, pipelined XADD of 500); ratio = the script's time / redflow's, median of ${p.rounds} rounds; load average ${p.loadAverage}`
    )
    out.push(
      table(
        ["contender", "ms", "events/s", "ratio", "per-round ratios"],
        p.contenders.map((c) => [
          c.contender === "plain" ? "plain script" : `redflow produce ${c.contender}`,
          String(c.medianMs),
          String(c.eventsPerSecond),
          c.ratio.toFixed(3),
          c.perRound.map((v) => v.toFixed(2)).join(" ")
        ])
      )
    )
  }
  rounds("Consuming throughput", r.consumer, r.consumer?.todo ?? "")
  if (r.latency !== undefined) {
    out.push(
      "",
      "## End-to-end latency",
      `${r.latency.sink}; load average ${r.latency.loadAverage}; ${r.latency.seconds} s measured per run after ${r.latency.warmSeconds} s warm-up; ms from the source handing the event over to the reader having it (median of runs; max over runs)`
    )
    out.push(
      table(
        ["rate", "reader", "checkpoint", "p50", "p90", "p99", "max", "from schedule p50/p99", "missing"],
        r.latency.results.map((l) => [
          `${l.rate}/s`,
          l.reader,
          l.checkpoint,
          l.p50.toFixed(3),
          l.p90.toFixed(3),
          l.p99.toFixed(3),
          l.max.toFixed(1),
          `${l.fromSchedule.p50.toFixed(2)} / ${l.fromSchedule.p99.toFixed(2)}`,
          String(l.missing)
        ]),
        "rllrrrrrr"
      )
    )
    if (r.latency.todo !== undefined) out.push(r.latency.todo)
  }
  if (r.outage !== undefined) {
    const o = r.outage
    out.push(
      "",
      "## Outage",
      `${o.outageSeconds} s, ${o.method} (${o.methodWhy}); ${o.rate} events/s offered; median of ${o.runs} runs (worst in brackets); load average ${o.loadAverage}`
    )
    out.push(
      table(
        ["RSS (MB)", "value"],
        [
          ["at start (modules loaded, before the first event)", String(o.rssMB.atStart)],
          ["before the outage", String(o.rssMB.before)],
          ["peak during the outage", `${o.rssMB.peakDuringOutage} (${o.rssMB.peakDuringOutageWorst})`],
          ["rise during the outage over the level before it", String(o.rssMB.riseDuringOutage)],
          ["settled during the outage (median of its second half)", String(o.rssMB.settledDuringOutage)],
          ["peak while catching up", `${o.rssMB.peakCatchUp} (${o.rssMB.peakCatchUpWorst})`],
          ["after recovery: start → end of window", `${o.rssMB.afterStart} → ${o.rssMB.afterEnd}`],
          ["growth after recovery", `${o.rssMB.growthAfter} (${o.rssMB.growthAfterWorst})`],
          ["slope after recovery, MB/min", String(o.rssMB.slopeAfterMBPerMin)],
          ["heap used: peak during the outage", String(o.heapMB.peakDuringOutage)],
          ["heap live after a full GC: at start / at the end", `${o.heapMB.atStart} / ${o.heapMB.liveAtEnd}`],
          ["backlog when Redis came back (events)", String(o.backlogAtRecovery)],
          ["catch-up time (s)", String(o.catchUpSeconds)]
        ]
      )
    )
    for (const run of o.perRun) if (run.sinkError !== undefined) out.push(`sink error: ${run.sinkError}`)
    if (o.wholeProcess !== undefined && o.wholeProcess.runs.length > 0) {
      out.push(
        "",
        `The same outage for \`redflow produce --rate ${o.rate}\` as its own process (${o.wholeProcess.via}), RSS from /proc (MB):`
      )
      out.push(
        table(
          ["node options", "peak before", "peak during the outage", "peak after", "VmHWM"],
          o.wholeProcess.runs.map((w) => [
            w.nodeOptions || "(Node's defaults)",
            String(w.rssMB.peakBefore),
            String(w.rssMB.peakDuringOutage),
            String(w.rssMB.peakAfter),
            String(w.rssMB.highWater)
          ])
        )
      )
    }
  }
  out.push("", "## Targets (issue 16; the p50 from issue 6)")
  out.push(
    table(
      ["figure", "target", "measured", "status"],
      r.targets.map((t) => [t.figure, t.target, t.value, met(t.met)]),
      "llll"
    )
  )
  return out.join("\n")
}
