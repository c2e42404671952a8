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
  /** Median over the rounds of the server's command time (INFO commandstats) / the run's wall time. */
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
  readonly perRun: ReadonlyArray<{ readonly committed: number; readonly entries: number; readonly sinkError?: string }>
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

/** The targets, judged against the results. */
export const targets = (results: Results): Array<Target> => {
  const out: Array<Target> = []
  const figure = (r: RoundsResult | undefined, key: string) => r?.figures.find((f) => f.key === key)
  for (const [key, name] of [
    ["sinkAlo", "sink at-least-once throughput / baseline"],
    ["sinkEo", "sink exactly-once throughput / baseline"]
  ] as const) {
    const f = figure(results.throughput, key)
    out.push({
      figure: name,
      target: "≥ 1.25",
      value:
        f === undefined
          ? "not measured"
          : `${f.ratio.toFixed(2)} (${f.eventsPerSecond} vs ${figure(results.throughput, "baseline")!.eventsPerSecond} events/s)`,
      met: f === undefined ? undefined : f.ratio >= 1.25
    })
  }
  const run = figure(results.consumer, "run")
  out.push({
    figure: "consumer throughput / consumer baseline",
    target: "≥ 0.90",
    value:
      run === undefined
        ? (results.consumer?.todo ?? "not measured")
        : `${run.ratio.toFixed(2)} (${run.eventsPerSecond} vs ${figure(results.consumer, "baseline")!.eventsPerSecond} events/s)`,
    met: run === undefined ? undefined : run.ratio >= 0.9
  })
  const at1000 = results.latency?.results.find(
    (r) => r.rate === 1000 && r.reader === "XREADGROUP BLOCK" && r.checkpoint === "file"
  )
  out.push({
    figure: "end-to-end p50 at 1,000 events/s",
    target: "< 1 ms",
    value: at1000 === undefined ? "not measured" : `${at1000.p50.toFixed(3)} ms`,
    met: at1000 === undefined ? undefined : at1000.p50 < 1
  })
  out.push({
    figure: "end-to-end p99 at 1,000 events/s",
    target: "< 5 ms",
    value: at1000 === undefined ? "not measured" : `${at1000.p99.toFixed(3)} ms`,
    met: at1000 === undefined ? undefined : at1000.p99 < 5
  })
  const o = results.outage
  out.push({
    figure: `peak RSS during a ${o?.outageSeconds ?? 30} s outage at 10,000 events/s offered`,
    target: "< 200 MB, and no growth after recovery",
    value:
      o === undefined
        ? "not measured"
        : `${o.rssMB.peakDuringOutageWorst} MB worst of ${o.runs} (median ${o.rssMB.peakDuringOutage}); after recovery ${o.rssMB.afterStart} → ${o.rssMB.afterEnd} MB (worst growth ${o.rssMB.growthAfterWorst} MB)`,
    met:
      o === undefined
        ? undefined
        : o.rssMB.peakDuringOutageWorst < 200 && o.rssMB.growthAfterWorst <= GROWTH_TOLERANCE_MB
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
      `${x.events} events per run, median of ${x.rounds} rounds; ratio = median of per-round ratios; Redis busy = the server's own command time (INFO commandstats) as a share of the run's wall time; load average ${x.loadAverage}. ${note}`
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
  }
  out.push("", "## Targets (issue 6)")
  out.push(
    table(
      ["figure", "target", "measured", "status"],
      r.targets.map((t) => [t.figure, t.target, t.value, met(t.met)]),
      "llll"
    )
  )
  return out.join("\n")
}
