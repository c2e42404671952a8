/**
 * Issue 11, target 1: rows per second from a pgbench write load through to Redis, `redflow run` in exactly-once,
 * against (a) `pg_recvlogical` decoding the same WAL to /dev/null (the server's ceiling) and (b) the hand-written
 * loop of `loop.ts` (pg-logical-replication into an ioredis pipeline of XADDs).
 *
 * Method: `pgbench -i`, a primary key on pgbench_history, one publication of the four tables, and a slot per
 * contender and round, all created before the load; then the load (`pgbench -n -c 4 -j 2 -t N/4`, the default
 * TPC-B-like script: 3 UPDATEs and 1 INSERT per transaction, `synchronous_commit=off` so it is quick to write) and a
 * marker transaction after it (one more row). A warm-up pass of pg_recvlogical reads the WAL once into the page
 * cache. Then, in each round (order alternating: forwards, backwards, ...), each contender decodes the whole load
 * from its own slot as a fresh process: pg_recvlogical until it exits at the end LSN (`-E`), the Redis ones until
 * the streams' XLEN adds up to every changed row. Figures: rows / (done − spawn) ("whole process", what a user
 * runs, start-up included) and rows / (done − first row in Redis) ("streaming"). Ratios are taken per round, then
 * the median of the rounds.
 *
 *   pnpm bench:postgres                   (all three benches; this one: pnpm exec node bench/postgres/throughput.ts)
 *   options: --transactions N (default 40000: 160,001 rows), --rounds N (default 3), --via run|script,
 *            --profile (CPU profiles of the Redflow process, to bench/results/postgres-profiles-*), --out FILE
 */
import * as ChildProcess from "node:child_process"
import * as Path from "node:path"
import {
  benchDir,
  cpuSecondsOf,
  currentLsn,
  deleteMatching,
  describeMachine,
  flag,
  load,
  log,
  median,
  numberOption,
  redisCpuSeconds,
  runBinary,
  type Servers,
  spawnPipeline,
  sql,
  startServers,
  table,
  untilDelivered,
  via,
  viaLabel,
  walSenderOf,
  writeSection
} from "./support.ts"

const transactions = Math.round(numberOption("--transactions", 40_000) / 4) * 4
const rounds = numberOption("--rounds", 3)
const pipelineVia = via()
const profile = flag("--profile")
const TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"] as const
const PUBLICATION = "bench"
const TIMEOUT_MS = 120_000

interface Run {
  readonly seconds: number
  /** Seconds from the first row in Redis to the last (the Redis contenders). */
  readonly streamingSeconds?: number
  /** Seconds from spawn to the first row in Redis. */
  readonly startupSeconds?: number
  readonly cpu?: Cpu
}

interface Contender {
  readonly key: "recvlogical" | "redflow" | "loop"
  readonly label: string
  readonly run: (servers: Servers, round: number, rows: number, end: string) => Promise<Run>
}

const streamsOf = (prefix: string) => TABLES.map((t) => `${prefix}.${t}`)

/** Mean bytes of the `event` field over the first entries of each stream: what each contender writes per row. */
const meanEventBytes = async (servers: Servers, prefix: string): Promise<number> => {
  let bytes = 0
  let n = 0
  for (const stream of streamsOf(prefix)) {
    const entries = (await servers.client.xrange(stream, "-", "+", "COUNT", 500)) as Array<[string, Array<string>]>
    for (const [, fields] of entries) {
      const i = fields.indexOf("event")
      if (i >= 0) {
        bytes += Buffer.byteLength(fields[i + 1]!)
        n++
      }
    }
  }
  return n === 0 ? 0 : Math.round(bytes / n)
}

const eventBytes: Record<string, number> = {}
const profileDir = profile
  ? Path.join(benchDir, "..", "results", `postgres-profiles-${new Date().toISOString().replace(/[:.]/g, "-")}`)
  : undefined

/** CPU seconds used for one contender's whole run: its own process, the WAL sender decoding for it, Redis. */
interface Cpu {
  readonly process: number
  /** Its process from the first row in Redis to the last, scaled to all rows (start-up left out). */
  readonly processStreaming: number
  readonly walSender: number
  readonly redis: number
}

/**
 * Waits until a Redis contender (a process already spawned at `startedAt`) has delivered every row to the streams
 * under `prefix`, and reads the CPU it, its WAL sender and Redis used.
 */
const measure = async (
  servers: Servers,
  what: string,
  child: {
    readonly pid: number
    readonly startedAt: number
    readonly exited: Promise<string>
    readonly output: () => string
  },
  slot: string,
  prefix: string,
  rows: number,
  key: string
): Promise<Run> => {
  const redisBefore = await redisCpuSeconds(servers.client)
  let processAtFirst = NaN
  const d = await untilDelivered(servers.client, streamsOf(prefix), rows, {
    what,
    timeoutMs: TIMEOUT_MS,
    abort: child.exited,
    detail: child.output,
    onFirst: () => {
      processAtFirst = cpuSecondsOf(child.pid) ?? NaN
    }
  })
  const walSender = await walSenderOf(servers.pg, slot)
  const processAtEnd = cpuSecondsOf(child.pid) ?? NaN
  const cpu: Cpu = {
    process: processAtEnd,
    processStreaming: ((processAtEnd - processAtFirst) * rows) / (rows - d.firstCount),
    walSender: walSender === undefined ? NaN : (cpuSecondsOf(walSender) ?? NaN),
    redis: (await redisCpuSeconds(servers.client)) - redisBefore
  }
  eventBytes[key] ??= await meanEventBytes(servers, prefix)
  return {
    seconds: (d.doneAt - child.startedAt) / 1000,
    streamingSeconds: ((d.doneAt - d.firstAt) / 1000) * (rows / (rows - d.firstCount)),
    startupSeconds: (d.firstAt - child.startedAt) / 1000,
    cpu
  }
}

const contenders: ReadonlyArray<Contender> = [
  {
    key: "recvlogical",
    label: "pg_recvlogical to /dev/null (ceiling)",
    run: async (servers, r, _rows, end) => {
      const started = performance.now()
      await runBinary(servers.pg, "pg_recvlogical", [
        ...["-d", servers.pg.url, "--slot", `recv_${r}`, "--start", "-P", "pgoutput", "-o", "proto_version=1"],
        ...["-o", `publication_names=${PUBLICATION}`, "-E", end, "--no-loop", "-f", "/dev/null"]
      ])
      return { seconds: (performance.now() - started) / 1000 }
    }
  },
  {
    key: "redflow",
    label: `${viaLabel(pipelineVia)}, exactly-once, file checkpoint`,
    run: async (servers, r, rows) => {
      const prefix = `bench.r${r}.redflow`
      const child = spawnPipeline(
        servers,
        pipelineVia,
        {
          tables: TABLES.map((t) => `public.${t}`),
          stream: `${prefix}.\${source.table}`,
          pipeline: `redflow_${r}`,
          slot: `redflow_${r}`,
          publication: PUBLICATION,
          guarantee: "exactly-once",
          snapshot: "never"
        },
        { cpuProfDir: profileDir }
      )
      try {
        return await measure(
          servers,
          `${viaLabel(pipelineVia)} round ${r}`,
          child,
          `redflow_${r}`,
          prefix,
          rows,
          "redflow"
        )
      } finally {
        const how = await child.stop()
        if (how !== "exit 0") log("throughput", `${viaLabel(pipelineVia)} round ${r} stopped with ${how}`)
        await deleteMatching(servers.client, `*${prefix}*`)
      }
    }
  },
  {
    key: "loop",
    label: "hand-written loop: pg-logical-replication + ioredis pipeline (500)",
    run: async (servers, r, rows) => {
      const prefix = `bench.r${r}.loop`
      const options = {
        url: servers.pg.url,
        slot: `loop_${r}`,
        publication: PUBLICATION,
        redis: servers.redis.url,
        prefix,
        batch: 500
      }
      const startedAt = performance.now()
      const child = ChildProcess.spawn(process.execPath, [Path.join(benchDir, "loop.ts"), JSON.stringify(options)], {
        stdio: ["ignore", "inherit", "pipe"]
      })
      let output = ""
      child.stderr.on("data", (c: Buffer) => (output = (output + c.toString()).slice(-8192)))
      const exited = new Promise<string>((resolve) => child.once("exit", (code, sig) => resolve(`${code ?? sig}`)))
      try {
        const proc = { pid: child.pid!, startedAt, exited, output: () => output }
        return await measure(servers, `loop round ${r}`, proc, `loop_${r}`, prefix, rows, "loop")
      } finally {
        child.kill("SIGTERM")
        await exited
        await deleteMatching(servers.client, `*${prefix}*`)
      }
    }
  }
]

const main = async () => {
  const servers = await startServers()
  try {
    const machine = await describeMachine(servers)
    log("setup", machine)
    const pg = servers.pg
    await runBinary(pg, "pgbench", ["-i", "-q", "-s", "1", pg.url])
    await sql(pg, "ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY")
    await sql(pg, `CREATE PUBLICATION ${PUBLICATION} FOR TABLE ${TABLES.join(", ")}`)
    const slots = [
      "warm",
      ...Array.from({ length: rounds }, (_, i) => [`recv_${i}`, `redflow_${i}`, `loop_${i}`]).flat()
    ]
    for (const slot of slots) await sql(pg, `SELECT pg_create_logical_replication_slot('${slot}', 'pgoutput')`)

    const start = await currentLsn(pg)
    const loadBefore = load()
    const loadStarted = performance.now()
    log("load", `pgbench -n -c 4 -j 2 -t ${transactions / 4} (${transactions} transactions)`)
    await runBinary(pg, "pgbench", ["-n", "-c", "4", "-j", "2", "-t", String(transactions / 4), pg.url], {
      PGOPTIONS: "-c synchronous_commit=off"
    })
    const loadSeconds = (performance.now() - loadStarted) / 1000
    const endLsn = await currentLsn(pg)
    const end = `${(endLsn >> 32n).toString(16).toUpperCase()}/${(endLsn & 0xffffffffn).toString(16).toUpperCase()}`
    // The marker: a transaction after the end LSN, so pg_recvlogical sees a record past it and stops.
    await sql(pg, "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (0, 0, 0, 0, now())")
    const history = Number(await sql(pg, "SELECT count(*) FROM pgbench_history"))
    if (history !== transactions + 1)
      throw new Error(`pgbench_history has ${history} rows, expected ${transactions + 1}`)
    const rows = 4 * transactions + 1
    const walMB = Number(endLsn - start) / 1024 ** 2
    log(
      "load",
      `${transactions} transactions, ${rows} changed rows, ${walMB.toFixed(0)} MB of WAL in ${loadSeconds.toFixed(1)} s`
    )

    {
      const started = performance.now()
      await runBinary(pg, "pg_recvlogical", [
        ...["-d", pg.url, "--slot", "warm", "--start", "-o", "proto_version=1"],
        ...["-o", `publication_names=${PUBLICATION}`, "-E", end, "--no-loop", "-f", "/dev/null"]
      ])
      log("warm-up", `pg_recvlogical read the WAL once in ${((performance.now() - started) / 1000).toFixed(2)} s`)
    }

    const benchLoadBefore = load()
    const perRound: Array<Record<string, Run>> = []
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? contenders : [...contenders].reverse()
      const row: Record<string, Run> = {}
      for (const c of order) {
        const result = await c.run(servers, r, rows, end)
        row[c.key] = result
        log(
          "throughput",
          `round ${r + 1}/${rounds} ${c.key}: ${Math.round(rows / result.seconds)} rows/s in ${result.seconds.toFixed(2)} s` +
            (result.streamingSeconds === undefined
              ? ""
              : ` (streaming ${Math.round(rows / result.streamingSeconds)} rows/s, first row after ${result.startupSeconds!.toFixed(2)} s)`)
        )
      }
      perRound.push(row)
    }
    const benchLoadAfter = load()

    const rate = (r: Run, streaming: boolean) => rows / (streaming ? (r.streamingSeconds ?? r.seconds) : r.seconds)
    const med = (key: string, f: (r: Run) => number) => median(perRound.map((row) => f(row[key]!)))
    const ratio = (a: string, b: string, streaming: boolean) =>
      perRound.map((row) => rate(row[a]!, streaming) / rate(row[b]!, streaming))
    const ceilingWhole = ratio("redflow", "recvlogical", false)
    const loopWhole = ratio("redflow", "loop", false)
    const ceilingStreaming = ratio("redflow", "recvlogical", true)
    const loopStreaming = ratio("redflow", "loop", true)
    const fmt = (xs: ReadonlyArray<number>) => xs.map((x) => x.toFixed(2)).join(" ")
    const verdict = (value: number, target: number) =>
      `${value.toFixed(2)} (target ≥ ${target}: ${value >= target ? "met" : "**missed**"})`

    const rowsTable = table(
      [
        "contender",
        "rows/s (whole process)",
        "rows/s (streaming)",
        "first row after (s)",
        "event bytes",
        "per-round rows/s"
      ],
      contenders.map((c) => [
        c.label,
        Math.round(med(c.key, (r) => rate(r, false))),
        c.key === "recvlogical" ? "—" : String(Math.round(med(c.key, (r) => rate(r, true)))),
        c.key === "recvlogical" ? "—" : med(c.key, (r) => r.startupSeconds!).toFixed(2),
        c.key === "recvlogical" ? "—" : String(eventBytes[c.key] ?? "?"),
        perRound.map((row) => Math.round(rate(row[c.key]!, false))).join(" ")
      ])
    )
    const perRow = (key: string, f: (c: Cpu) => number) =>
      key === "recvlogical" ? "—" : ((med(key, (r) => f(r.cpu!)) / rows) * 1e6).toFixed(1)
    const cpuTable = table(
      ["contender", "its process (µs CPU/row)", "… while streaming", "WAL sender (µs/row)", "redis-server (µs/row)"],
      contenders
        .filter((c) => c.key !== "recvlogical")
        .map((c) => [
          c.label,
          perRow(c.key, (x) => x.process),
          perRow(c.key, (x) => x.processStreaming),
          perRow(c.key, (x) => x.walSender),
          perRow(c.key, (x) => x.redis)
        ])
    )
    const markdown = `
### Throughput: pgbench load through to Redis (target 1)

${machine}.

Load: pgbench scale 1, ${transactions.toLocaleString("en-US")} TPC-B-like transactions (\`-c 4 -j 2\`), ${rows.toLocaleString("en-US")} changed rows
(3 UPDATEs + 1 INSERT each, and a marker row), ${walMB.toFixed(0)} MB of WAL, written in ${loadSeconds.toFixed(1)} s before any
contender ran (load average ${loadBefore}). Each contender then decodes the same WAL from its own slot, created before the load, as
a fresh process; ${rounds} rounds in alternating order, medians; ratios are the medians of per-round ratios. Load average during
the rounds ${benchLoadBefore} → ${benchLoadAfter}. "Whole process": from spawn until the last row is in Redis (XLEN) or
pg_recvlogical has exited at the end LSN; "streaming": from the first row in Redis to the last.

${rowsTable}

| ratio (Redflow over …) | whole process | per round | streaming | per round |
| --- | --- | --- | --- | --- |
| pg_recvlogical (ceiling) | ${verdict(median(ceilingWhole), 0.7)} | ${fmt(ceilingWhole)} | ${median(ceilingStreaming).toFixed(2)} | ${fmt(ceilingStreaming)} |
| hand-written loop | ${verdict(median(loopWhole), 1.25)} | ${fmt(loopWhole)} | ${median(loopStreaming).toFixed(2)} | ${fmt(loopStreaming)} |

Where the CPU goes, in µs of CPU per row (median of the rounds; "its process" includes its start-up, "while streaming"
is from the first row in Redis to the last; the machine has 2 cores for the contender's process, its WAL sender and Redis
together, so their sum bounds the rate):

${cpuTable}

The hand-written loop writes ${eventBytes.loop ?? "?"} bytes of JSON per row (the pg-logical-replication row, op and table) and
acknowledges the slot after each pipeline; Redflow writes its native envelope (${eventBytes.redflow ?? "?"} bytes: before/after,
source with LSN and commit time, transaction order, position) with exactly-once marks and a file checkpoint (at most every 50 ms, \`batch.checkpointInterval\`).
${profileDir === undefined ? "" : `\nCPU profiles of the Redflow process: \`${Path.relative(process.cwd(), profileDir)}\` (\`node bench/profile-summary.ts FILE\`).\n`}
Reproduce: \`pnpm exec node bench/postgres/throughput.ts${transactions === 40_000 ? "" : ` --transactions ${transactions}`}\` (about 2 minutes).
`
    const file = writeSection("throughput", markdown)
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
