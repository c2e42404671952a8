/**
 * Pieces of the `redflow run` crash tests: SQL sessions for the test's own use, writers that record exactly which of
 * their changes committed (also across a server crash, where a COMMIT may go unanswered), the stream read back as
 * per-key change sequences, their comparison with what was committed, and the LSN arithmetic of the slot check.
 */
import * as Fs from "node:fs"
import * as Effect from "effect/Effect"
import * as Session from "@redflow/postgres/internal/Session"
import { runScoped } from "@redflow/testing/internal/Scoped"
import { withClient } from "../support.ts"

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** A small seeded generator (mulberry32): a failing run can be repeated with its seed. */
export const random = (seed: number) => {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return {
    next,
    /** An integer in [min, max]. */
    int: (min: number, max: number) => min + Math.floor(next() * (max - min + 1))
  }
}
export type Random = ReturnType<typeof random>

// ---------------------------------------------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------------------------------------------

export type Row = Session.Row

export interface Sql {
  readonly query: (text: string, params?: ReadonlyArray<unknown>) => Promise<ReadonlyArray<Row>>
  readonly close: () => Promise<void>
}

/** A plain session (values as text); a failed query rejects with the server's message. */
export const openSql = async (url: string, applicationName = "redflow crash test"): Promise<Sql> => {
  const { value, close } = await runScoped(Session.make({ url, applicationName }))
  return { query: (text, params) => Effect.runPromise(value.query(text, params)), close }
}

/** Opens a session, retrying while the server is down or starting up (a crash test's server comes back). */
export const openSqlRetrying = async (url: string, applicationName?: string, timeoutMs = 120_000): Promise<Sql> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      const sql = await openSql(url, applicationName)
      await sql.query("SELECT 1")
      return sql
    } catch (error) {
      if (Date.now() > deadline) {
        throw new Error(`PostgreSQL at ${url} did not take a session within ${timeoutMs} ms: ${String(error)}`)
      }
      await sleep(200)
    }
  }
}

/** Runs one statement on a session of its own, retried while the server is down. */
export const sqlOnce = async (url: string, text: string, params?: ReadonlyArray<unknown>) => {
  const sql = await openSqlRetrying(url)
  try {
    return await sql.query(text, params)
  } finally {
    await sql.close()
  }
}

/** `X/Y` (pg_lsn text) as a number. */
export const parseLsn = (text: string): bigint => {
  const [hi, lo] = text.split("/")
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`)
}

export const formatLsn = (lsn: bigint): string =>
  `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`

/** The commit LSN of a PostgreSQL source's position: its first 16 hex digits. */
export const commitLsnOf = (position: string): bigint => BigInt(`0x${position.slice(0, 16)}`)

export interface SlotRow {
  readonly active: boolean
  readonly activePid: number | undefined
  readonly confirmedFlush: bigint | undefined
}

export const slotRow = async (sql: Sql, slot: string): Promise<SlotRow | undefined> => {
  const rows = await sql.query(
    "SELECT active::text AS active, active_pid::text AS pid, confirmed_flush_lsn::text AS lsn " +
      "FROM pg_replication_slots WHERE slot_name = $1",
    [slot]
  )
  const row = rows[0]
  if (row === undefined) return undefined
  return {
    active: row.active === "true",
    activePid: row.pid == null ? undefined : Number(row.pid),
    confirmedFlush: row.lsn == null ? undefined : parseLsn(row.lsn)
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------------------------------------------

/** A change as the stream shows it per key: the op and the row's `version` after it (before it, for a delete). */
export interface Change {
  readonly op: "c" | "u" | "d"
  readonly version: number
}

/** Per key, its committed changes in commit order. */
export type History = Map<number, Array<Change>>

export interface WriterReport {
  readonly writer: number
  readonly committed: number
  readonly changes: number
  readonly rolledBack: number
  /** Transactions whose outcome was not known (the connection was lost) and that turned out committed. */
  readonly unknownCommitted: number
  /** Transactions whose outcome was not known and that turned out not committed. */
  readonly unknownNotCommitted: number
  /** The messages of the failures behind those unknown outcomes (a test without a crash expects none). */
  readonly errors: ReadonlyArray<string>
  readonly history: History
}

export interface Writer {
  /** Transactions committed so far. */
  readonly committed: () => number
  /** Asks the writer to stop after its current transaction; resolves with what it committed. */
  readonly stop: () => Promise<WriterReport>
}

export interface WriterOptions {
  readonly url: string
  /** The table, quoted as needed: `(id int primary key, version int not null, writer int not null, note text)`. */
  readonly table: string
  readonly writer: number
  /** The writer owns keys `writer * 1000 + 0 … keys - 1`: no other writer touches them. */
  readonly keys: number
  readonly random: Random
  /** Pause between transactions, to keep the rate modest on a shared machine. */
  readonly pauseMs?: number
}

interface Planned {
  readonly key: number
  readonly change: Change
}

/**
 * A writer: transactions of 1 to 3 distinct keys of its own, each an insert (absent row), an update incrementing
 * `version`, or a delete; one in ten rolled back. A key's version only grows, across deletes and re-inserts, so
 * every (op, version) of a key is distinct and a change seen twice is a duplicate. When a statement fails (the server
 * crashed, the connection dropped) the outcome is unknown: the writer reconnects (waiting while the server is down)
 * and reads the first key's row, which differs before and after the transaction, to learn whether it committed.
 */
export const startWriter = (options: WriterOptions): Writer => {
  const { url, table, writer, keys, random: rnd } = options
  const model = new Map<number, { exists: boolean; version: number }>()
  const history: History = new Map()
  const errors: Array<string> = []
  const counts = { committed: 0, changes: 0, rolledBack: 0, unknownCommitted: 0, unknownNotCommitted: 0 }
  let stopping = false

  const apply = (plan: ReadonlyArray<Planned>) => {
    for (const { key, change } of plan) {
      model.set(key, { exists: change.op !== "d", version: change.version })
      const list = history.get(key) ?? []
      list.push(change)
      history.set(key, list)
      counts.changes++
    }
    counts.committed++
  }

  const plan = (): Array<Planned> => {
    const size = rnd.int(1, 3)
    const picked = new Set<number>()
    while (picked.size < size) picked.add(writer * 1000 + rnd.int(0, keys - 1))
    return [...picked].map((key) => {
      const state = model.get(key) ?? { exists: false, version: 0 }
      if (!state.exists) return { key, change: { op: "c", version: state.version + 1 } }
      return rnd.next() < 0.7
        ? { key, change: { op: "u", version: state.version + 1 } }
        : { key, change: { op: "d", version: state.version } }
    })
  }

  const statement = (sql: Sql, { key, change }: Planned) => {
    const note = `w${writer} k${key} v${change.version}`
    switch (change.op) {
      case "c":
        return sql.query(`INSERT INTO ${table} (id, version, writer, note) VALUES ($1, $2, $3, $4)`, [
          key,
          change.version,
          writer,
          note
        ])
      case "u":
        return sql.query(`UPDATE ${table} SET version = version + 1, note = $2 WHERE id = $1`, [key, note])
      case "d":
        return sql.query(`DELETE FROM ${table} WHERE id = $1`, [key])
    }
  }

  /** Whether the row of the transaction's first key is as the transaction leaves it. */
  const committedNow = async (sql: Sql, first: Planned) => {
    const rows = await sql.query(`SELECT version::text AS version FROM ${table} WHERE id = $1`, [first.key])
    return first.change.op === "d" ? rows.length === 0 : rows[0]?.version === String(first.change.version)
  }

  const done = (async () => {
    let sql = await openSqlRetrying(url, `redflow crash writer ${writer}`)
    while (!stopping) {
      const next = plan()
      const rollback = rnd.next() < 0.1
      try {
        await sql.query("BEGIN")
        for (const p of next) await statement(sql, p)
        await sql.query(rollback ? "ROLLBACK" : "COMMIT")
        if (rollback) counts.rolledBack++
        else apply(next)
      } catch (error) {
        errors.push(error instanceof Error ? error.message : String(error))
        await sql.close().catch(() => undefined)
        sql = await openSqlRetrying(url, `redflow crash writer ${writer}`)
        if (rollback) counts.rolledBack++
        else if (await committedNow(sql, next[0]!)) {
          counts.unknownCommitted++
          apply(next)
        } else counts.unknownNotCommitted++
      }
      if (options.pauseMs !== undefined && options.pauseMs > 0) await sleep(options.pauseMs)
    }
    await sql.close()
  })()

  return {
    committed: () => counts.committed,
    stop: async () => {
      stopping = true
      await done
      return { writer, ...counts, errors, history }
    }
  }
}

/** The writers' histories merged (their keys are disjoint). */
export const mergeHistories = (reports: ReadonlyArray<WriterReport>): History => {
  const all: History = new Map()
  for (const r of reports) for (const [key, changes] of r.history) all.set(key, changes)
  return all
}

export const changeCount = (history: History) => [...history.values()].reduce((n, list) => n + list.length, 0)

// ---------------------------------------------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------------------------------------------

export interface Delivered {
  readonly entryId: string
  /** The event's deterministic id (the same on a re-delivery). */
  readonly id: string
  readonly position: string
  readonly key: number
  readonly change: Change
}

interface EventJson {
  readonly id: string
  readonly op: string
  readonly position: string
  readonly before: Record<string, unknown> | null
  readonly after: Record<string, unknown> | null
}

/** Every entry of a stream in stream order, its event decoded to the key and the (op, version). */
export const readDelivered = (redisUrl: string, stream: string): Promise<Array<Delivered>> =>
  withClient(redisUrl, async (client) => {
    const out: Array<Delivered> = []
    let start = "-"
    for (;;) {
      const page = (await client.xrange(stream, start, "+", "COUNT", 5000)) as Array<[string, Array<string>]>
      for (const [entryId, flat] of page) {
        const fields: Record<string, string> = {}
        for (let i = 0; i < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!
        const event = JSON.parse(fields.event!) as EventJson
        const row = event.op === "d" ? event.before : event.after
        if (row === null || (event.op !== "c" && event.op !== "u" && event.op !== "d")) {
          throw new Error(`entry ${entryId} of ${stream} is not a change of the test table: ${fields.event}`)
        }
        out.push({
          entryId,
          id: event.id,
          position: event.position,
          key: Number(row.id),
          change: { op: event.op, version: Number(row.version) }
        })
      }
      if (page.length < 5000) return out
      start = `(${page[page.length - 1]![0]}`
    }
  })

export const distinctIds = (delivered: ReadonlyArray<Delivered>) => new Set(delivered.map((d) => d.id)).size

export interface Comparison {
  /** Changes committed and not in the stream (after removing re-deliveries), as `key op version`. */
  readonly missing: ReadonlyArray<string>
  /** Entries that repeat an event already in the stream (same event id). */
  readonly duplicates: number
  /** Changes in the stream that were never committed, as `key op version`. */
  readonly unexpected: ReadonlyArray<string>
  /** Keys whose de-duplicated sequence differs from the committed one, with both (first few). */
  readonly differing: ReadonlyArray<{
    readonly key: number
    readonly committed: string
    readonly delivered: string
  }>
  /** Places where an entry's position is not above the previous entry's. */
  readonly positionsNotIncreasing: number
}

const show = (changes: ReadonlyArray<Change>) => changes.map((c) => `${c.op}${c.version}`).join(" ")

/**
 * The stream against the committed history. Re-deliveries (an event id seen before) are counted and set aside; what
 * is left must be, per key, exactly the committed sequence in order: nothing missing, nothing never committed.
 * Exactly-once then also asks for no duplicates and strictly increasing positions.
 */
export const compare = (committed: History, delivered: ReadonlyArray<Delivered>): Comparison => {
  const seen = new Set<string>()
  const perKey = new Map<number, Array<Change>>()
  let duplicates = 0
  let positionsNotIncreasing = 0
  let previous = ""
  for (const d of delivered) {
    if (d.position <= previous) positionsNotIncreasing++
    previous = d.position
    if (seen.has(d.id)) {
      duplicates++
      continue
    }
    seen.add(d.id)
    const list = perKey.get(d.key) ?? []
    list.push(d.change)
    perKey.set(d.key, list)
  }
  const missing: Array<string> = []
  const unexpected: Array<string> = []
  const differing: Array<{ key: number; committed: string; delivered: string }> = []
  const keys = new Set([...committed.keys(), ...perKey.keys()])
  for (const key of [...keys].sort((a, b) => a - b)) {
    const want = committed.get(key) ?? []
    const got = perKey.get(key) ?? []
    const label = (c: Change) => `${key} ${c.op} ${c.version}`
    const gotLabels = new Set(got.map(label))
    const wantLabels = new Set(want.map(label))
    for (const c of want) if (!gotLabels.has(label(c))) missing.push(label(c))
    for (const c of got) if (!wantLabels.has(label(c))) unexpected.push(label(c))
    if (show(want) !== show(got) && differing.length < 5) {
      differing.push({ key, committed: show(want), delivered: show(got) })
    }
  }
  return { missing, duplicates, unexpected, differing, positionsNotIncreasing }
}

// ---------------------------------------------------------------------------------------------------------------
// The checkpoint file and the slot
// ---------------------------------------------------------------------------------------------------------------

/** The pipeline's position in a checkpoint file (`{ version: 1, checkpoints: { <pipeline>: <position> } }`). */
export const readCheckpoint = (path: string, pipeline: string): string | undefined => {
  let text: string
  try {
    text = Fs.readFileSync(path, "utf8")
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined
    throw error
  }
  // Written to a temporary file and renamed over: a read sees the old or the new file whole.
  const content = JSON.parse(text) as { version: number; checkpoints: Record<string, string> }
  return content.checkpoints[pipeline]
}

export interface SlotSample {
  /** `confirmed_flush_lsn`, read first. */
  readonly confirmedFlush: bigint
  /** The checkpoint, read after it (`undefined`: none yet). */
  readonly checkpoint: string | undefined
}

/**
 * The slot check. A restart of the pipeline streams the slot from `confirmed_flush_lsn` on: PostgreSQL decodes a
 * transaction only when its commit record starts at or after that point, and a change's position starts with that
 * commit LSN. So nothing can be lost as long as, at every moment, `confirmed_flush_lsn ≤ commit LSN of the first
 * change above the checkpoint`: every change not yet checkpointed is still in the slot.
 *
 * Each sample reads the slot FIRST and the checkpoint file AFTER it. The checkpoint only moves forward, so the one
 * read later is at or past the one in force when the slot was read, and the first change above it commits at or after
 * the first change above the one in force: the bound computed from the later read is at least the true bound. A
 * correct pipeline therefore never fails this check (reading the checkpoint first would make the bound too small
 * whenever a checkpoint and its acknowledgement happened between the two reads), and a pipeline that acknowledges a
 * transaction before it is checkpointed fails it whenever a sample falls inside that gap.
 *
 * "The first change above the checkpoint" is taken from the stream as it is at the end, when every committed change
 * is there (the comparison checks that separately). Returns the samples that break the bound.
 */
export const slotViolations = (
  samples: ReadonlyArray<SlotSample>,
  delivered: ReadonlyArray<Delivered>
): Array<{ readonly sample: SlotSample; readonly bound: string; readonly nextPosition: string }> => {
  const positions = [...new Set(delivered.map((d) => d.position))].sort()
  const firstAbove = (checkpoint: string | undefined) => {
    if (checkpoint === undefined) return positions[0]
    // Positions have one width: string order is their order.
    let lo = 0
    let hi = positions.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (positions[mid]! <= checkpoint) lo = mid + 1
      else hi = mid
    }
    return positions[lo]
  }
  const out: Array<{ sample: SlotSample; bound: string; nextPosition: string }> = []
  for (const sample of samples) {
    const next = firstAbove(sample.checkpoint)
    if (next === undefined) continue
    const bound = commitLsnOf(next)
    if (sample.confirmedFlush > bound) out.push({ sample, bound: formatLsn(bound), nextPosition: next })
  }
  return out
}
