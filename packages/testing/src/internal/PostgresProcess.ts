/**
 * Running a PostgreSQL server of one's own: finding the binaries, `initdb`, the `postgres` process, a crash and a
 * restart.
 *
 * The postmaster is spawned directly (not through `pg_ctl start`), so its pid is the child's pid and its exit is
 * seen. It runs in its own process group: a Ctrl-C at the terminal does not reach it, and a stop that has to force
 * it can SIGKILL the whole group (the postmaster and its backends) at once. When the test process runs as root the
 * binaries run as the `postgres` user (initdb refuses root), with the temp dir chowned to that user.
 *
 * @internal
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs/promises"
import * as Path from "node:path"

const OUTPUT_LIMIT = 32_768

/** Where the binaries are looked for when no `binDir` is given: Debian's layout, newest version first. */
export const DEFAULT_ROOT = "/usr/lib/postgresql"

export const REQUIRED_BINARIES = ["initdb", "postgres", "pg_ctl", "pg_isready"] as const

export interface Identity {
  readonly uid: number
  readonly gid: number
  readonly user: string
}

export interface Child {
  readonly pid: number
  readonly exited: Promise<void>
  readonly hasExited: () => boolean
  readonly kill: (signal: NodeJS.Signals) => void
}

const running = new Map<number, ChildProcess.ChildProcess>()
let exitHookInstalled = false

const killGroup = (pid: number, signal: NodeJS.Signals) => {
  try {
    process.kill(-pid, signal)
  } catch {
    // the group is gone
  }
}

const installExitHook = () => {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once("exit", () => {
    for (const pid of running.keys()) killGroup(pid, "SIGKILL")
  })
}

/**
 * The directories that hold every required binary, best first: `binDir` alone when given, else
 * `/usr/lib/postgresql/<version>/bin` from the highest version down. Returns what each candidate lacks too, for the
 * error message.
 */
export const findBinDir = async (
  binDir: string | undefined
): Promise<{ readonly found?: string | undefined; readonly tried: ReadonlyArray<string> }> => {
  const candidates: Array<string> = []
  if (binDir !== undefined) {
    candidates.push(binDir)
  } else {
    const versions = await Fs.readdir(DEFAULT_ROOT).catch(() => [] as Array<string>)
    versions
      .filter((name) => /^\d+(\.\d+)?$/.test(name))
      .sort((a, b) => Number(b) - Number(a))
      .forEach((version) => candidates.push(Path.join(DEFAULT_ROOT, version, "bin")))
  }
  const tried: Array<string> = []
  for (const dir of candidates) {
    const missing: Array<string> = []
    for (const binary of REQUIRED_BINARIES) {
      const ok = await Fs.access(Path.join(dir, binary), Fs.constants.X_OK).then(
        () => true,
        () => false
      )
      if (!ok) missing.push(binary)
    }
    if (missing.length === 0) return { found: dir, tried }
    tried.push(`${dir} lacks ${missing.join(", ")}`)
  }
  if (candidates.length === 0) tried.push(`${DEFAULT_ROOT}/<version>/bin does not exist`)
  return { tried }
}

const idOf = (flag: "-u" | "-g", user: string): Promise<number> =>
  new Promise((resolve, reject) =>
    ChildProcess.execFile("id", [flag, user], (error, stdout) =>
      error ? reject(new Error(`no user ${user}: ${error.message}`)) : resolve(Number(stdout.trim()))
    )
  )

/** The identity the binaries run as: `user` (default `postgres`) when this process is root, otherwise none. */
export const identity = async (user: string | undefined): Promise<Identity | undefined> => {
  if (process.getuid?.() !== 0) return undefined
  const name = user ?? "postgres"
  return { uid: await idOf("-u", name), gid: await idOf("-g", name), user: name }
}

const spawnOptions = (as: Identity | undefined): ChildProcess.SpawnOptions => ({
  stdio: ["ignore", "pipe", "pipe"],
  env: { ...process.env, LC_ALL: "C", LANG: "C" },
  ...(as === undefined ? {} : { uid: as.uid, gid: as.gid })
})

/** Runs a binary to completion; resolves with its exit code and output (never rejects on a non-zero exit). */
export const run = (
  binary: string,
  args: ReadonlyArray<string>,
  as: Identity | undefined
): Promise<{ readonly code: number; readonly output: string }> =>
  new Promise((resolve, reject) => {
    let output = ""
    const child = ChildProcess.spawn(binary, [...args], spawnOptions(as))
    const append = (chunk: Buffer) => {
      output = (output + chunk.toString("utf8")).slice(-OUTPUT_LIMIT)
    }
    child.stdout?.on("data", append)
    child.stderr?.on("data", append)
    child.on("error", reject)
    child.once("close", (code, signal) => resolve({ code: code ?? (signal === null ? 0 : 128), output }))
  })

/** Spawns the postmaster in its own process group; its output is appended with `onOutput`. */
export const spawnServer = (
  binary: string,
  args: ReadonlyArray<string>,
  as: Identity | undefined,
  onOutput: (text: string) => void
): Promise<Child> =>
  new Promise((resolve, reject) => {
    const child = ChildProcess.spawn(binary, [...args], { ...spawnOptions(as), detached: true })
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
    child.stdout?.on("data", (chunk: Buffer) => onOutput(chunk.toString("utf8")))
    child.stderr?.on("data", (chunk: Buffer) => onOutput(chunk.toString("utf8")))
    // `on`, not `once`: an unhandled later "error" event would crash the test process.
    child.on("error", (error) => {
      if (child.pid === undefined) reject(error)
    })
    child.once("spawn", () => {
      const pid = child.pid as number
      installExitHook()
      running.set(pid, child)
      void exited.then(() => running.delete(pid))
      resolve({
        pid,
        exited,
        hasExited: () => child.exitCode !== null || child.signalCode !== null,
        kill: (signal) => killGroup(pid, signal)
      })
    })
  })

/**
 * Stops the postmaster: SIGINT (PostgreSQL's fast shutdown: sessions are ended, a shutdown checkpoint is written),
 * then SIGKILL of its whole process group after the grace period. Resolves once it has exited.
 */
export const stop = (child: Child, graceMs: number): Promise<void> => {
  if (child.hasExited()) return child.exited
  try {
    process.kill(child.pid, "SIGCONT")
    process.kill(child.pid, "SIGINT")
  } catch {
    // exited in between
  }
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs)
  return child.exited.finally(() => clearTimeout(timer))
}

export const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}
