/**
 * Issue 11, target 3: peak RSS of the pipeline process while a 1,000,000-row transaction passes through (< 300 MB).
 *
 * The pipeline (`redflow run`, exactly-once, file checkpoint) runs as its own process on one table (id int primary
 * key, an md5 text, a numeric, a timestamptz). Once it delivers, one statement inserts the rows in a single
 * transaction; PostgreSQL sends it only at its commit, as one burst. The process's VmRSS is sampled every 100 ms
 * from /proc/<pid>/status until every row is in Redis (XLEN), and its peak is VmHWM, the kernel's own high-water
 * mark of its resident set.
 *
 *   pnpm exec node bench/postgres/memory.ts [--rows 1000000] [--via run|script] [--out FILE]
 *     [--max-old-space-size MB: a diagnostic cap on V8's old generation for the pipeline process]
 *     [--node-flags "--trace-gc …": more Node flags for it] [--log FILE: its whole output]
 *     [--pipeline-args "…": more flags for it, e.g. "--batch-size 1000" with --via script]
 *     [--promoted FILE: what outlived the young generation during the transaction, by allocation site]
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import {
  benchDir,
  describeMachine,
  load,
  log,
  memoryOf,
  numberOption,
  sql,
  spawnPipeline,
  startServers,
  table,
  totalLength,
  untilDelivered,
  value,
  via,
  viaLabel,
  waitUntil,
  writeSection
} from "./support.ts"

const rows = numberOption("--rows", 1_000_000)
const pipelineVia = via()
// A diagnostic: a cap on V8's old generation. A run that passes under a small cap holds little live; the rest of
// its RSS is V8 sizing its heap, not something the pipeline keeps.
const maxOldSpace = value("--max-old-space-size")
// Diagnostics: more Node flags for the pipeline process (e.g. "--trace-gc"), and a file for its whole output.
const nodeFlags = [
  ...(maxOldSpace === undefined ? [] : [`--max-old-space-size=${maxOldSpace}`]),
  ...(value("--node-flags")
    ?.split(" ")
    .filter((f) => f !== "") ?? [])
]
const logFile = value("--log")
// A diagnostic: which allocation sites produced what outlived the young generation during the transaction (V8's
// sampling heap profiler through promotedSampler.ts), written to this file and summarized in the section.
const promoted = value("--promoted")
if (promoted !== undefined) {
  nodeFlags.push("--import", Path.join(benchDir, "promotedSampler.ts"))
  process.env.REDFLOW_PROMOTED_PROFILE = Path.resolve(promoted)
}

interface SamplingNode {
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly selfSize: number
  readonly children?: ReadonlyArray<SamplingNode>
}

/** The sampled bytes that outlived a young collection, by allocating function and its caller, largest first. */
const promotedSites = (file: string): Array<readonly [site: string, mb: number, share: number]> => {
  const profile = JSON.parse(Fs.readFileSync(file, "utf8")) as { readonly head: SamplingNode }
  const frame = (n: SamplingNode) =>
    `${n.callFrame.functionName || "(anonymous)"} ${n.callFrame.url.replace(/^.*node_modules\/(\.pnpm\/[^/]+\/node_modules\/)?/, "").replace(/^file:\/\/\/?.*?\/(packages|bench)\//, "$1/")}:${n.callFrame.lineNumber + 1}`
  const bytes = new Map<string, number>()
  let total = 0
  const walk = (n: SamplingNode, caller: string | undefined) => {
    const here = frame(n)
    if (n.selfSize > 0) {
      const site = caller === undefined ? here : `${here} < ${caller}`
      bytes.set(site, (bytes.get(site) ?? 0) + n.selfSize)
      total += n.selfSize
    }
    for (const c of n.children ?? []) walk(c, here)
  }
  walk(profile.head, undefined)
  return [...bytes]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 8)
    .map(([site, b]) => [site, b / 1024 / 1024, b / total] as const)
}
const STREAM = "bench.memory.big"
const TARGET_MB = 300

const main = async () => {
  const servers = await startServers()
  try {
    const machine = await describeMachine(servers)
    log("setup", machine)
    const pg = servers.pg
    await sql(
      pg,
      "CREATE TABLE big (id int PRIMARY KEY, name text NOT NULL, amount numeric(12,2), created timestamptz)"
    )
    const child = spawnPipeline(
      servers,
      pipelineVia,
      {
        tables: ["public.big"],
        stream: "bench.memory.${source.table}",
        pipeline: "memory",
        slot: "memory",
        publication: "memory",
        guarantee: "exactly-once",
        snapshot: "never"
      },
      { nodeFlags, logFile, extraArgs: (value("--pipeline-args") ?? "").split(" ").filter((a) => a !== "") }
    )
    try {
      // Ready once a row written now arrives; the warm-up rows have negative ids.
      let warm = 0
      await waitUntil(
        async () => {
          warm++
          await sql(pg, `INSERT INTO big VALUES (${-warm}, 'warm-up', 0, now())`)
          await new Promise((resolve) => setTimeout(resolve, 250))
          return (await totalLength(servers.client, [STREAM])) > 0 ? true : undefined
        },
        { what: `${viaLabel(pipelineVia)} to start`, timeoutMs: 60_000, abort: child.exited, detail: child.output }
      )
      await new Promise((resolve) => setTimeout(resolve, 1000))
      const before = await totalLength(servers.client, [STREAM])
      const idle = memoryOf(child.pid)!
      log(
        "memory",
        `${viaLabel(pipelineVia)} delivering (pid ${child.pid}): RSS ${idle.rssMB.toFixed(0)} MB, peak so far ${idle.peakMB.toFixed(0)} MB`
      )

      const samples: Array<{ readonly at: number; readonly rssMB: number }> = []
      const started = performance.now()
      const sampler = setInterval(() => {
        const m = memoryOf(child.pid)
        if (m !== undefined) samples.push({ at: (performance.now() - started) / 1000, rssMB: m.rssMB })
      }, 100)
      const loadBefore = load()
      if (promoted !== undefined) process.kill(child.pid, "SIGUSR2")
      log("memory", `INSERT of ${rows} rows in one transaction`)
      await sql(pg, `INSERT INTO big SELECT g, md5(g::text), g * 0.01, now() FROM generate_series(1, ${rows}) g`)
      const committedAt = performance.now()
      log("memory", `committed after ${((committedAt - started) / 1000).toFixed(1)} s; waiting for ${rows} entries`)
      const delivered = await untilDelivered(servers.client, [STREAM], before + rows, {
        what: `${rows} rows through ${viaLabel(pipelineVia)}`,
        timeoutMs: 170_000,
        abort: child.exited,
        detail: child.output
      })
      clearInterval(sampler)
      const end = memoryOf(child.pid)!
      const loadAfter = load()
      const passSeconds = (delivered.doneAt - committedAt) / 1000
      const streamingSeconds = (delivered.doneAt - delivered.firstAt) / 1000
      const peakSampled = Math.max(...samples.map((s) => s.rssMB))
      log(
        "memory",
        `delivered ${passSeconds.toFixed(1)} s after the commit (${Math.round(rows / streamingSeconds)} rows/s once flowing); ` +
          `peak RSS (VmHWM) ${end.peakMB.toFixed(0)} MB, sampled max ${peakSampled.toFixed(0)} MB, RSS at the end ${end.rssMB.toFixed(0)} MB`
      )
      const how = await child.stop()
      if (how !== "exit 0") log("memory", `${viaLabel(pipelineVia)} stopped with ${how}`)
      const sites = promoted === undefined || !Fs.existsSync(promoted) ? undefined : promotedSites(promoted)

      // RSS over the run, at a few points in time.
      const at = (fraction: number) => {
        const t = samples.at(-1)!.at * fraction
        return samples.find((s) => s.at >= t) ?? samples.at(-1)!
      }
      const profile = [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1].map((f) => {
        const s = at(f)
        return [`${s.at.toFixed(1)} s`, Math.round(s.rssMB)]
      })
      const met = end.peakMB < TARGET_MB
      const markdown = `
### Peak RSS with a ${rows.toLocaleString("en-US")}-row transaction (target 3)

${machine}.

${viaLabel(pipelineVia)}${nodeFlags.length === 0 ? "" : ` with ${nodeFlags.join(" ")}`}, exactly-once, file checkpoint, one table (int key, md5 text, numeric, timestamptz); one
\`INSERT … SELECT … FROM generate_series\` of ${rows.toLocaleString("en-US")} rows, sent by PostgreSQL as one transaction at its commit;
load average ${loadBefore} → ${loadAfter}.

**Peak RSS (VmHWM) of the pipeline process: ${end.peakMB.toFixed(0)} MB (target < ${TARGET_MB} MB: ${met ? "met" : "missed"}).**

| figure | value |
| --- | ---: |
| RSS delivering, before the transaction | ${idle.rssMB.toFixed(0)} MB |
| peak RSS (VmHWM) | ${end.peakMB.toFixed(0)} MB |
| highest 100 ms sample of VmRSS | ${peakSampled.toFixed(0)} MB |
| RSS once every row was in Redis | ${end.rssMB.toFixed(0)} MB |
| INSERT until committed | ${((committedAt - started) / 1000).toFixed(1)} s |
| commit until the last row was in Redis | ${passSeconds.toFixed(1)} s |
| rows/s from the first row in Redis to the last | ${Math.round(rows / streamingSeconds)} |

VmRSS over the run (from the INSERT's start):

${table(["time", "VmRSS MB"], profile)}

${
  sites === undefined
    ? ""
    : `What outlived the young generation during the transaction (V8's sampling heap profiler, \`--promoted ${promoted}\`;
sampled bytes by allocating function < its caller):

${table(
  ["site", "MB sampled", "share"],
  sites.map(([site, mb, share]) => [site, Number(mb.toFixed(1)), `${(share * 100).toFixed(1)} %`])
)}

`
}Reproduce: \`pnpm exec node bench/postgres/memory.ts\` (about ${Math.round((passSeconds + 20) / 10) * 10} s).
`
      const file = writeSection("memory", markdown)
      process.stdout.write(`${markdown}\n`)
      log("done", `section written to ${file}`)
    } finally {
      await child.stop()
    }
  } finally {
    await servers.stop()
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
    process.exit(1)
  }
)
