/**
 * `redflow run` through crashes, as an operator meets them: the pipeline process SIGKILLed and started again with the
 * same flags and checkpoint file, the PostgreSQL server crashing (`pg_ctl stop -m immediate`) under a running
 * pipeline, and Redis paused (SIGSTOP) or killed and restarted from its append-only file. Three writers change rows
 * of their own keys all the while and record exactly what committed; the stream, read back per key as (op, version)
 * sequences, must hold every committed change — once each in exactly-once, at least once in at-least-once. During the
 * kills, the slot's confirmed point is sampled against the checkpoint file: it must never pass a change that is not
 * checkpointed yet (see `slotViolations`).
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as PostgresTestServer from "@redflow/testing/PostgresTestServer"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { start, waitFor, withClient } from "./support.ts"
import {
  type Comparison,
  changeCount,
  compare,
  distinctIds,
  mergeHistories,
  openSqlRetrying,
  random,
  readCheckpoint,
  readDelivered,
  type SlotSample,
  slotRow,
  slotViolations,
  sleep,
  sqlOnce,
  startWriter,
  type WriterReport
} from "./support/runCrash.ts"

let pg: PostgresTestServer.SpawnedServer
let redis: RedisTestServer.SpawnedServer
const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "redflow-run-crash-"))
/** Every random choice (kill delays, writers' operations) follows from it: set RUN_CRASH_SEED to repeat a run. */
const seed = Number(process.env.RUN_CRASH_SEED ?? Date.now() % 2 ** 31)
const rnd = random(seed)

beforeAll(async () => {
  ;[pg, redis] = await Promise.all([PostgresTestServer.spawnPostgresServer(), RedisTestServer.spawnRedisServer()])
})

afterAll(async () => {
  await Promise.all([pg?.stop(), redis?.stop()])
  Fs.rmSync(dir, { recursive: true, force: true })
})

type Guarantee = "exactly-once" | "at-least-once"

let names = 0
/** Table, slot, publication, pipeline and stream names of one test. */
const scenario = async (label: string, guarantee: Guarantee, redisUrl: string) => {
  const name = `crash_${label}_${process.pid}_${names++}`
  await sqlOnce(
    pg.url,
    `CREATE TABLE ${name} (id int PRIMARY KEY, version int NOT NULL, writer int NOT NULL, note text);` +
      // The whole old row on delete: a delete's `before` carries the version it removed.
      `ALTER TABLE ${name} REPLICA IDENTITY FULL`
  )
  const stream = `crash.${name}`
  const checkpoint = Path.join(dir, `${name}.checkpoints.json`)
  const args = [
    "--json",
    "run",
    "--source",
    pg.url,
    "--tables",
    `public.${name}`,
    "--redis",
    redisUrl,
    "--stream",
    stream,
    "--key",
    "${key.id}",
    "--checkpoint",
    checkpoint,
    "--pipeline",
    name,
    "--guarantee",
    guarantee,
    // The writers start once the slot streams; nothing is there before it to read as a snapshot.
    "--snapshot",
    "never"
  ]
  return { name, table: name, slot: name, stream, checkpoint, args, redisUrl, guarantee }
}
type Scenario = Awaited<ReturnType<typeof scenario>>

type Started = ReturnType<typeof start>

/** Waits until a run has passed its start-up checks (its first line), failing with its output if it exited. */
const untilStarted = (run: Started) =>
  waitFor(() => {
    if (run.out.stderr.includes("redflow: pipeline ")) return true
    if (run.child.exitCode !== null || run.child.signalCode !== null) {
      throw new Error(`redflow run exited (${run.child.exitCode ?? run.child.signalCode}) at start:\n${run.out.stderr}`)
    }
    return undefined
  }, 150_000)

/** Waits until a connection streams from the slot (the slot then exists at a consistent point). */
const untilStreaming = async (run: Started, slot: string) => {
  const sql = await openSqlRetrying(pg.url)
  try {
    await waitFor(async () => {
      if (run.child.exitCode !== null) throw new Error(`redflow run exited early:\n${run.out.stderr}`)
      return (await slotRow(sql, slot))?.active === true ? true : undefined
    }, 150_000)
  } finally {
    await sql.close()
  }
}

const xlen = (url: string, stream: string) => withClient(url, (c) => c.xlen(stream))

/** Waits until the stream has grown by `by` entries past `from` (the pipeline is delivering). */
const untilGrown = (url: string, stream: string, from: number, by: number) =>
  waitFor(async () => ((await xlen(url, stream)) >= from + by ? true : undefined), 150_000)

const startWriters = (s: Scenario) =>
  [0, 1, 2].map((writer) =>
    startWriter({
      url: pg.url,
      table: s.table,
      writer,
      keys: 40,
      random: random(seed + 1 + writer),
      pauseMs: 5
    })
  )

/**
 * Stops the writers, waits (bounded) until the stream holds as many distinct events as were committed, SIGTERMs the
 * run and reads the stream. A bounded wait that runs out is not a failure by itself: the comparison then says what is
 * missing.
 */
const finish = async (s: Scenario, writers: ReadonlyArray<ReturnType<typeof startWriter>>, run: Started) => {
  const reports = await Promise.all(writers.map((w) => w.stop()))
  const committed = mergeHistories(reports)
  const expected = changeCount(committed)
  // Bounded twice: 120 s in all, and 30 s without a new event (a pipeline that lost changes waits for nothing).
  const deadline = Date.now() + 120_000
  let seen = -1
  let grewAt = Date.now()
  while (Date.now() < deadline && Date.now() - grewAt < 30_000 && run.child.exitCode === null) {
    const count = distinctIds(await readDelivered(s.redisUrl, s.stream))
    if (count >= expected) break
    if (count > seen) {
      seen = count
      grewAt = Date.now()
    }
    await sleep(500)
  }
  const aliveAtEnd = run.child.exitCode === null && run.child.signalCode === null
  run.child.kill("SIGTERM")
  const result = await run.done
  const delivered = await readDelivered(s.redisUrl, s.stream)
  return { reports, committed, expected, delivered, result, aliveAtEnd, comparison: compare(committed, delivered) }
}

const describeRun = (
  s: Scenario,
  reports: ReadonlyArray<WriterReport>,
  expected: number,
  comparison: Comparison,
  stderr: string
) =>
  [
    `seed ${seed} (RUN_CRASH_SEED), ${s.guarantee}, stream ${s.stream}: ${expected} changes committed by ` +
      reports
        .map(
          (r) =>
            `writer ${r.writer}: ${r.committed} tx (${r.rolledBack} rolled back, ` +
            `${r.unknownCommitted}/${r.unknownNotCommitted} unknown committed/not)`
        )
        .join("; "),
    `missing ${comparison.missing.length}: ${comparison.missing.slice(0, 10).join(", ")}`,
    `duplicates ${comparison.duplicates}; never committed ${comparison.unexpected.length}: ${comparison.unexpected.slice(0, 10).join(", ")}`,
    `positions not increasing: ${comparison.positionsNotIncreasing}`,
    ...comparison.differing.map((d) => `key ${d.key}: committed [${d.committed}] delivered [${d.delivered}]`),
    "--- redflow stderr (last run) ---",
    stderr.slice(-4_000)
  ].join("\n")

const expectExactlyOnce = (comparison: Comparison, context: string) => {
  expect(comparison.missing, context).toEqual([])
  expect(comparison.unexpected, context).toEqual([])
  expect(comparison.differing, context).toEqual([])
  expect(comparison.duplicates, context).toBe(0)
  expect(comparison.positionsNotIncreasing, context).toBe(0)
}

describe("redflow run: SIGKILL of the pipeline process, restarted with the same flags and checkpoint file", () => {
  for (const guarantee of ["exactly-once", "at-least-once"] as const) {
    it(`${guarantee}: 5 kills at random points while 3 writers run; every committed change lands${guarantee === "exactly-once" ? " once" : ""}, and the slot never passes the checkpoint`, async () => {
      const s = await scenario(guarantee === "exactly-once" ? "kill_eo" : "kill_alo", guarantee, redis.url)
      let run = start(s.args)
      await untilStreaming(run, s.slot)
      const writers = startWriters(s)

      // The slot's confirmed point, then the checkpoint file, every 100 ms (the order matters: see slotViolations).
      const samples: Array<SlotSample> = []
      let sampling = true
      const sampler = (async () => {
        const sql = await openSqlRetrying(pg.url)
        while (sampling) {
          const slot = await slotRow(sql, s.slot)
          const checkpoint = readCheckpoint(s.checkpoint, s.name)
          if (slot?.confirmedFlush !== undefined) samples.push({ confirmedFlush: slot.confirmedFlush, checkpoint })
          await sleep(100)
        }
        await sql.close()
      })()

      const kills: Array<{ delayMs: number; signal: string | null; code: number | null; delivered: number }> = []
      const logs: Array<string> = []
      for (let i = 0; i < 5; i++) {
        await untilStarted(run)
        const before = await xlen(s.redisUrl, s.stream)
        const delayMs = rnd.int(500, 3_000)
        await sleep(delayMs)
        run.child.kill("SIGKILL")
        const killed = await run.done
        kills.push({
          delayMs,
          signal: killed.signal,
          code: killed.code,
          delivered: (await xlen(s.redisUrl, s.stream)) - before
        })
        logs.push(killed.stderr)
        run = start(s.args)
      }
      await untilStarted(run)
      await untilGrown(s.redisUrl, s.stream, await xlen(s.redisUrl, s.stream), 100)
      const { reports, expected, delivered, result, comparison } = await finish(s, writers, run)
      sampling = false
      await sampler
      const context = describeRun(s, reports, expected, comparison, result.stderr)
      console.info(
        `${context.split("\n--- redflow")[0]}\nkills: ${JSON.stringify(kills)}; ${samples.length} slot samples`
      )

      // Each kill found the process running (it had not exited by itself), and the last run drained and exited 0.
      expect(
        kills.map((k) => k.signal),
        logs.join("\n---\n").slice(-4_000)
      ).toEqual(["SIGKILL", "SIGKILL", "SIGKILL", "SIGKILL", "SIGKILL"])
      expect(result.code, result.stderr).toBe(0)
      // The kills came while it was delivering, and restarts resumed from a checkpoint.
      expect(kills.some((k) => k.delivered > 0)).toBe(true)
      expect([...logs, result.stderr].some((l) => l.includes("resuming after checkpoint"))).toBe(true)
      // The writers committed a fair number of changes and none of their statements failed (no server crashed).
      expect(expected).toBeGreaterThan(300)
      expect(reports.flatMap((r) => r.errors)).toEqual([])

      // The slot: never past the first change not yet checkpointed (checked first: a slot ahead of the checkpoint is
      // the cause of changes missing after a restart). The check had something to bite on: samples with a checkpoint,
      // and a slot that moved.
      const violations = slotViolations(samples, delivered)
      expect(
        violations.slice(0, 5).map((v) => ({
          confirmedFlush: v.sample.confirmedFlush.toString(16),
          checkpoint: v.sample.checkpoint,
          nextPosition: v.nextPosition,
          bound: v.bound
        })),
        `${violations.length} of ${samples.length} slot samples past the first change not yet checkpointed`
      ).toEqual([])
      expect(samples.filter((x) => x.checkpoint !== undefined).length).toBeGreaterThan(10)
      expect(new Set(samples.map((x) => x.confirmedFlush)).size).toBeGreaterThan(2)

      if (guarantee === "exactly-once") expectExactlyOnce(comparison, context)
      else {
        // Nothing missing, nothing never committed; a re-delivery repeats whole events (same id), in order per key.
        expect(comparison.missing, context).toEqual([])
        expect(comparison.unexpected, context).toEqual([])
        expect(comparison.differing, context).toEqual([])
      }
    })
  }
})

describe("redflow run: the PostgreSQL server crashes under a running pipeline", () => {
  it("pg_ctl stop -m immediate, restarted after 1 s: the same process reconnects and every committed change lands once (exactly-once)", async () => {
    const s = await scenario("pgcrash", "exactly-once", redis.url)
    const run = start(s.args)
    await untilStreaming(run, s.slot)
    const writers = startWriters(s)
    await untilGrown(s.redisUrl, s.stream, 0, 300)

    await pg.crash()
    await sleep(1_000)
    await pg.restart()
    // The pipeline delivers again: what the writers commit after the restart comes through.
    await untilGrown(s.redisUrl, s.stream, await xlen(s.redisUrl, s.stream), 300)
    const { reports, expected, result, aliveAtEnd, comparison } = await finish(s, writers, run)
    const context = describeRun(s, reports, expected, comparison, result.stderr)
    console.info(context.split("\n--- redflow")[0])

    // It survived the crash without being restarted, retried the connection, and drained on SIGTERM.
    expect(aliveAtEnd, context).toBe(true)
    expect(result.code, context).toBe(0)
    expect(result.stderr).toMatch(/reconnecting in .*resuming from the slot/)
    // The crash hit the writers mid-transaction (their statements failed, outcomes resolved by reading back).
    expect(reports.flatMap((r) => r.errors).length).toBeGreaterThan(0)
    expectExactlyOnce(comparison, context)
  })
})

describe("redflow run: a Redis outage under a running pipeline (appendonly yes, appendfsync always)", () => {
  for (const fault of ["SIGSTOP for 5 s", "SIGKILL and restart"] as const) {
    it(`${fault}: the process survives and every committed change lands once (exactly-once)`, async () => {
      const redisDir = Fs.mkdtempSync(Path.join(dir, "redis-"))
      const args = ["--dir", redisDir, "--appendonly", "yes", "--appendfsync", "always"]
      const servers = [await RedisTestServer.spawnRedisServer({ args })]
      try {
        const first = servers[0]!
        const s = await scenario(fault === "SIGSTOP for 5 s" ? "redis_stop" : "redis_kill", "exactly-once", first.url)
        const run = start(s.args)
        await untilStreaming(run, s.slot)
        const writers = startWriters(s)
        await untilGrown(s.redisUrl, s.stream, 0, 300)
        const atFault = await xlen(s.redisUrl, s.stream)

        if (fault === "SIGSTOP for 5 s") {
          process.kill(first.pid, "SIGSTOP")
          await sleep(5_000)
          process.kill(first.pid, "SIGCONT")
        } else {
          process.kill(first.pid, "SIGKILL")
          await waitFor(() => (PostgresTestServer.isAlive(first.pid) ? undefined : true), 30_000)
          await sleep(1_000)
          servers.push(await RedisTestServer.spawnRedisServer({ port: first.port, args }))
          // Everything acknowledged before the kill is still there (fsync on every write).
          expect(await xlen(s.redisUrl, s.stream)).toBeGreaterThanOrEqual(atFault)
        }
        await untilGrown(s.redisUrl, s.stream, await xlen(s.redisUrl, s.stream), 300)
        const { reports, expected, result, aliveAtEnd, comparison } = await finish(s, writers, run)
        const context = describeRun(s, reports, expected, comparison, result.stderr)
        console.info(context.split("\n--- redflow")[0])

        expect(aliveAtEnd, context).toBe(true)
        expect(result.code, context).toBe(0)
        expect(reports.flatMap((r) => r.errors)).toEqual([])
        expectExactlyOnce(comparison, context)
      } finally {
        await Promise.all(servers.map((server) => server.stop()))
      }
    })
  }
})
