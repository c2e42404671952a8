/**
 * The figures of the examples fed by PostgreSQL (examples/harness.ts), with larger workloads than the examples
 * print and the tests run: one PostgreSQL and one Redis (DATABASE_URL and REDIS_URL, else started here), then each
 * example's workload in turn, and a markdown table of the results on stdout (about a minute).
 *
 *   pnpm exec node bench/examples.ts [--scale 2]
 *
 * - cache-invalidation: the stale window, commit → eviction done, of each update (20 rows, 4 writers, 4 readers);
 *   stale reads counted (must be 0).
 * - session-sync: convergence, commit → in memory on the three other instances (four instances in this process,
 *   each with its own connections and consumer group).
 * - feature-flags: commit → applied by all five instance processes, one change every 10 ms.
 * - job-queue: jobs per second from the first insert to the last acknowledgement, three workers, dedup on.
 *
 * Latencies are against PostgreSQL's commit timestamp (`source.ts_ms`, milliseconds) on the same machine.
 */
import * as Os from "node:os"
import { parseArgs } from "node:util"
import { Effect, Fiber, References } from "effect"
import type * as Scope from "effect/Scope"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as PostgresTestServer from "@redflow/testing/PostgresTestServer"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Cache from "../examples/cache-invalidation.ts"
import * as Flags from "../examples/feature-flags.ts"
import * as Harness from "../examples/harness.ts"
import * as Jobs from "../examples/job-queue.ts"
import * as Sessions from "../examples/session-sync.ts"
import { allAcknowledged } from "../examples/shared.ts"

const { values } = parseArgs({ options: { scale: { type: "string", default: "1" } } })
const scale = Number(values.scale)

interface Row {
  readonly example: string
  readonly figure: string
  readonly samples: ReadonlyArray<number>
  readonly note: string
}

const latencyRow = (example: string, figure: string, samples: ReadonlyArray<number>, note: string): Row => ({
  example,
  figure,
  samples,
  note
})

const perSecond = (count: number, startedAt: number) => Math.round((count * 1000) / Math.max(1, Date.now() - startedAt))

const progress = (line: string) => Effect.sync(() => process.stderr.write(`${line}\n`))

/** One example on the servers, with the application's Redis connection. */
const within = <A, E>(
  setup: Harness.Setup,
  urls: { readonly databaseUrl: string; readonly redisUrl: string },
  body: (example: Harness.Example) => Effect.Effect<A, E, RedisConnection.RedisConnection | Scope.Scope>
) =>
  Effect.scoped(
    Effect.gen(function* () {
      const example = yield* Harness.make(setup, urls)
      return yield* example
        .supervise(body(example))
        .pipe(Effect.provide(RedisConnection.layer({ url: urls.redisUrl, clientName: "bench-examples" })))
    })
  )

const load = () => Os.loadavg()[0]!.toFixed(1)

const program = Effect.gen(function* () {
  const loadBefore = load()
  const databaseUrl = process.env.DATABASE_URL || (yield* PostgresTestServer.make()).url
  const redisUrl = (yield* RedisTestServer.make()).url
  const urls = { databaseUrl, redisUrl }
  const rows: Array<Row> = []

  const updates = 5_000 * scale
  yield* progress(`cache-invalidation: ${updates} updates...`)
  rows.push(
    yield* within(Cache.setup, urls, (example) =>
      Effect.gen(function* () {
        const cache = yield* Cache.makeCache(example)
        const started = Date.now()
        const r = yield* Cache.workload(example, cache, { rows: 20, updates, writers: 4, readers: 4 })
        return latencyRow(
          "cache-invalidation",
          "stale window, commit → eviction",
          r.staleWindows,
          `${perSecond(updates, started)} updates/s; ${r.reads} reads, ${Math.round((100 * r.hits) / r.reads)}% ` +
            `hits, ${r.stale.length} stale`
        )
      })
    )
  )

  const users = 1_000 * scale
  yield* progress(`session-sync: ${users} users...`)
  rows.push(
    yield* within(Sessions.setup, urls, (example) =>
      Effect.gen(function* () {
        const writers: Sessions.Writers = new Map()
        const instances: Array<Sessions.Instance> = []
        for (const name of ["a", "b", "c", "d"]) instances.push(yield* Sessions.instance(example, name, writers))
        const started = Date.now()
        const committed = yield* Sessions.workload(instances, { users, updatesPerUser: 3, logouts: users / 2 })
        const rate = perSecond(committed, started)
        yield* Effect.forEach(instances, (i) => i.applied.atLeast(committed), { discard: true })
        return latencyRow(
          "session-sync",
          "convergence, commit → 3 other instances",
          Sessions.convergence(instances, writers),
          `4 instances; ${committed} changes by 8 users at once, ${rate} changes/s`
        )
      })
    )
  )

  const changes = 1_000 * scale
  yield* progress(`feature-flags: ${changes} changes...`)
  rows.push(
    yield* within(Flags.setup, urls, (example) =>
      Effect.gen(function* () {
        const instances = yield* Flags.startInstances(example, 5)
        yield* Effect.forEach(instances, (i) => i.appliedCount.atLeast(4), { discard: true })
        const before = new Set(instances[0]!.applied.keys())
        yield* Flags.workload(example, changes, 10)
        yield* Effect.forEach(instances, (i) => i.appliedCount.atLeast(4 + changes), { discard: true })
        const events = [...instances[0]!.applied.keys()].filter((id) => !before.has(id))
        return latencyRow(
          "feature-flags",
          "commit → all 5 instance processes",
          Flags.commitToAll(instances, events),
          `one change every 10 ms`
        )
      })
    )
  )

  const jobs = 5_000 * scale
  yield* progress(`job-queue: ${jobs} jobs...`)
  const jobRate = yield* within(Jobs.setup, urls, (example) =>
    Effect.gen(function* () {
      const options = Jobs.queueOf(example, { minIdle: "5 seconds" })
      const started = Date.now()
      const running = yield* Effect.forkChild(Jobs.workers(options))
      yield* Jobs.enqueue(example, jobs, 50)
      yield* example.written.atLeast(jobs)
      yield* allAcknowledged(options.stream, "mailer")
      const seconds = (Date.now() - started) / 1000
      yield* Fiber.interrupt(running)
      const sent = yield* Jobs.outbox(options)
      return { rate: Math.round(jobs / seconds), sent: sent.length, distinct: new Set(sent.map((s) => s.job)).size }
    })
  )

  const lines = [
    "| example | figure | p50 ms | p99 ms | max ms | samples | notes |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    ...rows.map(
      (r) =>
        `| ${r.example} | ${r.figure} | ${Harness.percentile(r.samples, 50)} | ${Harness.percentile(r.samples, 99)} | ` +
        `${Harness.percentile(r.samples, 100)} | ${r.samples.length} | ${r.note} |`
    ),
    `| job-queue | jobs/s, first insert → last ack | | | | ${jobs} | ${jobRate.rate} jobs/s through 3 workers, ` +
      `${jobRate.sent} emails for ${jobRate.distinct} jobs |`
  ]
  process.stdout.write(
    `${lines.join("\n")}\n\n${Os.cpus().length} cores; load average ${loadBefore} at the start, ${load()} at the end.\n`
  )
})

// The library's info logs (slot created, snapshot read) go to stdout with Effect's logger: keep the table alone there.
Effect.runPromise(Effect.scoped(program).pipe(Effect.provideService(References.MinimumLogLevel, "Warn"))).then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`bench/examples.ts failed: ${error instanceof Error ? error.message : String(error)}\n`)
    process.exit(1)
  }
)
