/**
 * `pnpm example <name>`: runs `examples/<name>.ts` with this Node (24), passing on its arguments, its output and its
 * exit code. Without a name, or with one that is not an example, it lists the examples and exits with code 2.
 *
 * The examples fed by PostgreSQL (examples/harness.ts) use `DATABASE_URL` and `REDIS_URL` when set, else start
 * their own servers; the others need only Redis.
 */
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"

const here = import.meta.dirname

/** Modules that are not examples: the harness, helpers, parts of an example, this runner. */
const NOT_EXAMPLES = new Set(["harness", "shared", "run", "feature-flags-instance"])

/** What each example shows, in a line; an example missing here is listed with the start of its doc comment. */
const ABOUT: Readonly<Record<string, string>> = {
  "cache-invalidation": "PostgreSQL: a read-through Redis cache kept consistent with its table; stale window p99",
  "job-queue": "PostgreSQL: jobs table rows shared by competing workers, dedup by event id, poison jobs dead-lettered",
  "session-sync":
    "PostgreSQL: session rows changed on one app instance, in the memory of three others; convergence p99",
  "feature-flags": "PostgreSQL: flag changes reaching five running application processes; commit-to-all p99",
  "live-notifications":
    "PostgreSQL: a table's changes pushed to browsers over WebSocket and SSE, resumed after a reconnect; commit → page p99",
  "rate-limiting": "PostgreSQL: per-key counters in three API instances' memory; how far and how long they disagree",
  dashboard: "PostgreSQL: a live KPI page with a Chart.js chart, equal to the database's own aggregates",
  "postgres-to-redis": "the PostgreSQL source into Redis Streams, the program of packages/postgres/README.md",
  "consumer-go": "the contract's Go consumer loop, written with Redflow",
  "consumer-python": "the contract's Python consumer loop and its duplicate handling, written with Redflow",
  "consumer-rust": "the contract's Rust consumer loop, written with Redflow",
  demo: "the sink in a few lines: synthetic events into Redis Streams",
  "using-it": 'the README\'s "Using it" program'
}

/** Every example and what it shows. */
export const examples = (): Array<{ readonly name: string; readonly about: string }> =>
  Fs.readdirSync(here)
    .filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts") && !NOT_EXAMPLES.has(f.slice(0, -3)))
    .sort()
    .map((file) => {
      const name = file.slice(0, -3)
      const known = ABOUT[name]
      if (known !== undefined) return { name, about: known }
      const doc = /^\/\*\*([\s\S]*?)\*\//.exec(Fs.readFileSync(Path.join(here, file), "utf8"))?.[1] ?? ""
      const text = doc
        .split("\n")
        .map((line) => line.replace(/^\s*\* ?/, "").trim())
        .join(" ")
        .trim()
      return { name, about: text.length > 100 ? `${text.slice(0, 97)}...` : text }
    })

const list = () => {
  const all = examples()
  const width = Math.max(...all.map((e) => e.name.length))
  return all.map((e) => `  ${e.name.padEnd(width)}  ${e.about}`).join("\n")
}

const [name, ...args] = process.argv.slice(2)
const known = examples().some((e) => e.name === name)
if (!known) {
  process.stderr.write(
    `${name === undefined ? "Which example?" : `No example named ${JSON.stringify(name)}.`} ` +
      `Run one with pnpm example <name>:\n${list()}\n`
  )
  process.exit(2)
}

const child = spawn(process.execPath, [Path.join(here, `${name}.ts`), ...args], { stdio: "inherit" })
// Ctrl-C at a terminal reaches the example too (same process group): it stops in order, and its exit code is ours.
process.on("SIGINT", () => {})
process.on("SIGTERM", () => child.kill("SIGTERM"))
child.on("exit", (code, signal) => {
  process.exit(code ?? (signal === null ? 1 : 128 + (signal === "SIGKILL" ? 9 : signal === "SIGTERM" ? 15 : 2)))
})
