/**
 * Use case: feature flags, one of the uses of the contract in docs/DESIGN.md: a flag changed in a PostgreSQL table
 * reaches every running application instance, here five processes, without any of them polling the database.
 *
 * The `flags` table is where operators change flags (`UPDATE flags SET enabled = true WHERE id = 'new-checkout'`,
 * or a percentage rollout). Each application instance holds all flags in memory and answers "is this flag on for
 * this user?" from there; it follows the table's change stream with a plain subscription (XREAD, no consumer group:
 * every instance must see every change, and none is "work" to acknowledge), from the start of the stream, so an
 * instance that starts later loads the flags from the snapshot and the changes since. A rollout decision hashes the
 * flag and the user, so every instance lets the same users in.
 *
 * The instances are real child processes of the example (examples/feature-flags-instance.ts, REDIS_URL and
 * FLAGS_STREAM in their environment); each reports on stdout, as JSON lines, every change it applied, and answers
 * `state` and `decide <flag> <users>` on stdin. The figure is commit → all five instances (the last of the five to
 * apply it, against PostgreSQL's commit timestamp; one machine, one clock): `pnpm example feature-flags`
 * (DATABASE_URL and REDIS_URL, or servers started for the run).
 *
 * Library or `redflow run`: flags are read by many services, so in production the pipeline would be one
 * `redflow run` beside the database and every application only a reader of Redis, as these five processes are. The
 * example runs the pipeline in its own process (examples/harness.ts) so one command shows it all.
 */
import { spawn } from "node:child_process"
import * as Path from "node:path"
import * as Readline from "node:readline"
import { Console, Effect } from "effect"
import type * as Scope from "effect/Scope"
import type { Flag, Report } from "./feature-flags-instance.ts"
import * as Harness from "./harness.ts"
import { isMain } from "./shared.ts"

export const setup: Harness.Setup = {
  name: "feature-flags",
  tables: {
    flags:
      "id text PRIMARY KEY, enabled boolean NOT NULL DEFAULT false, rollout int NOT NULL DEFAULT 100 " +
      "CHECK (rollout BETWEEN 0 AND 100), updated_at timestamptz NOT NULL DEFAULT now()"
  },
  prepare: ({ tables }) => `INSERT INTO ${tables.flags} (id, enabled, rollout) VALUES
    ('new-checkout', false, 100), ('dark-mode', true, 100), ('search-v2', true, 10), ('beta-banner', false, 0)`
}

export { bucket, decide, type Flag, isEnabled, type Report } from "./feature-flags-instance.ts"

// ---------------------------------------------------------------------------------------------------------------
// The instances as seen from the parent
// ---------------------------------------------------------------------------------------------------------------

/** A running instance process. */
export interface InstanceProcess {
  readonly name: string
  readonly pid: number
  /** Each change it applied, by event id: when it applied it and when it was committed. */
  readonly applied: ReadonlyMap<string, { readonly at: number; readonly commit: number }>
  readonly appliedCount: Harness.Progress
  /** Sends a command and waits for its answer. */
  readonly ask: (command: string) => Effect.Effect<Report>
  /** What it wrote on stderr. */
  readonly stderr: () => string
  /** Its exit code, once it exited. */
  readonly exitCode: () => number | null
}

/**
 * Starts one instance as a child process for the life of the scope; at the end its stdin is closed (it stops by
 * itself) and it is killed if it has not exited 5 seconds later.
 */
export const startInstance = (stream: string, redisUrl: string, name: string) =>
  Effect.gen(function* () {
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn(process.execPath, [Path.join(import.meta.dirname, "feature-flags-instance.ts"), name], {
          env: { ...process.env, REDIS_URL: redisUrl, FLAGS_STREAM: stream },
          stdio: ["pipe", "pipe", "pipe"]
        })
      ),
      (child) =>
        Effect.promise(
          () =>
            new Promise<void>((resolve) => {
              if (child.exitCode !== null || child.signalCode !== null) return resolve()
              const timer = setTimeout(() => child.kill("SIGKILL"), 5_000)
              child.once("exit", () => (clearTimeout(timer), resolve()))
              child.stdin.end()
            })
        )
    )
    const applied = new Map<string, { at: number; commit: number }>()
    const appliedCount = Harness.makeCounter()
    const waiting: Array<(report: Report) => void> = []
    let stderr = ""
    let exitCode: number | null = null
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("exit", (code) => (exitCode = code))
    const ready = new Promise<number>((resolve, reject) => {
      child.on("exit", (code) => reject(new Error(`instance ${name} exited (code ${code}): ${stderr.trim()}`)))
      Readline.createInterface({ input: child.stdout }).on("line", (line) => {
        const report = JSON.parse(line) as Report
        if (report.type === "ready") resolve(report.pid)
        else if (report.type === "applied") {
          applied.set(report.event, { at: report.at, commit: report.commit })
          appliedCount.add()
        } else waiting.shift()?.(report)
      })
    })
    const pid = yield* Effect.promise(() => ready)
    return {
      name,
      pid,
      applied,
      appliedCount: { get: appliedCount.get, atLeast: appliedCount.atLeast },
      ask: (command: string) =>
        Effect.promise(
          () =>
            new Promise<Report>((resolve) => {
              waiting.push(resolve)
              child.stdin.write(`${command}\n`)
            })
        ),
      stderr: () => stderr,
      exitCode: () => exitCode
    } satisfies InstanceProcess
  })

/** `count` instances, started together. */
export const startInstances = (
  example: Harness.Example,
  count: number
): Effect.Effect<Array<InstanceProcess>, never, Scope.Scope> =>
  Effect.forEach(
    Array.from({ length: count }, (_, i) => `app-${i + 1}`),
    (name) => startInstance(example.stream("flags"), example.redisUrl, name),
    { concurrency: "unbounded" }
  )

/** Commit → applied by every instance, in ms, of each change all of them applied (snapshot rows left out). */
export const commitToAll = (instances: ReadonlyArray<InstanceProcess>, events: ReadonlyArray<string>) =>
  events.flatMap((id) => {
    const seen = instances.map((i) => i.applied.get(id))
    if (seen.some((s) => s === undefined)) return []
    return [Math.max(0, Math.max(...seen.map((s) => s!.at)) - seen[0]!.commit)]
  })

const byId = (flags: ReadonlyArray<Flag>) => [...flags].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))

/** The flags each instance holds (sorted by id). */
export const states = (instances: ReadonlyArray<InstanceProcess>) =>
  Effect.forEach(instances, (i) => i.ask("state").pipe(Effect.map((r) => (r.type === "state" ? byId(r.flags) : []))))

/** The flags table, as the instances should hold it. */
export const tableFlags = (example: Harness.Example) =>
  example.sql.query<Flag>(`SELECT id, enabled, rollout FROM ${example.tables.flags}`).pipe(Effect.map(byId))

/**
 * `changes` flag changes, one every `everyMs`: rollouts moved, flags switched, now and then a flag created and
 * dropped again. Returns how many changes committed.
 */
export const workload = (example: Harness.Example, changes: number, everyMs: number) =>
  Effect.gen(function* () {
    const flags = example.tables.flags
    for (let n = 1; n <= changes; n++) {
      if (n % 10 === 0) yield* example.sql.query(`INSERT INTO ${flags} (id, enabled) VALUES ($1, true)`, [`tmp-${n}`])
      else if (n % 10 === 1 && n > 1) yield* example.sql.query(`DELETE FROM ${flags} WHERE id = $1`, [`tmp-${n - 1}`])
      else if (n % 2 === 0) {
        yield* example.sql.query(`UPDATE ${flags} SET rollout = $2, updated_at = now() WHERE id = $1`, [
          "search-v2",
          (n * 37) % 101
        ])
      } else yield* example.sql.query(`UPDATE ${flags} SET enabled = NOT enabled WHERE id = 'new-checkout'`)
      if (everyMs > 0) yield* Harness.pause(everyMs)
    }
    return changes
  })

const app = (example: Harness.Example) =>
  Effect.gen(function* () {
    const seeded = (yield* tableFlags(example)).length
    const instances = yield* startInstances(example, 5)
    yield* Console.log(
      `\nFive application instances started as processes (pids ${instances.map((i) => i.pid).join(", ")}), ` +
        `each following ${example.stream("flags")} from its start and holding the flags in memory.`
    )
    yield* Effect.forEach(instances, (i) => i.appliedCount.atLeast(seeded), { discard: true })
    const loaded = (yield* states(instances))[0]!
    yield* Console.log(
      `All five loaded the table's ${seeded} flags: ` +
        loaded.map((f) => `${f.id} ${f.enabled ? `on for ${f.rollout}%` : "off"}`).join(", ") +
        "."
    )
    let applied = seeded
    const change = (statement: string) =>
      Effect.gen(function* () {
        yield* example.sql.query(statement.replace("flags", `${example.tables.flags}`))
        applied++
        yield* Effect.forEach(instances, (i) => i.appliedCount.atLeast(applied), { discard: true })
        const id = [...instances[0]!.applied.keys()].at(-1)!
        const times = instances.map((i) => i.applied.get(id)!.at - i.applied.get(id)!.commit)
        yield* Console.log(`${statement}: applied by all five after ${times.join(", ")} ms.`)
      })
    yield* change(`UPDATE flags SET enabled = true WHERE id = 'new-checkout'`)
    yield* change(`UPDATE flags SET rollout = 50 WHERE id = 'search-v2'`)
    const decisions = yield* Effect.forEach(instances, (i) => i.ask("decide search-v2 1000"))
    yield* Console.log(
      `search-v2 at 50%, users 1-1000: ${decisions.map((d) => (d.type === "decided" ? d.enabled : "?")).join(", ")} ` +
        "let in by the five instances (the same users: the bucket is a hash of flag and user)."
    )

    const changes = 200
    yield* Console.log(`\nWorkload: ${changes} flag changes, one every 10 ms...`)
    const before = new Set(instances[0]!.applied.keys())
    yield* workload(example, changes, 10)
    applied += changes
    yield* Effect.forEach(instances, (i) => i.appliedCount.atLeast(applied), { discard: true })
    const events = [...instances[0]!.applied.keys()].filter((id) => !before.has(id))
    const table = yield* tableFlags(example)
    const agree = (yield* states(instances)).filter((s) => JSON.stringify(s) === JSON.stringify(table)).length
    yield* Console.log(`${agree} of 5 instances hold exactly the table's ${table.length} flags.`)
    yield* Console.log(
      `Commit → all five instances: ${Harness.latencyText(commitToAll(instances, events), "changes")}.`
    )
  })

if (isMain(import.meta)) Harness.main(setup, (example) => Effect.scoped(app(example)))
