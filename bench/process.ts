/**
 * The whole process (issue 16): `redflow produce --events N --payload-bytes 1024`, timed from spawn to exit, against
 * a plain script doing the same work as its own process (`process/plain.ts`: build comparable events,
 * `JSON.stringify`, XADD pipelines of 500), in both guarantees. Contenders alternate within each round; each ratio
 * is the plain script's wall time over redflow's in the same round, and the figure is the median of the rounds.
 *
 *   pnpm exec node bench/process.ts [--events N] [--rounds N] [--via sources|compiled] [--app DIR] [--before DIR]
 *                                   [--profile] [--json]
 *
 * `--profile` runs `redflow produce` once per guarantee under `--cpu-prof` and prints its summary instead.
 * `redflow` is the workspace's `packages/cli/src/bin.ts` on its type-stripped sources (`--via sources`, the default),
 * or the compiled bin as npm installs it (`--via compiled`: the packages packed and installed into a temp app by
 * `src/CompiledApp.ts`; `--app DIR` reuses such an app). `pnpm bench` runs this as its `process` section. Redis:
 * `REDIS_URL` when set, else a `redis-server` spawned on a free port.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs/promises"
import * as Os from "node:os"
import * as Path from "node:path"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as CompiledApp from "./src/CompiledApp.ts"
import { format as formatProfile, summarize as summarizeProfile } from "./src/ProfileSummary.ts"
import { connect, deleteMatching, totalLength } from "./src/RedisClient.ts"
import { median } from "./src/Stats.ts"

const argv = process.argv.slice(2)
const option = (name: string, fallback: number) => {
  const i = argv.indexOf(name)
  return i >= 0 ? Number(argv[i + 1]) : fallback
}
const events = option("--events", 600_000)
const rounds = option("--rounds", 3)
const PAYLOAD = 1024
const benchDir = import.meta.dirname
const via = (() => {
  const i = argv.indexOf("--via")
  const v = i >= 0 ? argv[i + 1] : argv.includes("--app") ? "compiled" : "sources"
  if (v !== "sources" && v !== "compiled") throw new Error(`--via takes sources or compiled, got ${v}`)
  return v
})()
const appIndex = argv.indexOf("--app")
const bin =
  via === "sources"
    ? CompiledApp.sourcesBinOf(CompiledApp.ROOT)
    : CompiledApp.binOf(
        appIndex >= 0
          ? Path.resolve(argv[appIndex + 1]!)
          : CompiledApp.install((line) => process.stderr.write(`[process] ${line}\n`))
      )
// `--before DIR`: also time DIR's `redflow produce` (another checkout, say main) in the same rounds, at-least-once.
const beforeIndex = argv.indexOf("--before")
const beforeBin = beforeIndex >= 0 ? CompiledApp.sourcesBinOf(Path.resolve(argv[beforeIndex + 1]!)) : undefined

const server = process.env.REDIS_URL === undefined ? await RedisTestServer.spawnRedisServer() : undefined
const url = process.env.REDIS_URL ?? server!.url
const admin = await connect(url)

const run = (args: ReadonlyArray<string>): Promise<number> =>
  new Promise((resolve, reject) => {
    const started = performance.now()
    const child = ChildProcess.spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] })
    let stderr = ""
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
    child.on("error", reject)
    child.on("exit", (code) =>
      code === 0
        ? resolve(performance.now() - started)
        : reject(new Error(`${args.join(" ")} exited ${code}\n${stderr}`))
    )
  })

type Contender = "plain" | "at-least-once" | "exactly-once" | "before at-least-once"
const argsOf = (c: Contender, prefix: string, extra: ReadonlyArray<string> = []): Array<string> =>
  c === "plain"
    ? [Path.join(benchDir, "process", "plain.ts"), url, prefix, String(events), String(PAYLOAD)]
    : [
        ...extra,
        c === "before at-least-once" ? beforeBin! : bin,
        "produce",
        "--redis",
        url,
        "--stream",
        `${prefix}.\${source.table}`,
        "--events",
        String(events),
        "--payload-bytes",
        String(PAYLOAD),
        "--guarantee",
        c === "before at-least-once" ? "at-least-once" : c,
        "--pipeline",
        prefix
      ]

const timed = async (c: Contender, prefix: string): Promise<number> => {
  const ms = await run(argsOf(c, prefix))
  const written = await totalLength(
    admin,
    ["customers", "orders", "payments"].map((t) => `${prefix}.${t}`)
  )
  if (written !== events) throw new Error(`${c}: ${written} entries written, expected ${events}`)
  await deleteMatching(admin, `${prefix}*`)
  return ms
}

const runId = Date.now().toString(36)
const load = () => Os.loadavg()[0]!.toFixed(2)
try {
  if (argv.includes("--profile")) {
    const dir = Path.join(benchDir, "results")
    await Fs.mkdir(dir, { recursive: true })
    for (const c of ["at-least-once", "exactly-once"] as const) {
      const name = `process-${c}-${runId}.cpuprofile`
      const prefix = `bench.${runId}.prof.${c}`
      await run(argsOf(c, prefix, ["--cpu-prof", "--cpu-prof-dir", dir, "--cpu-prof-name", name]))
      await deleteMatching(admin, `${prefix}*`)
      const profile = JSON.parse(await Fs.readFile(Path.join(dir, name), "utf8"))
      process.stdout.write(`## redflow produce ${c}, ${events} events (bench/results/${name})\n\n`)
      process.stdout.write(`${formatProfile(summarizeProfile(profile))}\n\n`)
    }
  } else {
    const contenders: Array<Contender> = ["plain", "at-least-once", "exactly-once"]
    if (beforeBin !== undefined) contenders.push("before at-least-once")
    const loadBefore = load()
    await timed("plain", `bench.${runId}.warm`) // warm the server and the file cache
    const ms: Record<Contender, Array<number>> = {
      plain: [],
      "at-least-once": [],
      "exactly-once": [],
      "before at-least-once": []
    }
    const ratios: Record<Exclude<Contender, "plain">, Array<number>> = {
      "at-least-once": [],
      "exactly-once": [],
      "before at-least-once": []
    }
    for (let r = 0; r < rounds; r++) {
      const order = contenders.map((_, i) => contenders[(i + r) % contenders.length]!)
      const round: Partial<Record<Contender, number>> = {}
      for (const c of order) {
        round[c] = await timed(c, `bench.${runId}.${r}.${c}`)
        ms[c].push(round[c]!)
        process.stderr.write(`[process] round ${r + 1}/${rounds} ${c}: ${round[c]!.toFixed(0)} ms (load ${load()})\n`)
      }
      for (const c of contenders) if (c !== "plain") ratios[c].push(round.plain! / round[c]!)
    }
    const result = {
      via,
      events,
      payloadBytes: PAYLOAD,
      rounds,
      load: [loadBefore, load()],
      contenders: contenders.map((c) => ({
        contender: c,
        medianMs: Math.round(median(ms[c])),
        eventsPerSecond: Math.round((events * 1000) / median(ms[c])),
        ratio: c === "plain" ? 1 : Number(median(ratios[c]).toFixed(3)),
        perRound: c === "plain" ? [] : ratios[c].map((x) => Number(x.toFixed(2)))
      }))
    }
    if (argv.includes("--json")) process.stdout.write(`${JSON.stringify(result)}\n`)
    else {
      process.stdout.write(
        `Whole process (${via}), ${events} events of ${PAYLOAD} B, median of ${rounds} rounds, load ${result.load.join(" → ")}\n\n` +
          `| contender | ms | events/s | ratio (target ≥ 1.5) | per round |\n|---|---|---|---|---|\n` +
          result.contenders
            .map(
              (c) =>
                `| ${c.contender === "plain" ? "plain script" : `redflow produce ${c.contender}`} | ${c.medianMs} | ${c.eventsPerSecond} | ${c.ratio.toFixed(3)} | ${c.perRound.join(" ")} |`
            )
            .join("\n") +
          "\n"
      )
    }
  }
} finally {
  admin.disconnect()
  await server?.stop()
}
