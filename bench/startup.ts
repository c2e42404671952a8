/**
 * Start-up of the `redflow` command line (issue 12): `redflow produce --events 1` from the compiled package, as a
 * user installs it, against the workspace's sources run by Node's type stripping (`pnpm redflow`), and optionally
 * against another revision's sources (`--baseline REV`, e.g. the commit before a change). Each contender runs in a
 * fresh process, in alternating order, round after round; reported: the median wall time (spawn to exit) and the
 * median peak RSS of a run, and the RSS of an idle sink process (`produce --rate 1`, read from /proc 5 s after its
 * first event reached Redis).
 *
 *   pnpm exec node bench/startup.ts [--rounds 7] [--baseline REV] [--app DIR] [--json]
 *
 * The compiled contender is what `npm install` of the packed tarballs gives: every published package is packed
 * (`pnpm pack`, which builds it first) and installed with npm into a temp app outside the workspace (the
 * dependencies come from the npm registry or npm's cache); `--app DIR` reuses such an app. Redis: `REDIS_URL`, else a
 * redis-server spawned for the run. Linux (the idle RSS reads /proc); the Node version is the one running this.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { Redis } from "ioredis"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as CompiledApp from "./src/CompiledApp.ts"
import * as Machine from "./src/Machine.ts"
import { median } from "./src/Stats.ts"

const ROOT = fileURLToPath(new URL("..", import.meta.url))
const IDLE_SAMPLE_MS = 5_000

const argv = process.argv.slice(2)
const value = (name: string): string | undefined => {
  const i = argv.indexOf(name)
  return i >= 0 ? argv[i + 1] : undefined
}
const rounds = Number(value("--rounds") ?? 7)
if (!Number.isInteger(rounds) || rounds < 1) {
  process.stderr.write(`--rounds takes an integer >= 1, got ${value("--rounds")}\n`)
  process.exit(2)
}
const json = argv.includes("--json")
const log = (line: string) => process.stderr.write(`${line}\n`)

const tmp = Fs.mkdtempSync(Path.join(Os.tmpdir(), "redflow-startup-"))

/** Another revision's packages/ beside the workspace's node_modules: how `pnpm redflow` started at that commit. */
const checkoutBaseline = (rev: string): string => {
  const dir = Path.join(tmp, "baseline")
  Fs.mkdirSync(dir)
  const archive = ChildProcess.spawnSync("git", ["archive", rev, "packages"], { cwd: ROOT, maxBuffer: 1 << 30 })
  if (archive.status !== 0) throw new Error(`git archive ${rev} failed: ${archive.stderr}`)
  ChildProcess.spawnSync("tar", ["-x", "-C", dir], { input: archive.stdout })
  Fs.symlinkSync(Path.join(ROOT, "node_modules"), Path.join(dir, "node_modules"))
  // Each package's node_modules holds pnpm's relative links (to ../../../node_modules/.pnpm and ../../<package>).
  for (const name of Fs.readdirSync(Path.join(dir, "packages"))) {
    const links = Path.join(ROOT, "packages", name, "node_modules")
    if (Fs.existsSync(links))
      Fs.cpSync(links, Path.join(dir, "packages", name, "node_modules"), { recursive: true, verbatimSymlinks: true })
  }
  return dir
}

/** Writes the process's peak RSS (KiB) to `$STARTUP_RSS_FILE` at exit: a plain .mjs, no type stripping. */
const rssProbe = Path.join(tmp, "peak-rss.mjs")
Fs.writeFileSync(
  rssProbe,
  `import { writeFileSync } from "node:fs"\n` +
    `process.on("exit", () => writeFileSync(process.env.STARTUP_RSS_FILE, String(process.resourceUsage().maxRSS)))\n`
)

interface Contender {
  readonly name: string
  readonly cwd: string
  readonly bin: string
}

interface Run {
  readonly wallMs: number
  readonly peakRssMiB: number
}

const produceOnce = (c: Contender, redisUrl: string, stream: string): Promise<Run> =>
  new Promise((resolve, reject) => {
    const rssFile = Path.join(tmp, `rss-${c.name}`)
    const started = performance.now()
    const child = ChildProcess.spawn(
      process.execPath,
      ["--import", rssProbe, c.bin, "produce", "--events", "1", "--stream", stream, "--redis", redisUrl],
      { cwd: c.cwd, env: { ...process.env, STARTUP_RSS_FILE: rssFile }, stdio: ["ignore", "ignore", "pipe"] }
    )
    let stderr = ""
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
    child.once("error", reject)
    child.once("exit", (code) => {
      const wallMs = performance.now() - started
      if (code !== 0) return reject(new Error(`${c.name}: redflow produce exited ${code}\n${stderr}`))
      resolve({ wallMs, peakRssMiB: Number(Fs.readFileSync(rssFile, "utf8")) / 1024 })
    })
  })

const vmRssMiB = (pid: number): number => {
  const line = Fs.readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmRSS:"))
  return Number(/(\d+)/.exec(line ?? "")?.[1] ?? NaN) / 1024
}

/** RSS of a sink process producing one event a second, 5 s after its first event reached Redis. */
const idleRss = async (c: Contender, redisUrl: string, redis: Redis, stream: string): Promise<number> => {
  const child = ChildProcess.spawn(
    process.execPath,
    [c.bin, "produce", "--events", "1000000", "--rate", "1", "--stream", stream, "--redis", redisUrl],
    { cwd: c.cwd, stdio: ["ignore", "ignore", "ignore"] }
  )
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  try {
    while ((await redis.xlen(stream)) === 0) {
      if (child.exitCode !== null) throw new Error(`${c.name}: the idle produce exited ${child.exitCode}`)
      await new Promise((r) => setTimeout(r, 50))
    }
    await new Promise((r) => setTimeout(r, IDLE_SAMPLE_MS))
    return vmRssMiB(child.pid!)
  } finally {
    child.kill("SIGTERM")
    await exited
  }
}

const server = process.env.REDIS_URL ? undefined : await RedisTestServer.spawnRedisServer()
const redisUrl = process.env.REDIS_URL || server!.url
const redis = new Redis(redisUrl)
try {
  const app = value("--app") ?? CompiledApp.install(log)
  const contenders: Array<Contender> = [
    { name: "compiled", cwd: app, bin: CompiledApp.binOf(app) },
    { name: "sources", cwd: ROOT, bin: CompiledApp.sourcesBinOf(ROOT) }
  ]
  const baselineRev = value("--baseline")
  if (baselineRev !== undefined) {
    const dir = checkoutBaseline(baselineRev)
    contenders.push({
      name: `sources@${baselineRev}`,
      cwd: dir,
      bin: CompiledApp.sourcesBinOf(dir)
    })
  }
  const runs = new Map(contenders.map((c) => [c.name, [] as Array<Run>]))
  const idle = new Map(contenders.map((c) => [c.name, [] as Array<number>]))
  const prefix = `bench.startup.${process.pid}`
  // One warm-up each (the OS's file cache), then rounds in rotating order.
  for (const c of contenders) await produceOnce(c, redisUrl, `${prefix}.warmup`)
  for (let round = 0; round < rounds; round++) {
    const order = contenders.map((_, i) => contenders[(i + round) % contenders.length]!)
    for (const c of order) runs.get(c.name)!.push(await produceOnce(c, redisUrl, `${prefix}.once`))
    log(
      `round ${round + 1}/${rounds}: ` +
        order.map((c) => `${c.name} ${runs.get(c.name)!.at(-1)!.wallMs.toFixed(0)} ms`).join(", ")
    )
  }
  const idleRounds = Math.min(rounds, 3)
  for (let round = 0; round < idleRounds; round++) {
    for (const c of contenders) {
      idle.get(c.name)!.push(await idleRss(c, redisUrl, redis, `${prefix}.idle.${c.name}.${round}`))
    }
    log(`idle round ${round + 1}/${idleRounds}`)
  }
  const results = contenders.map((c) => ({
    contender: c.name,
    wallMs: Math.round(median(runs.get(c.name)!.map((r) => r.wallMs))),
    wallMsRuns: runs.get(c.name)!.map((r) => Math.round(r.wallMs)),
    peakRssMiB: Math.round(median(runs.get(c.name)!.map((r) => r.peakRssMiB))),
    idleRssMiB: Math.round(median(idle.get(c.name)!))
  }))
  const reference = results[results.length - 1]!
  const report = {
    machine: Machine.describe(Machine.redisVersion(await redis.info("server"))),
    rounds,
    idleRounds,
    results: results.map((r) => ({ ...r, wallRatio: Math.round((r.wallMs / reference.wallMs) * 100) / 100 })),
    reference: reference.contender
  }
  const keys = await redis.keys(`${prefix}.*`)
  if (keys.length > 0) await redis.del(...keys)
  if (json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
  } else {
    process.stdout.write(
      [
        `redflow produce --events 1, Node ${process.version}, median of ${rounds} (idle RSS: median of ${idleRounds})`,
        `${"contender".padEnd(22)}${"wall".padStart(9)}${"× " + reference.contender}`.padEnd(44) +
          `${"peak RSS".padStart(10)}${"idle RSS".padStart(10)}`,
        ...report.results.map(
          (r) =>
            `${r.contender.padEnd(22)}${`${r.wallMs} ms`.padStart(9)}${`${r.wallRatio.toFixed(2)}`.padStart(13)}`.padEnd(
              44
            ) + `${`${r.peakRssMiB} MiB`.padStart(10)}${`${r.idleRssMiB} MiB`.padStart(10)}`
        ),
        `load average at start: ${report.machine.loadAverageAtStart.join(" ")}; revision ${report.machine.revision}`
      ].join("\n") + "\n"
    )
  }
} finally {
  redis.disconnect()
  await server?.stop()
  Fs.rmSync(tmp, { recursive: true, force: true })
}
