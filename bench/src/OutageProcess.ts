/**
 * The outage as a user meets it: `redflow produce --rate 10000` (the compiled bin as npm installs it, or the
 * workspace's sources) as its own process, its RSS read from `/proc/<pid>/status` every 100 ms, and Redis stopped
 * with SIGSTOP for `outageSeconds` after `beforeSeconds`. `produce` is given as many events as the whole run offers
 * (`rate` × (before + outage + after)), so it exits on its own once it has caught up and written them all; every one
 * must be in the streams (at-least-once: retried batches may add copies, never fewer).
 *
 * `nodeOptions` runs the same process with extra Node flags (e.g. `--max-semi-space-size=16`): V8 sizes the young
 * generation from the machine's memory, so on a large machine a busy process keeps up to 64 MiB of it.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Payload from "./Payload.ts"
import { connect, deleteMatching, totalLength } from "./RedisClient.ts"

export interface Options {
  readonly url: string
  /** The redis-server's pid (SIGSTOP / SIGCONT). */
  readonly pid: number
  /** The `redflow` bin: `dist/bin.js` of an installed app, or the workspace's `src/bin.ts`. */
  readonly bin: string
  readonly nodeOptions: ReadonlyArray<string>
  readonly rate: number
  readonly beforeSeconds: number
  readonly outageSeconds: number
  readonly afterSeconds: number
  readonly prefix: string
}

export interface Result {
  readonly nodeOptions: string
  readonly events: number
  readonly entries: number
  readonly exitCode: number | null
  readonly rssMB: {
    readonly peakBefore: number
    readonly peakDuringOutage: number
    /** From Redis coming back until the process exited (catching up, then the rest of the run). */
    readonly peakAfter: number
    /** The kernel's high-water mark of the process's RSS (VmHWM), read last. */
    readonly highWater: number
  }
}

/** VmRSS and VmHWM in MiB, or undefined once the process is gone. */
const statusOf = (pid: number): { rss: number; hwm: number } | undefined => {
  try {
    const text = Fs.readFileSync(`/proc/${pid}/status`, "utf8")
    const kib = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? NaN)
    return { rss: kib("VmRSS") / 1024, hwm: kib("VmHWM") / 1024 }
  } catch {
    return undefined
  }
}

export const run = async (options: Options, log: (message: string) => void): Promise<Result> => {
  const events = options.rate * (options.beforeSeconds + options.outageSeconds + options.afterSeconds)
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "redflow-outage-process-"))
  const child = ChildProcess.spawn(
    process.execPath,
    [
      ...options.nodeOptions,
      options.bin,
      "produce",
      "--redis",
      options.url,
      "--stream",
      `${options.prefix}.\${source.table}`,
      "--events",
      String(events),
      "--rate",
      String(options.rate),
      "--payload-bytes",
      String(Payload.PAYLOAD_BYTES),
      "--tables",
      Payload.TABLES.join(","),
      "--checkpoint",
      Path.join(dir, "checkpoint.json"),
      "--pipeline",
      options.prefix,
      "--durability",
      "ignore",
      "--json"
    ],
    { stdio: ["ignore", "ignore", "pipe"] }
  )
  let stderr = ""
  child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)))
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
  let phase: "before" | "outage" | "after" = "before"
  const peak = { before: 0, outage: 0, after: 0 }
  let hwm = 0
  const sampler = setInterval(() => {
    const s = statusOf(child.pid!)
    if (s === undefined || !Number.isFinite(s.rss)) return
    peak[phase] = Math.max(peak[phase], s.rss)
    if (Number.isFinite(s.hwm)) hwm = Math.max(hwm, s.hwm)
  }, 100)
  const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
  let exitCode: number | null
  try {
    await sleep(options.beforeSeconds * 1000)
    log(
      `steady at ${options.rate}/s for ${options.beforeSeconds} s, RSS ${peak.before.toFixed(0)} MB; SIGSTOP of Redis`
    )
    process.kill(options.pid, "SIGSTOP")
    phase = "outage"
    await sleep(options.outageSeconds * 1000)
    process.kill(options.pid, "SIGCONT")
    phase = "after"
    log(`Redis back after ${options.outageSeconds} s; peak RSS during the outage ${peak.outage.toFixed(0)} MB`)
    exitCode = await exited
  } finally {
    clearInterval(sampler)
    try {
      process.kill(options.pid, "SIGCONT")
    } catch {
      // gone
    }
    if (child.exitCode === null) child.kill("SIGKILL")
    Fs.rmSync(dir, { recursive: true, force: true })
  }
  const client = await connect(options.url)
  const entries = await totalLength(client, Payload.streamsOf(options.prefix))
  await deleteMatching(client, `${options.prefix}*`)
  client.disconnect()
  if (exitCode !== 0) throw new Error(`redflow produce exited ${exitCode} in the outage run:\n${stderr}`)
  if (entries < events) throw new Error(`the outage run lost events: ${entries} entries for ${events} events`)
  const r = (x: number) => Math.round(x * 10) / 10
  return {
    nodeOptions: options.nodeOptions.join(" "),
    events,
    entries,
    exitCode,
    rssMB: { peakBefore: r(peak.before), peakDuringOutage: r(peak.outage), peakAfter: r(peak.after), highWater: r(hwm) }
  }
}
