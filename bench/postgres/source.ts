/**
 * The PostgreSQL source alone: CPU per row of `PostgresSource` reading a pgbench load from its slot with nothing
 * downstream (no sink, no envelope), this tree against another (`--before DIR`, e.g. a worktree of main), each round
 * a fresh process per tree, order alternating. What the throughput bench cannot isolate on a shared machine: the
 * source's own cost, compared within one run. Figures from the first event to the last (start-up left out); CPU is
 * the child's own (`process.cpuUsage`).
 *
 *   pnpm exec node bench/postgres/source.ts --before /path/to/main [--transactions N] [--rounds N] [--profile DIR]
 *
 * `--profile DIR`: a CPU profile of each child in DIR (`node bench/profile-summary.ts FILE`).
 */
import * as ChildProcess from "node:child_process"
import * as Path from "node:path"
import {
  benchDir,
  describeMachine,
  load,
  log,
  median,
  numberOption,
  repoDir,
  runBinary,
  sql,
  startServers,
  table,
  value
} from "./support.ts"

const transactions = Math.round(numberOption("--transactions", 40_000) / 4) * 4
const rounds = numberOption("--rounds", 3)
const before = value("--before")
const profileDir = value("--profile")
const TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"] as const
const PUBLICATION = "bench"

interface Result {
  readonly rows: number
  readonly startupMs: number
  readonly streamingMs: number
  readonly streamingCpuMs: number
}

const trees = [
  { key: "this", dir: repoDir },
  ...(before === undefined ? [] : [{ key: "before", dir: Path.resolve(before) }])
]

const child = (tree: string, url: string, slot: string, rows: number) =>
  new Promise<Result>((resolve, reject) => {
    ChildProcess.execFile(
      process.execPath,
      [
        ...(profileDir === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", Path.join(profileDir, slot)]),
        Path.join(benchDir, "sourceChild.ts"),
        ...[tree, url, slot, PUBLICATION, TABLES.join(","), String(rows)]
      ],
      { timeout: 300_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) =>
        error === null
          ? resolve(JSON.parse(stdout.trim().split("\n").at(-1)!) as Result)
          : reject(new Error(`${tree}: ${error.message}\n${stderr.slice(-2000)}`))
    )
  })

const main = async () => {
  const servers = await startServers()
  try {
    const pg = servers.pg
    const machine = await describeMachine(servers)
    log("setup", machine)
    await runBinary(pg, "pgbench", ["-i", "-q", "-s", "1", pg.url])
    await sql(pg, "ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY")
    await sql(pg, `CREATE PUBLICATION ${PUBLICATION} FOR TABLE ${TABLES.join(", ")}`)
    for (let r = 0; r < rounds; r++) {
      for (const t of trees) await sql(pg, `SELECT pg_create_logical_replication_slot('${t.key}_${r}', 'pgoutput')`)
    }
    await runBinary(pg, "pgbench", ["-n", "-c", "4", "-j", "2", "-t", String(transactions / 4), pg.url], {
      PGOPTIONS: "-c synchronous_commit=off"
    })
    const rows = 4 * transactions
    log("load", `${transactions} transactions, ${rows} changed rows`)
    const loadBefore = load()
    const results: Record<string, Array<Result>> = Object.fromEntries(trees.map((t) => [t.key, []]))
    for (let r = 0; r < rounds; r++) {
      for (const t of r % 2 === 0 ? trees : [...trees].reverse()) {
        const result = await child(t.dir, pg.url, `${t.key}_${r}`, rows)
        results[t.key]!.push(result)
        log(
          "source",
          `round ${r + 1}/${rounds} ${t.key}: ${((result.streamingCpuMs * 1000) / rows).toFixed(2)} µs CPU/row, ` +
            `${Math.round(rows / (result.streamingMs / 1000))} rows/s, first event after ${(result.startupMs / 1000).toFixed(2)} s`
        )
      }
    }
    const loadAfter = load()
    const cpuPerRow = (r: Result) => (r.streamingCpuMs * 1000) / rows
    const body = table(
      ["tree", "µs CPU/row (median)", "per round", "rows/s (median)", "first event after (s)"],
      trees.map((t) => {
        const rs = results[t.key]!
        return [
          `${t.key} (${t.dir})`,
          median(rs.map(cpuPerRow)).toFixed(2),
          rs.map((x) => cpuPerRow(x).toFixed(2)).join(" "),
          Math.round(median(rs.map((x) => rows / (x.streamingMs / 1000)))),
          median(rs.map((x) => x.startupMs / 1000)).toFixed(2)
        ]
      })
    )
    process.stdout.write(
      `\n${machine}\n\n${transactions} pgbench transactions (${rows} rows), ${rounds} rounds, load average ${loadBefore} → ${loadAfter}\n\n${body}\n`
    )
  } finally {
    await servers.stop()
  }
}

await main()
