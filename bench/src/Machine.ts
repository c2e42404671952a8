/** A description of the machine a benchmark ran on: CPU, memory, OS, versions, and the load when it started. */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { createRequire } from "node:module"

export interface Machine {
  readonly cpus: number
  readonly cpuModel: string
  readonly memoryGiB: number
  readonly os: string
  readonly kernel: string
  readonly node: string
  readonly redis: string
  readonly ioredis: string
  readonly effect: string
  readonly loadAverageAtStart: ReadonlyArray<number>
  /** The code measured: `BENCH_REVISION` when set, else the git commit, with the files under packages/ that differ. */
  readonly revision: string
}

const readOr = (path: string, fallback: string): string => {
  try {
    return Fs.readFileSync(path, "utf8")
  } catch {
    return fallback
  }
}

const cpuModel = (): string => {
  const line = readOr("/proc/cpuinfo", "")
    .split("\n")
    .find((l) => l.startsWith("model name"))
  return line?.split(":")[1]?.trim() ?? Os.cpus()[0]?.model ?? "unknown"
}

const osName = (): string => {
  const line = readOr("/etc/os-release", "")
    .split("\n")
    .find((l) => l.startsWith("PRETTY_NAME="))
  return line === undefined ? `${Os.type()} ${Os.release()}` : line.slice("PRETTY_NAME=".length).replaceAll('"', "")
}

const require = createRequire(import.meta.url)

/** The version of a package as this bench resolves it. */
const packageVersion = (name: string): string => {
  try {
    const main = require.resolve(name)
    let dir = Path.dirname(main)
    for (let i = 0; i < 6; i++) {
      const file = Path.join(dir, "package.json")
      if (Fs.existsSync(file)) {
        const json = JSON.parse(Fs.readFileSync(file, "utf8")) as { name?: string; version?: string }
        if (json.name === name && json.version !== undefined) return json.version
      }
      dir = Path.dirname(dir)
    }
  } catch {
    // not resolvable
  }
  return "unknown"
}

/** `redis_version` from an `INFO server` reply. */
export const redisVersion = (info: string): string => /redis_version:(\S+)/.exec(info)?.[1] ?? "unknown"

const git = (args: ReadonlyArray<string>): string | undefined => {
  const run = ChildProcess.spawnSync("git", args, { encoding: "utf8" })
  return run.status === 0 ? run.stdout.trim() : undefined
}

export const revision = (): string => {
  const fromEnv = process.env.BENCH_REVISION
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv
  const commit = git(["rev-parse", "--short", "HEAD"])
  if (commit === undefined) return "unknown (not a git checkout; set BENCH_REVISION)"
  const dirty = git(["status", "--porcelain", "--", "packages"])
  return dirty === undefined || dirty === ""
    ? commit
    : `${commit} with uncommitted changes in ${dirty
        .split("\n")
        // "XY path": the output is trimmed, so the first line may have lost X's leading space.
        .map((l) => l.replace(/^\s*\S+\s+/, ""))
        .join(", ")}`
}

export const describe = (redis: string): Machine => ({
  cpus: Os.availableParallelism(),
  cpuModel: cpuModel(),
  memoryGiB: Math.round((Os.totalmem() / 1024 ** 3) * 10) / 10,
  os: osName(),
  kernel: Os.release(),
  node: process.version,
  redis,
  ioredis: packageVersion("ioredis"),
  effect: packageVersion("effect"),
  loadAverageAtStart: Os.loadavg().map((l) => Math.round(l * 100) / 100),
  revision: revision()
})
