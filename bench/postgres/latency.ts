/**
 * Issue 11, target 2: commit-to-consumer latency at 1,000 transactions/s (p50 < 5 ms, p99 < 25 ms).
 *
 * The pipeline (`redflow run`, exactly-once, file checkpoint) runs as its own process on one table, and so, in
 * alternating runs, does the hand-written loop of `loop.ts` with its pipeline sent at every commit (what the
 * machine gives a minimal client: the WAL flush, decoding and one XADD round trip). The writer is
 * pgbench (`-R 1000`, paced on its Poisson schedule, 4 connections, `synchronous_commit` on as by default): each
 * transaction is one INSERT carrying `clock_timestamp()` in microseconds, taken inside the transaction just before
 * its commit. The consumer is a blocking `XREAD` loop on its own connection in this process (not the pipeline's),
 * which notes the wall-clock time each entry arrives: latency = arrival − the row's timestamp, so it includes the
 * commit itself (the WAL flush), decoding, the sink's write and checkpoint, and the read. The same figure from the
 * event's commit time (`source.ts_ms`, millisecond resolution) is shown beside it. Several runs of a few seconds of
 * warm-up and a measured window; medians of the percentiles, the max over runs.
 *
 *   pnpm exec node bench/postgres/latency.ts [--runs 3] [--seconds 10] [--rate 1000] [--via run|script] [--out FILE]
 *     [--diagnose: also at-least-once, and exactly-once with the checkpoint in memory]
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"
import {
  benchDir,
  connect,
  deleteMatching,
  describeMachine,
  field,
  flag,
  load,
  log,
  median,
  numberOption,
  parseRead,
  runBinary,
  type Servers,
  spawnPipeline,
  sql,
  startServers,
  summarize,
  table,
  totalLength,
  via,
  viaLabel,
  waitUntil,
  writeSection,
  type LatencySummary
} from "./support.ts"

const runs = numberOption("--runs", 3)
const seconds = numberOption("--seconds", 10)
const rate = numberOption("--rate", 1000)
const warmSeconds = 2
const pipelineVia = via()
const diagnose = flag("--diagnose")

/** Wall-clock microseconds now, at sub-millisecond resolution (the same clock as the server's clock_timestamp()). */
const nowMicros = () => (performance.timeOrigin + performance.now()) * 1000

interface Sample {
  readonly rowMicros: number
  /** The event's commit time (Redflow's envelope has it; the hand-written loop's entries do not). */
  readonly commitMillis: number | undefined
  readonly arrivedMicros: number
}

/** A blocking XREAD loop on its own connection: every entry after `from`, with the time it arrived. */
const startReader = async (url: string, stream: string, from: string) => {
  const client = await connect(url)
  const samples: Array<Sample> = []
  let stopped = false
  let last = from
  const loop = (async () => {
    while (!stopped) {
      const reply = parseRead(await client.call("XREAD", "COUNT", 1000, "BLOCK", 200, "STREAMS", stream, last))
      const arrivedMicros = nowMicros()
      for (const [, entries] of reply) {
        for (const [id, flat] of entries) {
          last = id
          const event = JSON.parse(field(flat, "event") ?? "null") as {
            after: { t_us: string | number }
            source?: { ts_ms: number }
          } | null
          if (event === null) continue
          samples.push({ rowMicros: Number(event.after.t_us), commitMillis: event.source?.ts_ms, arrivedMicros })
        }
      }
    }
  })()
  return {
    samples,
    stop: async () => {
      stopped = true
      await loop
      client.disconnect()
    }
  }
}

interface RunResult {
  readonly fromRow: LatencySummary
  readonly fromCommit: LatencySummary
  readonly offered: number
  readonly pgbench: {
    readonly tps: number
    readonly latencyMs: number
    readonly lagMs: number
    readonly lagMaxMs: number
  }
}

interface Contender {
  readonly key: string
  readonly label: string
  /** Starts the contender's process on its own new slot, delivering `lat` to `stream`. */
  readonly start: (servers: Servers, run: number, stream: string) => Promise<Started>
}

interface Started {
  readonly pid: number
  readonly exited: Promise<string>
  readonly output: () => string
  readonly stop: () => Promise<string>
}

const redflow = (
  key: string,
  label: string,
  guarantee: "exactly-once" | "at-least-once",
  checkpoint: "file" | "memory"
): Contender => ({
  key,
  label: `${viaLabel(pipelineVia)}, ${label}`,
  start: async (servers, run, stream) =>
    spawnPipeline(servers, pipelineVia, {
      tables: ["public.lat"],
      stream,
      pipeline: `${key}_${run}`,
      slot: `${key}_${run}`,
      publication: "latency",
      guarantee,
      snapshot: "never",
      checkpoint
    })
})

const contenders: ReadonlyArray<Contender> = [
  redflow("redflow", "exactly-once, file checkpoint", "exactly-once", "file"),
  {
    key: "loop",
    label: "hand-written loop (loop.ts), the pipeline sent at every commit",
    start: async (servers, run, stream) => {
      const slot = `loop_${run}`
      await sql(servers.pg, `SELECT pg_create_logical_replication_slot('${slot}', 'pgoutput')`)
      const options = {
        url: servers.pg.url,
        slot,
        publication: "latency",
        redis: servers.redis.url,
        prefix: stream.slice(0, -".lat".length),
        batch: 1
      }
      const child = ChildProcess.spawn(process.execPath, [Path.join(benchDir, "loop.ts"), JSON.stringify(options)], {
        stdio: ["ignore", "inherit", "pipe"]
      })
      let output = ""
      child.stderr.on("data", (c: Buffer) => (output = (output + c.toString()).slice(-8192)))
      const exited = new Promise<string>((resolve) =>
        child.once("exit", (code, sig) => resolve(code !== null ? `exit ${code}` : `signal ${sig}`))
      )
      return {
        pid: child.pid!,
        exited,
        output: () => output,
        stop: async () => {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM")
          return exited
        }
      }
    }
  },
  // --diagnose: what the guarantee and the checkpoint's fsync cost in latency.
  ...(diagnose
    ? [
        redflow("alo", "(diagnostic) at-least-once, file checkpoint", "at-least-once", "file"),
        redflow("eomem", "(diagnostic) exactly-once, memory checkpoint", "exactly-once", "memory")
      ]
    : [])
]

/** One run: the contender started on a fresh slot, pgbench at the rate, every row read back. */
const measure = async (servers: Servers, contender: Contender, run: number, script: string): Promise<RunResult> => {
  const pg = servers.pg
  const stream = `bench.latency.${contender.key}.${run}.lat`
  const child = await contender.start(servers, run, stream)
  try {
    // Ready once a row written now arrives (rows written before the slot exists are not in it).
    await waitUntil(
      async () => {
        await sql(pg, "INSERT INTO lat (t_us) VALUES (0)")
        await new Promise((resolve) => setTimeout(resolve, 250))
        return (await totalLength(servers.client, [stream])) > 0 ? true : undefined
      },
      { what: `${contender.label} to start`, timeoutMs: 60_000, abort: child.exited, detail: child.output }
    )
    // Let the last start-up rows land before the reader takes the stream's last id.
    await new Promise((resolve) => setTimeout(resolve, 1000))
    const lastId =
      ((await servers.client.xrevrange(stream, "+", "-", "COUNT", 1)) as Array<[string, unknown]>)[0]?.[0] ?? "0-0"
    const before = Number(await sql(pg, "SELECT coalesce(max(id), 0) FROM lat"))
    const reader = await startReader(servers.redis.url, stream, lastId)
    const startedMicros = nowMicros()
    const { stdout } = await runBinary(pg, "pgbench", [
      ...["-n", "-c", "4", "-j", "2", "-R", String(rate), "-T", String(warmSeconds + seconds)],
      ...["-f", script, pg.url]
    ])
    const written = Number(await sql(pg, `SELECT count(*) FROM lat WHERE id > ${before}`))
    await waitUntil(async () => (reader.samples.length >= written ? true : undefined), {
      what: `the reader to have all ${written} rows of run ${run + 1}`,
      timeoutMs: 30_000,
      detail: () => `it has ${reader.samples.length}\n${child.output()}`
    })
    await reader.stop()
    if (reader.samples.length !== written) {
      throw new Error(`run ${run + 1}: ${reader.samples.length} entries read, ${written} rows written`)
    }
    const measured = reader.samples.filter((s) => s.rowMicros >= startedMicros + warmSeconds * 1e6)
    const num = (re: RegExp) => Number(re.exec(stdout)?.[1] ?? NaN)
    return {
      fromRow: summarize(measured.map((s) => (s.arrivedMicros - s.rowMicros) / 1000)),
      fromCommit: summarize(
        measured.filter((s) => s.commitMillis !== undefined).map((s) => s.arrivedMicros / 1000 - s.commitMillis!)
      ),
      offered: written,
      pgbench: {
        tps: num(/tps = ([\d.]+)/),
        latencyMs: num(/latency average = ([\d.]+) ms/),
        lagMs: num(/schedule lag: avg ([\d.]+)/),
        lagMaxMs: num(/schedule lag: avg [\d.]+ \(max ([\d.]+)/)
      }
    }
  } finally {
    const how = await child.stop()
    if (how !== "exit 0") log("latency", `${contender.label} stopped with ${how}`)
    await deleteMatching(servers.client, `*${stream}*`)
    await sql(pg, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active`)
  }
}

const main = async () => {
  const servers = await startServers()
  try {
    const machine = await describeMachine(servers)
    log("setup", machine)
    const pg = servers.pg
    await sql(pg, "CREATE TABLE lat (id bigserial PRIMARY KEY, t_us bigint NOT NULL)")
    await sql(pg, "CREATE PUBLICATION latency FOR TABLE lat")
    const script = Path.join(servers.dir, "insert.sql")
    Fs.writeFileSync(
      script,
      "INSERT INTO lat (t_us) VALUES ((extract(epoch FROM clock_timestamp()) * 1000000)::bigint);\n"
    )
    const loadBefore = load()
    const results: Record<string, Array<RunResult>> = Object.fromEntries(contenders.map((c) => [c.key, []]))
    for (let i = 0; i < runs; i++) {
      const order = i % 2 === 0 ? contenders : [...contenders].reverse()
      for (const c of order) {
        const result = await measure(servers, c, i, script)
        results[c.key]!.push(result)
        log(
          "latency",
          `run ${i + 1}/${runs} ${c.key}: ${result.fromRow.count} rows measured at ${result.pgbench.tps.toFixed(0)} tx/s; ` +
            `p50 ${result.fromRow.p50.toFixed(2)} ms, p90 ${result.fromRow.p90.toFixed(2)}, p99 ${result.fromRow.p99.toFixed(2)}, ` +
            `max ${result.fromRow.max.toFixed(1)} (pgbench: transaction ${result.pgbench.latencyMs} ms, schedule lag ${result.pgbench.lagMs} ms)`
        )
      }
    }
    const loadAfter = load()

    const med = (key: string, f: (r: RunResult) => number) => median(results[key]!.map(f))
    const row = (label: string, key: string, of: (r: RunResult) => LatencySummary) => [
      label,
      med(key, (r) => of(r).p50).toFixed(2),
      med(key, (r) => of(r).p90).toFixed(2),
      med(key, (r) => of(r).p99).toFixed(2),
      Math.max(...results[key]!.map((r) => of(r).max)).toFixed(1),
      results[key]!.map((r) => `${of(r).p50.toFixed(2)}/${of(r).p99.toFixed(2)}`).join(" ")
    ]
    const p50 = med("redflow", (r) => r.fromRow.p50)
    const p99 = med("redflow", (r) => r.fromRow.p99)
    const verdict = (v: number, target: number) =>
      `${v.toFixed(2)} ms (target < ${target} ms: ${v < target ? "met" : "missed"})`
    const all = Object.values(results).flat()
    const short = all.filter((r) => !(r.pgbench.tps >= rate * 0.95))
    const markdown = `
### Commit-to-consumer latency at ${rate.toLocaleString("en-US")} transactions/s (target 2)

${machine}.

Writer: pgbench \`-R ${rate} -c 4 -j 2\`, single-row INSERT transactions carrying \`clock_timestamp()\` in µs (taken inside the
transaction, just before its commit), \`synchronous_commit\` on; consumer: a blocking \`XREAD\` loop in another process than
the pipeline, noting when each entry arrives. Each run starts the contender on a fresh slot, warms up ${warmSeconds} s and measures
${seconds} s (${Math.round(med("redflow", (r) => r.fromRow.count))} rows); ${runs} runs per contender, alternating; medians of the
runs, max over the runs; load average ${loadBefore} → ${loadAfter}.

**${viaLabel(pipelineVia)}: p50 ${verdict(p50, 5)}; p99 ${verdict(p99, 25)}.**
${
  short.length === 0
    ? ""
    : `\n**Not a valid measurement:** the writer did not reach ${rate} tx/s in ${short.length} of ${all.length} runs ` +
      `(${short.map((r) => r.pgbench.tps.toFixed(0)).join(", ")} tx/s): the machine was too busy to offer the load.\n`
}

${table(
  ["contender, measured from", "p50 ms", "p90 ms", "p99 ms", "max ms", "per run p50/p99"],
  [
    row(`${contenders[0]!.label}, from the row's timestamp`, "redflow", (r) => r.fromRow),
    row(`${contenders[0]!.label}, from the commit time (source.ts_ms, ms resolution)`, "redflow", (r) => r.fromCommit),
    ...contenders.slice(1).map((c) => row(`${c.label}, from the row's timestamp`, c.key, (r) => r.fromRow))
  ]
)}

The writer's own figures (pgbench, median of all runs): ${median(all.map((r) => r.pgbench.tps)).toFixed(0)} tx/s achieved; a
transaction took ${median(all.map((r) => r.pgbench.latencyMs)).toFixed(2)} ms on average as pgbench saw it, its commit's WAL flush
included (the WAL sender can decode a row only once that flush is done). Schedule lag ${median(all.map((r) => r.pgbench.lagMs)).toFixed(2)} ms
on average, max ${Math.max(...all.map((r) => r.pgbench.lagMaxMs)).toFixed(1)} ms: how late the writer itself ran on this machine.
The hand-written loop, on the same machine in alternating runs, is what the machine gives a minimal client.

Reproduce: \`pnpm exec node bench/postgres/latency.ts\` (about ${Math.round((contenders.length * runs * (warmSeconds + seconds + 5)) / 10) * 10} s).
`
    const file = writeSection("latency", markdown)
    process.stdout.write(`${markdown}\n`)
    log("done", `section written to ${file}`)
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
