/** Runs the `redflow` executable as a child process, the way a user does. */
import { type ChildProcess, execFile, spawn } from "node:child_process"
import * as Fs from "node:fs/promises"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { Redis } from "ioredis"

export const BIN = fileURLToPath(new URL("../src/bin.ts", import.meta.url))
/** The installed executable, `./node_modules/.bin/redflow` at the repository root: what the README says to run. */
export const INSTALLED_BIN = fileURLToPath(new URL("../../../node_modules/.bin/redflow", import.meta.url))

export interface Result {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * How long a run may take by default. A CLI process spends seconds just loading Node and Effect on a machine whose
 * two cores are shared with other test files and other work: this is a bound for a hung process, not a speed claim.
 */
export const RUN_TIMEOUT_MS = 150_000

export interface RunOptions {
  /** Extra environment; `REDIS_URL` is removed unless given here. */
  readonly env?: Record<string, string>
  readonly timeoutMs?: number
  /** Run {@link INSTALLED_BIN} (the shell shim that execs Node) instead of Node on the source. */
  readonly installed?: boolean
}

const childEnv = (env: Record<string, string> = {}) => {
  const { REDIS_URL: _ignored, ...rest } = process.env
  return { ...rest, NO_COLOR: "1", ...env }
}

/** Starts the CLI; the caller waits for it with {@link finish}. */
export const start = (args: ReadonlyArray<string>, options: RunOptions = {}) => {
  const child = spawn(options.installed ? INSTALLED_BIN : process.execPath, options.installed ? args : [BIN, ...args], {
    env: childEnv(options.env),
    stdio: ["ignore", "pipe", "pipe"]
  })
  const out = { stdout: "", stderr: "" }
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (out.stdout += d))
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (out.stderr += d))
  const done = new Promise<Result>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(
        new Error(
          `redflow ${args.join(" ")} did not finish in ${options.timeoutMs ?? RUN_TIMEOUT_MS} ms\n${out.stderr}`
        )
      )
    }, options.timeoutMs ?? RUN_TIMEOUT_MS)
    child.on("exit", (code, signal) => {
      clearTimeout(timer)
      // Let the pipes drain after the exit event.
      setImmediate(() => resolve({ code, signal, ...out }))
    })
  })
  return { child: child as ChildProcess, out, done }
}

/** Runs the CLI to the end. */
export const run = (args: ReadonlyArray<string>, options: RunOptions = {}): Promise<Result> => start(args, options).done

/** Polls `f` until it returns a value other than `undefined`. */
export const waitFor = async <A>(f: () => Promise<A | undefined> | A | undefined, timeoutMs = 60_000): Promise<A> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await f()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error("timed out waiting")
    await new Promise((r) => setTimeout(r, 25))
  }
}

export const withClient = async <A>(url: string, f: (client: Redis) => Promise<A>): Promise<A> => {
  const client = new Redis(url, { lazyConnect: true })
  await client.connect()
  try {
    return await f(client)
  } finally {
    client.disconnect()
  }
}

/** The `id` field of every entry of a stream. */
export const entryIds = (url: string, stream: string): Promise<Array<string>> =>
  withClient(url, async (client) => {
    const out: Array<string> = []
    let start = "-"
    for (;;) {
      const page = (await client.xrange(stream, start, "+", "COUNT", 5000)) as Array<[string, Array<string>]>
      for (const [, flat] of page) {
        const i = flat.indexOf("id")
        out.push(flat[i + 1]!)
      }
      if (page.length < 5000) return out
      start = `(${page[page.length - 1]![0]}`
    }
  })

let counter = 0
export const unique = (label: string) => `cli.${process.pid}.${Date.now().toString(36)}.${counter++}.${label}`

const quote = (s: string) => `'${s.replace(/'/g, "'\\''")}'`

/**
 * Runs the `redflow` executable the way a user at a terminal does: in a tmux pane (a real pseudo-terminal, stderr a
 * TTY), in the foreground process group, so {@link Terminal.ctrlC} sends SIGINT to that whole group as the key does.
 * stdout goes to a file (the summary, readable in full); the live progress line stays on the terminal. The tmux
 * server has a socket of its own and is killed by {@link Terminal.close}.
 */
export interface Terminal {
  /** Types Ctrl-C into the terminal. */
  readonly ctrlC: () => Promise<void>
  /** What the terminal shows now. */
  readonly screen: () => Promise<string>
  /** What the program wrote on stdout so far. */
  readonly stdout: () => Promise<string>
  /** The exit code of the program, once it exits (rejects after `timeoutMs`). */
  readonly exitCode: (timeoutMs: number) => Promise<number>
  readonly close: () => Promise<void>
}

export const inTerminal = async (args: ReadonlyArray<string>, options: RunOptions = {}): Promise<Terminal> => {
  const dir = await Fs.mkdtemp(Path.join(Os.tmpdir(), "redflow-tty-"))
  const socket = Path.join(dir, "tmux.sock")
  const out = Path.join(dir, "stdout")
  const exit = Path.join(dir, "exit")
  // `trap : INT` keeps the shell alive past the Ctrl-C to record the exit code (a trap, unlike an ignored signal, is
  // not inherited: the program gets SIGINT as usual).
  const script = [
    "trap : INT",
    `${options.installed ? quote(INSTALLED_BIN) : `${quote(process.execPath)} ${quote(BIN)}`} ${args.map(quote).join(" ")} > ${quote(out)}`,
    `echo $? > ${quote(`${exit}.tmp`)}`,
    `mv ${quote(`${exit}.tmp`)} ${quote(exit)}`,
    "sleep 3600"
  ].join("; ")
  const tmux = (...rest: Array<string>) =>
    promisify(execFile)("tmux", ["-S", socket, ...rest], { env: childEnv(options.env) }).then((r) => r.stdout)
  await tmux("new-session", "-d", "-s", "redflow", "-x", "200", "-y", "50", "bash", "-c", script)
  const read = (path: string) => Fs.readFile(path, "utf8").catch(() => undefined)
  return {
    ctrlC: () => tmux("send-keys", "-t", "redflow", "C-c").then(() => undefined),
    screen: () => tmux("capture-pane", "-p", "-t", "redflow"),
    stdout: async () => (await read(out)) ?? "",
    exitCode: async (timeoutMs) =>
      Number(
        await waitFor(() => read(exit), timeoutMs).catch(async () => {
          throw new Error(
            `redflow ${args.join(" ")} did not exit within ${timeoutMs} ms of the Ctrl-C; the terminal shows:\n${await tmux("capture-pane", "-p", "-t", "redflow").catch(() => "")}`
          )
        })
      ),
    close: async () => {
      await tmux("kill-server").catch(() => undefined)
      await Fs.rm(dir, { recursive: true, force: true })
    }
  }
}
