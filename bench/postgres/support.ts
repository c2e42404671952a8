/**
 * What the PostgreSQL benches share: their own PostgreSQL (wal_level=logical) and redis-server, SQL through psql,
 * pgbench, the pipeline process under test (`redflow run`, or `pipeline.ts` with `--via script`), polling, memory
 * figures from /proc, and markdown tables.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import type { Redis } from "ioredis"
import * as PostgresTestServer from "@redflow/testing/PostgresTestServer"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as CompiledApp from "../src/CompiledApp.ts"
import * as Machine from "../src/Machine.ts"
import { log } from "../src/Progress.ts"
import { connect, totalLength } from "../src/RedisClient.ts"

export { log } from "../src/Progress.ts"
export { median, percentile, round, summarize, type LatencySummary } from "../src/Stats.ts"
export { connect, deleteMatching, field, parseRead, totalLength } from "../src/RedisClient.ts"

export const benchDir = Path.dirname(new URL(import.meta.url).pathname)
export const repoDir = Path.resolve(benchDir, "..", "..")
const cliBin = CompiledApp.sourcesBinOf(repoDir)
const pipelineScript = Path.join(benchDir, "pipeline.ts")

// Effect's default logger writes to console.log: keep stdout for the report.
console.log = (...args: Array<unknown>) => console.error(...args)

// ---------------------------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------------------------

const argv = process.argv.slice(2)
export const flag = (name: string): boolean => argv.includes(name)
export const value = (name: string): string | undefined => {
  const i = argv.indexOf(name)
  return i >= 0 ? argv[i + 1] : undefined
}
export const numberOption = (name: string, fallback: number): number => {
  const v = value(name)
  if (v === undefined) return fallback
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} takes a positive number, got ${v}`)
  return n
}

/**
 * Which pipeline process is measured: `redflow run` on the workspace's type-stripped sources (default), the
 * compiled `redflow run` as npm installs it (`compiled`: packed and installed once per bench process, about a
 * minute), or the hand-wired `pipeline.ts`.
 */
export type Via = "run" | "compiled" | "script"
export const via = (): Via => {
  const v = value("--via") ?? "run"
  if (v !== "run" && v !== "compiled" && v !== "script")
    throw new Error(`--via takes run, compiled or script, got ${v}`)
  return v
}
export const viaLabel = (v: Via): string =>
  v === "run" ? "redflow run" : v === "compiled" ? "redflow run (compiled)" : "bench/postgres/pipeline.ts"

let compiledApp: string | undefined
/** The compiled app, installed at the first use. */
const compiledBin = (): string =>
  CompiledApp.binOf((compiledApp ??= CompiledApp.install((line) => log("compiled", line))))

// ---------------------------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------------------------

export interface Servers {
  readonly pg: PostgresTestServer.SpawnedServer
  readonly redis: RedisTestServer.SpawnedServer
  /** A plain ioredis client for setup, polling and cleanup. */
  readonly client: Redis
  readonly dir: string
  readonly stop: () => Promise<void>
}

/**
 * A PostgreSQL of our own (wal_level=logical; `settings` on top of PostgresTestServer's) and a spawned
 * redis-server (no persistence), with a temp dir for checkpoints and profiles.
 */
export const startServers = async (settings: Record<string, string | number> = {}): Promise<Servers> => {
  const pg = await PostgresTestServer.spawnPostgresServer({
    settings: { max_wal_size: "2GB", max_replication_slots: 24, max_wal_senders: 24, ...settings }
  })
  let redis: RedisTestServer.SpawnedServer | undefined
  let client: Redis | undefined
  try {
    redis = await RedisTestServer.spawnRedisServer()
    client = await connect(redis.url)
  } catch (e) {
    await redis?.stop()
    await pg.stop()
    throw e
  }
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "redflow-bench-pg-"))
  const r = redis
  const c = client
  let stopped: Promise<void> | undefined
  const stop = () =>
    (stopped ??= (async () => {
      c.disconnect()
      await r.stop()
      await pg.stop()
      Fs.rmSync(dir, { recursive: true, force: true })
    })())
  // Ctrl-C or SIGTERM: the servers run in process groups of their own and would outlive this process.
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      process.stderr.write(`${signal}: stopping the servers\n`)
      void stop().finally(() => process.exit(130))
    })
  }
  return { pg, redis: r, client: c, dir, stop }
}

/** Runs a server binary (psql, pgbench, pg_recvlogical) and resolves to its output; a non-zero exit rejects. */
export const runBinary = (
  pg: PostgresTestServer.SpawnedServer,
  binary: string,
  args: ReadonlyArray<string>,
  env: Record<string, string> = {}
): Promise<{ stdout: string; stderr: string }> =>
  new Promise((resolve, reject) =>
    ChildProcess.execFile(
      Path.join(pg.binDir, binary),
      [...args],
      { env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) =>
        error
          ? reject(new Error(`${binary} ${args.join(" ")}: ${error.message}\n${stderr}`))
          : resolve({ stdout, stderr })
    )
  )

/** One SQL statement through psql, its rows as `|`-separated lines. */
export const sql = async (pg: PostgresTestServer.SpawnedServer, query: string): Promise<string> =>
  (
    await runBinary(pg, "psql", ["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", pg.url, "-c", query])
  ).stdout.trim()

export const pgVersion = async (pg: PostgresTestServer.SpawnedServer): Promise<string> =>
  (await sql(pg, "SHOW server_version")).split(" ")[0] ?? "unknown"

/** `X/Y` as a bigint. */
export const parseLsn = (text: string): bigint => {
  const [hi, lo] = text.trim().split("/")
  if (hi === undefined || lo === undefined) throw new Error(`not an LSN: ${text}`)
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`)
}

export const currentLsn = async (pg: PostgresTestServer.SpawnedServer): Promise<bigint> =>
  parseLsn(await sql(pg, "SELECT pg_current_wal_insert_lsn()"))

// ---------------------------------------------------------------------------------------------------------------
// The pipeline process
// ---------------------------------------------------------------------------------------------------------------

export interface PipelineFlags {
  readonly tables: ReadonlyArray<string>
  /** Stream template, e.g. `bench.r1.${source.table}`. */
  readonly stream: string
  readonly pipeline: string
  readonly slot: string
  readonly publication: string
  readonly guarantee?: "at-least-once" | "exactly-once"
  readonly snapshot?: "initial" | "never"
  /** `file` (default): a fresh checkpoint file in the temp dir; `memory`: no --checkpoint (a diagnostic). */
  readonly checkpoint?: "file" | "memory"
}

export interface PipelineProcess {
  readonly pid: number
  readonly startedAt: number
  /** The tail of its stdout and stderr. */
  readonly output: () => string
  /** Resolves with the exit code (or the signal) once it has exited. */
  readonly exited: Promise<string>
  /** SIGTERM (redflow run drains, pipeline.ts interrupts), SIGKILL after `graceMs`; resolves with the exit. */
  readonly stop: (graceMs?: number) => Promise<string>
}

const OUTPUT_LIMIT = 16_384

/**
 * Starts the pipeline under test as its own Node process: `redflow run` (packages/cli/src/bin.ts run) or
 * `pipeline.ts`, with the same flags, a fresh checkpoint file in the temp dir, and optionally `--cpu-prof`.
 */
export const spawnPipeline = (
  servers: Servers,
  v: Via,
  flags: PipelineFlags,
  options: {
    readonly cpuProfDir?: string | undefined
    /** Extra Node flags for the pipeline process, e.g. `--max-old-space-size=128` (a diagnostic). */
    readonly nodeFlags?: ReadonlyArray<string> | undefined
    /** Also write its whole stdout and stderr to this file. */
    readonly logFile?: string | undefined
    /** More flags for the pipeline process, e.g. `--batch-size 1000` (a diagnostic). */
    readonly extraArgs?: ReadonlyArray<string> | undefined
  } = {}
): PipelineProcess => {
  const checkpoint = Path.join(servers.dir, `${flags.pipeline}.checkpoint.json`)
  const args = [
    "--source",
    servers.pg.url,
    "--tables",
    flags.tables.join(","),
    "--redis",
    servers.redis.url,
    "--stream",
    flags.stream,
    "--guarantee",
    flags.guarantee ?? "exactly-once",
    ...(flags.checkpoint === "memory" ? [] : ["--checkpoint", checkpoint]),
    "--pipeline",
    flags.pipeline,
    "--slot",
    flags.slot,
    "--publication",
    flags.publication,
    "--snapshot",
    flags.snapshot ?? "never",
    ...(options.extraArgs ?? [])
  ]
  const prof = options.cpuProfDir === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", options.cpuProfDir]
  const script = v === "run" ? [cliBin, "run"] : v === "compiled" ? [compiledBin(), "run"] : [pipelineScript]
  const startedAt = performance.now()
  const child = ChildProcess.spawn(process.execPath, [...(options.nodeFlags ?? []), ...prof, ...script, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    cwd: repoDir,
    env: { ...process.env, NO_COLOR: "1" }
  })
  let output = ""
  const log = options.logFile === undefined ? undefined : Fs.openSync(options.logFile, "a")
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-OUTPUT_LIMIT)
    if (log !== undefined) Fs.writeSync(log, chunk)
  }
  child.stdout.on("data", keep)
  child.stderr.on("data", keep)
  const exited = new Promise<string>((resolve) =>
    child.once("exit", (code, signal) => resolve(code !== null ? `exit ${code}` : `signal ${signal}`))
  )
  if (child.pid === undefined) throw new Error(`could not start ${script.join(" ")}`)
  const pid = child.pid
  return {
    pid,
    startedAt,
    output: () => output,
    exited,
    stop: async (graceMs = 20_000) => {
      if (child.exitCode !== null || child.signalCode !== null) return exited
      child.kill("SIGTERM")
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs)
      const how = await exited
      clearTimeout(timer)
      return how
    }
  }
}

/** Polls `check` every `intervalMs` until it returns a value, failing after `timeoutMs` with `what` and `detail()`. */
export const waitUntil = async <A>(
  check: () => Promise<A | undefined>,
  options: {
    readonly what: string
    readonly timeoutMs: number
    readonly intervalMs?: number
    readonly detail?: () => string
    /** Fails at once when this settles first (e.g. the pipeline process exited). */
    readonly abort?: Promise<string>
  }
): Promise<A> => {
  const deadline = performance.now() + options.timeoutMs
  let aborted: string | undefined
  void options.abort?.then((how) => {
    aborted = how
  })
  for (;;) {
    const v = await check()
    if (v !== undefined) return v
    if (aborted !== undefined) {
      throw new Error(`${options.what}: the process ended first (${aborted})\n${options.detail?.() ?? ""}`)
    }
    if (performance.now() > deadline) {
      throw new Error(`${options.what}: not within ${options.timeoutMs} ms\n${options.detail?.() ?? ""}`)
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 10))
  }
}

/** Resolves once `streams` together hold `count` entries; the time it first saw any entry, and when it saw all. */
export const untilDelivered = async (
  client: Redis,
  streams: ReadonlyArray<string>,
  count: number,
  options: {
    readonly what: string
    readonly timeoutMs: number
    readonly abort?: Promise<string>
    readonly detail?: () => string
    /** Called once, when the first entries are seen. */
    readonly onFirst?: () => void
  }
): Promise<{ readonly firstAt: number; readonly firstCount: number; readonly doneAt: number }> => {
  let firstAt: number | undefined
  let firstCount = 0
  const doneAt = await waitUntil(
    async () => {
      const n = await totalLength(client, streams)
      const now = performance.now()
      if (n > 0 && firstAt === undefined) {
        firstAt = now
        firstCount = n
        options.onFirst?.()
      }
      if (n > count) throw new Error(`${options.what}: ${n} entries, more than the ${count} expected`)
      return n === count ? now : undefined
    },
    { ...options, intervalMs: 5 }
  )
  return { firstAt: firstAt ?? doneAt, firstCount, doneAt }
}

// ---------------------------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------------------------

/** VmRSS and VmHWM (peak RSS) of a process in MB, from /proc/<pid>/status; undefined once it is gone. */
export const memoryOf = (pid: number): { readonly rssMB: number; readonly peakMB: number } | undefined => {
  let status: string
  try {
    status = Fs.readFileSync(`/proc/${pid}/status`, "utf8")
  } catch {
    return undefined
  }
  const kB = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN)
  return { rssMB: kB("VmRSS") / 1024, peakMB: kB("VmHWM") / 1024 }
}

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat; undefined once it is gone. */
export const cpuSecondsOf = (pid: number): number | undefined => {
  let stat: string
  try {
    stat = Fs.readFileSync(`/proc/${pid}/stat`, "utf8")
  } catch {
    return undefined
  }
  // The fields after the command name, which is in parentheses and may hold spaces: utime and stime are 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS
}
const CLOCK_TICKS = Number(ChildProcess.spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100

/** CPU seconds redis-server has used so far (INFO cpu). */
export const redisCpuSeconds = async (client: Redis): Promise<number> => {
  const info = await client.info("cpu")
  const n = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? NaN)
  return n("used_cpu_user") + n("used_cpu_sys")
}

/** The pid of the WAL sender streaming from `slot` (pg_replication_slots.active_pid), if one is. */
export const walSenderOf = async (pg: PostgresTestServer.SpawnedServer, slot: string): Promise<number | undefined> => {
  const pid = await sql(pg, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = '${slot}'`)
  return pid === "" ? undefined : Number(pid)
}

// ---------------------------------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------------------------------

/** The machine, the versions and the code measured, as one line. */
export const describeMachine = async (servers: Servers): Promise<string> => {
  const m = Machine.describe(Machine.redisVersion(await servers.client.info("server")))
  const pg = await pgVersion(servers.pg)
  return (
    `${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, ${m.os}, Node ${m.node}, PostgreSQL ${pg}, Redis ${m.redis}; ` +
    `code ${m.revision}; load average at start ${m.loadAverageAtStart.join(" ")}`
  )
}

/** A markdown table; numbers are right-aligned. */
export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string | number>>): string => {
  const cells = [header, ...rows.map((r) => r.map(String))]
  const widths = header.map((_, i) => Math.max(3, ...cells.map((r) => (r[i] ?? "").length)))
  const numeric = header.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === "number"))
  const line = (r: ReadonlyArray<string>) =>
    `| ${r.map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(" | ")} |`
  const rule = `| ${widths.map((w, i) => (numeric[i] ? `${"-".repeat(w - 1)}:` : "-".repeat(w))).join(" | ")} |`
  return [line(cells[0]!), rule, ...cells.slice(1).map(line)].join("\n")
}

/** The 1-minute load average now. */
export const load = (): string => Os.loadavg()[0]!.toFixed(2)

/** Appends or replaces this bench's section in a markdown file (default /tmp/bench-postgres.md). */
export const writeSection = (name: string, markdown: string): string => {
  const file = value("--out") ?? "/tmp/bench-postgres.md"
  const begin = `<!-- bench:postgres ${name} -->`
  const end = `<!-- /bench:postgres ${name} -->`
  let text = Fs.existsSync(file) ? Fs.readFileSync(file, "utf8") : ""
  const block = `${begin}\n${markdown.trim()}\n${end}\n`
  const i = text.indexOf(begin)
  const j = text.indexOf(end)
  text =
    i >= 0 && j > i
      ? text.slice(0, i) + block + text.slice(j + end.length + 1)
      : `${text}${text === "" ? "" : "\n"}${block}`
  Fs.writeFileSync(file, text)
  return file
}
