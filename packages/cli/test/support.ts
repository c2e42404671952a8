/** Runs the `redflow` executable as a child process, the way a user does. */
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { Redis } from "ioredis"

export const BIN = fileURLToPath(new URL("../src/bin.ts", import.meta.url))

export interface Result {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

export interface RunOptions {
  /** Extra environment; `REDIS_URL` is removed unless given here. */
  readonly env?: Record<string, string>
  readonly timeoutMs?: number
}

const childEnv = (env: Record<string, string> = {}) => {
  const { REDIS_URL: _ignored, ...rest } = process.env
  return { ...rest, NO_COLOR: "1", ...env }
}

/** Starts the CLI; the caller waits for it with {@link finish}. */
export const start = (args: ReadonlyArray<string>, options: RunOptions = {}) => {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: childEnv(options.env),
    stdio: ["ignore", "pipe", "pipe"]
  })
  const out = { stdout: "", stderr: "" }
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (out.stdout += d))
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (out.stderr += d))
  const done = new Promise<Result>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`redflow ${args.join(" ")} did not finish in ${options.timeoutMs ?? 30_000} ms\n${out.stderr}`))
    }, options.timeoutMs ?? 30_000)
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
export const waitFor = async <A>(f: () => Promise<A | undefined> | A | undefined, timeoutMs = 10_000): Promise<A> => {
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
