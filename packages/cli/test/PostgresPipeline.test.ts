/**
 * PostgreSQL into Redis Streams end to end, in process: a real server with logical decoding, the PostgreSQL source,
 * the exactly-once Redis sink, its checkpoint and the slot's acknowledgement, wired as `redflow run` wires them.
 * Every check reads what a user reads: the entries in Redis, the checkpoint, `pg_replication_slots`, the tables.
 */
import { assert, layer } from "@effect/vitest"
import type * as CdcEvent from "@redflow/core/CdcEvent"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import { PostgresTestServer, RedisTestServer } from "@redflow/testing"
import { Effect, Fiber, Layer, Option } from "effect"
import {
  canonical,
  confirmedFlush,
  connect,
  type Delivered,
  isChangePosition,
  lastEntry,
  lsnOfPosition,
  formatLsn,
  type Pipeline,
  positionsIncrease,
  random,
  type Random,
  readStream,
  slotState,
  type Sql,
  start,
  streamLength,
  uniqueName,
  waitFor
} from "./support/postgresPipeline.ts"

type Image = Record<string, unknown>

/** A change a writer committed, as the event that must carry it. */
interface Expected {
  readonly table: string
  readonly op: "c" | "u" | "d"
  readonly before: Image | null
  readonly after: Image | null
  readonly unchanged: ReadonlyArray<string> | undefined
  /** The writer's transaction, and the change's place in it (0-based) and among its table's changes (1-based). */
  readonly tx: string
  readonly index: number
  readonly perTable: number
}

const shape = (e: {
  readonly op: string
  readonly before: unknown
  readonly after: unknown
  readonly unchanged?: ReadonlyArray<string> | undefined
}) => ({ op: e.op, before: e.before, after: e.after, unchanged: e.unchanged })

/** The row keys an event or change touches: the key of `before` and of `after` (two for a key change). */
const keysOf = (table: string, e: { readonly before: Image | null; readonly after: Image | null }) => {
  const keys = new Set<string>()
  if (e.before !== null) keys.add(`${table}:${String(e.before.id)}`)
  if (e.after !== null) keys.add(`${table}:${String(e.after.id)}`)
  return [...keys]
}

const groupBy = <A>(items: Iterable<A>, keys: (a: A) => ReadonlyArray<string>) => {
  const out = new Map<string, Array<A>>()
  for (const item of items) {
    for (const key of keys(item)) {
      const list = out.get(key)
      if (list === undefined) out.set(key, [item])
      else list.push(item)
    }
  }
  return out
}

/**
 * Compares, key by key, the events in Redis with the changes committed: same keys, and for each the same sequence
 * of ops and images. Returns the event that carries each change.
 */
const compareByKey = (expected: ReadonlyArray<Expected>, delivered: ReadonlyArray<{ table: string; d: Delivered }>) => {
  const want = groupBy(expected, (e) => keysOf(e.table, e))
  const got = groupBy(delivered, (x) => keysOf(x.table, x.d.event))
  const extra = [...got.keys()].filter((k) => !want.has(k))
  assert.deepStrictEqual(extra.slice(0, 5), [], `${extra.length} keys in Redis that no committed change touched`)
  const missing = [...want.keys()].filter((k) => !got.has(k))
  assert.deepStrictEqual(missing.slice(0, 5), [], `${missing.length} committed keys with no event in Redis`)
  const carrier = new Map<Expected, CdcEvent.CdcEvent>()
  for (const [key, changes] of want) {
    const events = got.get(key)!
    const a = events.map((x) => canonical(shape(x.d.event)))
    const b = changes.map((c) => canonical(shape(c)))
    if (a.join("\n") !== b.join("\n")) {
      assert.deepStrictEqual(
        events.map((x) => shape(x.d.event)),
        changes.map(shape),
        `the events of ${key} in Redis (actual) differ from the changes committed (expected)`
      )
    }
    changes.forEach((c, i) => carrier.set(c, events[i]!.d.event))
  }
  return carrier
}

/** Every committed transaction is one `transaction.id`, its events numbered 1..n in commit order, per table too. */
const checkTransactions = (expected: ReadonlyArray<Expected>, carrier: Map<Expected, CdcEvent.CdcEvent>) => {
  const byTx = new Map<string, Array<Expected>>()
  for (const e of expected) {
    const list = byTx.get(e.tx)
    if (list === undefined) byTx.set(e.tx, [e])
    else list.push(e)
  }
  const ids = new Map<string, string>()
  const eventsPerId = new Map<string, number>()
  for (const event of carrier.values()) {
    const id = event.transaction?.id ?? "none"
    eventsPerId.set(id, (eventsPerId.get(id) ?? 0) + 1)
  }
  for (const [tx, changes] of byTx) {
    const events = changes.map((c) => carrier.get(c)!)
    const id = events[0]!.transaction?.id
    assert.isString(id, `transaction ${tx}: no transaction metadata`)
    const other = ids.get(id!)
    assert.isUndefined(other, `transactions ${other} and ${tx} share transaction.id ${id}`)
    ids.set(id!, tx)
    assert.strictEqual(eventsPerId.get(id!), changes.length, `events with transaction.id ${id} (writer's ${tx})`)
    changes.forEach((c, i) => {
      const t = events[i]!.transaction
      const where = `transaction ${tx}, change ${c.index} (${c.op} on ${c.table})`
      assert.strictEqual(t?.id, id, `${where}: transaction.id`)
      assert.strictEqual(t?.total_order, c.index + 1, `${where}: total_order`)
      assert.strictEqual(t?.data_collection_order, c.perTable, `${where}: data_collection_order`)
      assert.strictEqual(events[i]!.source.txId, events[0]!.source.txId, `${where}: source.txId`)
    })
  }
}

/** Applies r/c/u/d in stream order to rebuild a table; each impossible step (a lost or doubled row) is reported. */
const rebuild = (events: ReadonlyArray<CdcEvent.CdcEvent>) => {
  const rows = new Map<string, Image>()
  const problems: Array<string> = []
  const snapshotted = new Set<string>()
  for (const e of events) {
    const key = String((e.after ?? e.before)?.id)
    switch (e.op) {
      case "r":
        if (snapshotted.has(key)) problems.push(`row ${key} read twice by the snapshot (${e.position})`)
        if (rows.has(key)) problems.push(`snapshot row ${key} after a change of it (${e.position})`)
        snapshotted.add(key)
        rows.set(key, e.after!)
        break
      case "c":
        if (rows.has(key)) problems.push(`insert of ${key}, which is already there (${e.position})`)
        rows.set(key, e.after!)
        break
      case "u": {
        const old = String(e.before?.id)
        if (!rows.has(old)) problems.push(`update of ${old}, which is not there: lost at the handoff? (${e.position})`)
        rows.delete(old)
        rows.set(String(e.after?.id), e.after!)
        break
      }
      case "d":
        if (!rows.has(key)) problems.push(`delete of ${key}, which is not there (${e.position})`)
        rows.delete(key)
        break
      case "t":
        rows.clear()
        break
    }
  }
  return { rows, problems }
}

const layers = Layer.mergeAll(PostgresTestServer.layer(), RedisTestServer.layer())

const servers = Effect.gen(function* () {
  const pg = yield* PostgresTestServer.PostgresTestServer
  const redis = yield* RedisTestServer.RedisTestServer
  return { pgUrl: pg.url, redisUrl: redis.url }
})

/** The names one test uses: tables, slot, publication, pipeline and stream prefix, unique to it. */
const names = (label: string) => {
  const id = uniqueName(label)
  return { slot: id, publication: id, pipeline: id, prefix: `e2e.${id}`, table: (t: string) => `${t}_${id}` }
}

const untilSlot = (admin: Sql, slot: string, pipeline: Pipeline) =>
  waitFor(
    `replication slot ${slot}`,
    Effect.map(slotState(admin, slot), (s) => (s === "absent" ? undefined : true)),
    { pipeline }
  )

/** Waits until the newest entry of `stream` is the change of row `id` with this op. */
const untilLast = (redisUrl: string, stream: string, id: unknown, pipeline: Pipeline, op = "c") => {
  let seen = "nothing"
  return waitFor(
    () => `${op} of row ${String(id)} as the newest entry of ${stream} (the newest is ${seen})`,
    Effect.map(lastEntry(redisUrl, stream), (last) => {
      const image = last?.event.after ?? last?.event.before
      seen = last === undefined ? "none" : `${last.event.op} of ${JSON.stringify(image)} at ${last.event.position}`
      return last !== undefined && last.event.op === op && image?.id === id ? last : undefined
    }),
    { pipeline, timeoutMs: 90_000 }
  )
}

const readAll = (redisUrl: string, stream: string) =>
  Effect.map(readStream(redisUrl, stream), (entries) => {
    const wrong = positionsIncrease(stream, entries)
    assert.isUndefined(wrong, wrong)
    return entries
  })

// ---------------------------------------------------------------------------------------------------------------
// Test 1's workload: four writers, two tables, every kind of value
// ---------------------------------------------------------------------------------------------------------------

const TWO_53_PLUS_1 = 9007199254740993n
const BIG_TEXT = 10_000
const ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"

const bigText = (r: Random) => {
  const length = BIG_TEXT + r.int(2000)
  let s = ""
  for (let i = 0; i < length; i++) s += ALPHABET[r.int(64)]
  return s
}
const isBig = (v: unknown) => typeof v === "string" && v.length >= BIG_TEXT

const timestamp = (r: Random) => {
  const ms = Date.UTC(1970, 0, 1) + r.int(130 * 365) * 86_400_000 + r.int(86_400_000)
  const micros = r.chance(0.2) ? "000" : String(r.int(1000)).padStart(3, "0")
  const iso = new Date(ms).toISOString()
  return r.chance(0.1) ? iso.replace(/\.\d{3}Z$/, ".000000Z") : iso.replace("Z", `${micros}Z`)
}

const TAGS = ["a", "b,c", 'quote"d', "back\\slash", "", "NULL", "ünï ✓", null, "{brace}", " space "]

/** Column values of table A (default replica identity), as the events must carry them. */
const columnA: Record<string, (r: Random) => unknown> = {
  big: (r) =>
    r.pick([
      "9223372036854775807",
      "-9223372036854775808",
      "9007199254740993",
      "0",
      String(BigInt(r.int(2 ** 31)) * 4294967296n + BigInt(r.int(2 ** 31)))
    ]),
  amount: (r) =>
    r.pick([
      "0",
      "-1.50",
      "12345678901234567890.123456789",
      "NaN",
      "Infinity",
      "-Infinity",
      null,
      `${r.int(100000)}.${String(r.int(1000)).padStart(3, "0")}`
    ]),
  at: (r) => (r.chance(0.15) ? null : timestamp(r)),
  doc: (r) =>
    r.pick([
      null,
      {
        n: r.int(1000),
        s: 'with "quotes", ünïcode ✓ and \\',
        list: [1, null, true, "x"],
        nested: { deep: [r.int(9)] }
      },
      [],
      "just a string",
      42.5,
      { "": r.int(5) }
    ]),
  raw: (r) => {
    if (r.chance(0.15)) return null
    const bytes = Buffer.alloc(r.int(17))
    for (let i = 0; i < bytes.length; i++) bytes[i] = r.int(256)
    return bytes.toString("base64")
  },
  tags: (r) => (r.chance(0.15) ? null : Array.from({ length: r.int(5) }, () => r.pick(TAGS))),
  note: (r) => (r.chance(0.1) ? null : r.chance(0.35) ? bigText(r) : `note ${r.int(1e6)} ünï`),
  n: (r) => (r.chance(0.1) ? null : r.int(2 ** 31) - 2 ** 30)
}

/** Table B (REPLICA IDENTITY FULL). */
const columnB: Record<string, (r: Random) => unknown> = {
  label: (r) => (r.chance(0.1) ? null : `label ${r.int(1000)}`),
  body: (r) => (r.chance(0.1) ? null : r.chance(0.4) ? bigText(r) : `body ${r.int(1000)}`),
  qty: (r) => (r.chance(0.1) ? null : r.int(100000)),
  price: (r) => {
    if (r.chance(0.1)) return null
    const cents = r.int(10_000_000) - 1_000_000
    const abs = Math.abs(cents)
    return `${cents < 0 ? "-" : ""}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`
  },
  seen: (r) => (r.chance(0.2) ? null : Array.from({ length: r.int(4) }, () => (r.chance(0.2) ? null : timestamp(r))))
}

/** A value as a query parameter. */
const param = (column: string, value: unknown): unknown => {
  if (value === null) return null
  switch (column) {
    case "doc":
      return JSON.stringify(value)
    case "raw":
      return `\\x${Buffer.from(value as string, "base64").toString("hex")}`
    case "price":
      // Sent without its trailing zero where it has one: numeric(12,2) gives the scale back.
      return String(Number(value))
    default:
      return value
  }
}

interface TableSpec {
  readonly name: string
  readonly full: boolean
  readonly columns: Record<string, (r: Random) => unknown>
  /** The out-of-line column, absent from `after` when unchanged (default identity only). */
  readonly toasted: string
}

interface Log {
  readonly committed: Array<Expected>
  /** Keys of rows only rolled-back transactions inserted. */
  readonly rolledBack: Array<string>
  readonly counts: Record<string, number>
}

/**
 * One writer: transactions of 1-5 statements on both tables (insert, update, key change, delete), committed, rolled
 * back, or failing on a duplicate key; every key it touches is its own, so its order is each key's commit order.
 */
const writer = (
  sql: Sql,
  w: number,
  a: TableSpec,
  b: TableSpec,
  transactions: number,
  log: Log,
  bulkAt: number | undefined
) =>
  Effect.gen(function* () {
    const r = random(1000 + w)
    const rows = { [a.name]: new Map<string, Image>(), [b.name]: new Map<string, Image>() }
    let fresh = 1
    const newId = (t: TableSpec) => {
      const j = BigInt(w + 4 * fresh++)
      return t === a ? String(TWO_53_PLUS_1 + j) : Number(j)
    }
    const count = (what: string) => (log.counts[what] = (log.counts[what] ?? 0) + 1)

    for (let n = 0; n < transactions; n++) {
      const tx = `w${w}.${n}`
      const staged = { [a.name]: new Map(rows[a.name]), [b.name]: new Map(rows[b.name]) }
      const changes: Array<Expected> = []
      const perTable = new Map<string, number>()
      const inserted: Array<string> = []
      const record = (
        t: TableSpec,
        op: Expected["op"],
        before: Image | null,
        after: Image | null,
        unchanged?: Array<string>
      ) => {
        const p = (perTable.get(t.name) ?? 0) + 1
        perTable.set(t.name, p)
        changes.push({ table: t.name, op, before, after, unchanged, tx, index: changes.length, perTable: p })
      }
      const ending = r.chance(0.7) ? "commit" : r.chance(0.5) ? "rollback" : "fail"
      const statements = 1 + r.int(5)
      const failAt = r.int(statements)
      yield* sql.run("BEGIN")

      if (n === bulkAt) {
        // One transaction of 100,002 changes: a row of B, 100,000 rows of A in one statement, the row of B again.
        const id = newId(b)
        const row: Image = { id, label: "bulk", body: null, qty: 0, price: "0.00", seen: null }
        yield* sql.run(`INSERT INTO ${b.name} (id, label, qty, price) VALUES ($1, 'bulk', 0, 0)`, [id])
        record(b, "c", null, row)
        const base = TWO_53_PLUS_1 + 10_000_000n
        yield* sql.run(
          `INSERT INTO ${a.name} (id, big, amount, note, n) SELECT $1::int8 + g, 9007199254740993 + g, ` +
            `(g || '.25')::numeric, 'bulk ' || g, g FROM generate_series(1, 100000) g`,
          [String(base)]
        )
        for (let g = 1; g <= 100_000; g++) {
          const after: Image = {
            id: String(base + BigInt(g)),
            big: String(TWO_53_PLUS_1 + BigInt(g)),
            amount: `${g}.25`,
            at: null,
            doc: null,
            raw: null,
            tags: null,
            note: `bulk ${g}`,
            n: g
          }
          record(a, "c", null, after)
          staged[a.name]!.set(String(after.id), after)
        }
        yield* sql.run(`UPDATE ${b.name} SET qty = 1 WHERE id = $1`, [id])
        record(b, "u", row, { ...row, qty: 1 })
        yield* sql.run("COMMIT")
        staged[b.name]!.set(String(id), { ...row, qty: 1 })
        rows[a.name] = staged[a.name]!
        rows[b.name] = staged[b.name]!
        log.committed.push(...changes)
        count("bulk")
        continue
      }

      let failed = false
      for (let s = 0; s < statements; s++) {
        if (ending === "fail" && s === failAt) {
          // A duplicate key aborts the transaction; nothing of it may appear.
          const existing = [...staged[a.name]!.keys()][0]
          const result = yield* Effect.result(
            existing === undefined
              ? sql.attempt("SELECT 1 / 0")
              : sql.attempt(`INSERT INTO ${a.name} (id) VALUES ($1)`, [existing])
          )
          assert.isTrue(result._tag === "Failure", "the failing statement succeeded")
          failed = true
          break
        }
        const t = r.chance(0.5) ? a : b
        const table = staged[t.name]!
        const keys = [...table.keys()]
        const kind = keys.length === 0 || r.chance(0.35) ? "insert" : r.pick(["update", "update", "key", "delete"])
        const cols = Object.keys(t.columns)
        if (kind === "insert") {
          const id = newId(t)
          const row: Image = { id }
          for (const c of cols) row[c] = t.columns[c]!(r)
          yield* sql.run(
            `INSERT INTO ${t.name} (id, ${cols.join(", ")}) VALUES (${["id", ...cols].map((_, i) => `$${i + 1}`).join(", ")})`,
            [id, ...cols.map((c) => param(c, row[c]))]
          )
          table.set(String(id), row)
          inserted.push(`${t.name}:${id}`)
          record(t, "c", null, row)
          count(`insert ${t === a ? "A" : "B"}`)
          continue
        }
        const key = r.pick(keys)
        const old = table.get(key)!
        if (kind === "delete") {
          yield* sql.run(`DELETE FROM ${t.name} WHERE id = $1`, [old.id])
          table.delete(key)
          record(t, "d", t.full ? old : { id: old.id }, null)
          count("delete")
          continue
        }
        // An update of 1-3 columns, the key too for a key change.
        const set = new Set<string>()
        const wanted = 1 + r.int(3)
        while (set.size < wanted) set.add(r.pick(cols))
        const row: Image = { ...old }
        for (const c of set) row[c] = t.columns[c]!(r)
        if (kind === "key") row.id = newId(t)
        const assigned = kind === "key" ? ["id", ...set] : [...set]
        yield* sql.run(
          `UPDATE ${t.name} SET ${assigned.map((c, i) => `${c} = $${i + 1}`).join(", ")} WHERE id = $${assigned.length + 1}`,
          [...assigned.map((c) => (c === "id" ? row.id : param(c, row[c]))), old.id]
        )
        table.delete(key)
        table.set(String(row.id), row)
        const toastUnchanged = !set.has(t.toasted) && isBig(old[t.toasted])
        if (t.full) {
          record(t, "u", old, row)
          if (toastUnchanged) count("B update, big value unchanged")
        } else if (toastUnchanged) {
          const { [t.toasted]: _omitted, ...sent } = row
          record(t, "u", { id: kind === "key" ? old.id : row.id }, sent, [t.toasted])
          count("A update, big value unchanged")
        } else {
          record(t, "u", { id: kind === "key" ? old.id : row.id }, row)
        }
        count(kind === "key" ? "key change" : "update")
      }

      if (ending === "commit" && !failed) {
        yield* sql.run("COMMIT")
        rows[a.name] = staged[a.name]!
        rows[b.name] = staged[b.name]!
        log.committed.push(...changes)
        count("committed")
      } else {
        yield* sql.run("ROLLBACK")
        log.rolledBack.push(...inserted)
        count(failed ? "failed" : "rolled back")
      }

      if (r.chance(0.05) && rows[a.name]!.size > 0) {
        // A failing statement outside a transaction: nothing changes.
        const [id] = rows[a.name]!.keys()
        const result = yield* Effect.result(sql.attempt(`UPDATE ${a.name} SET n = 1 / 0 WHERE id = $1`, [id]))
        assert.isTrue(result._tag === "Failure", "division by zero succeeded")
        count("failed autocommit")
      }
    }
    return rows
  })

layer(layers, { excludeTestServices: true })("PostgreSQL into Redis Streams, in process", (it) => {
  it.effect(
    "four concurrent writers on two tables: per key, the events in Redis are the committed changes with every value exact",
    () =>
      Effect.gen(function* () {
        const { pgUrl, redisUrl } = yield* servers
        const n = names("mixed")
        const admin = yield* connect(pgUrl)
        const a: TableSpec = { name: n.table("a"), full: false, columns: columnA, toasted: "note" }
        const b: TableSpec = { name: n.table("b"), full: true, columns: columnB, toasted: "body" }
        yield* sql(admin, [
          `CREATE TABLE ${a.name} (id int8 PRIMARY KEY, big int8, amount numeric, at timestamptz, doc jsonb, ` +
            `raw bytea, tags text[], note text, n int4)`,
          `ALTER TABLE ${a.name} ALTER COLUMN note SET STORAGE EXTERNAL`,
          `CREATE TABLE ${b.name} (id int4 PRIMARY KEY, label text, body text, qty int4, price numeric(12,2), ` +
            `seen timestamptz[])`,
          `ALTER TABLE ${b.name} ALTER COLUMN body SET STORAGE EXTERNAL`,
          `ALTER TABLE ${b.name} REPLICA IDENTITY FULL`
        ])
        const { store } = yield* CheckpointStore.makeMemory()
        const pipeline = yield* start({
          source: { url: pgUrl, tables: [a.name, b.name], slot: n.slot, publication: n.publication },
          redisUrl,
          pipeline: n.pipeline,
          prefix: n.prefix,
          store
        })
        yield* untilSlot(admin, n.slot, pipeline)

        const log: Log = { committed: [], rolledBack: [], counts: {} }
        const sessions = yield* Effect.all([0, 1, 2, 3].map(() => connect(pgUrl)))
        const finals = yield* Effect.all(
          sessions.map((session, w) => writer(session, w, a, b, 40, log, w === 0 ? 5 : undefined)),
          { concurrency: "unbounded" }
        )
        // The last transaction: a row in each table, so their arrival says everything before has arrived.
        const sentinelA: Image = {
          id: "-1",
          big: null,
          amount: null,
          at: null,
          doc: null,
          raw: null,
          tags: null,
          note: "end",
          n: null
        }
        const sentinelB: Image = { id: -1, label: "end", body: null, qty: null, price: null, seen: null }
        yield* sql(admin, [
          "BEGIN",
          `INSERT INTO ${a.name} (id, note) VALUES (-1, 'end')`,
          `INSERT INTO ${b.name} (id, label) VALUES (-1, 'end')`,
          "COMMIT"
        ])
        log.committed.push(
          {
            table: a.name,
            op: "c",
            before: null,
            after: sentinelA,
            unchanged: undefined,
            tx: "end",
            index: 0,
            perTable: 1
          },
          {
            table: b.name,
            op: "c",
            before: null,
            after: sentinelB,
            unchanged: undefined,
            tx: "end",
            index: 1,
            perTable: 1
          }
        )
        yield* untilLast(redisUrl, `${n.prefix}.${a.name}`, "-1", pipeline)
        yield* untilLast(redisUrl, `${n.prefix}.${b.name}`, -1, pipeline)
        yield* Fiber.interrupt(pipeline.fiber)

        // The workload did what it says (else the checks below prove less than they claim).
        for (const what of [
          "committed",
          "rolled back",
          "failed",
          "failed autocommit",
          "key change",
          "delete",
          "bulk",
          "A update, big value unchanged",
          "B update, big value unchanged"
        ]) {
          assert.isAbove(
            log.counts[what] ?? 0,
            0,
            `the workload has no "${what}" (counts: ${JSON.stringify(log.counts)})`
          )
        }
        assert.isAbove(log.rolledBack.length, 0)
        // The model agrees with the database.
        for (const t of [a, b]) {
          const ids = (yield* admin.run(`SELECT id::text AS id FROM ${t.name}`)).map((row) => row.id).sort()
          const model = [...finals.flatMap((f) => [...f[t.name]!.keys()]), t === a ? "-1" : "-1"].sort()
          assert.deepStrictEqual(ids.length, model.length, `rows of ${t.name}`)
          assert.deepStrictEqual(ids, model, `rows of ${t.name}`)
        }

        const entriesA = yield* readAll(redisUrl, `${n.prefix}.${a.name}`)
        const entriesB = yield* readAll(redisUrl, `${n.prefix}.${b.name}`)
        const delivered = [
          ...entriesA.map((d) => ({ table: a.name, d })),
          ...entriesB.map((d) => ({ table: b.name, d }))
        ]
        for (const { d } of delivered) assert.isTrue(isChangePosition(d.event.position), d.event.position)
        assert.strictEqual(delivered.length, log.committed.length, "entries in Redis against changes committed")
        const carrier = compareByKey(log.committed, delivered)
        checkTransactions(log.committed, carrier)
        const deliveredKeys = new Set(delivered.flatMap((x) => keysOf(x.table, x.d.event)))
        const leaked = log.rolledBack.filter((key) => deliveredKeys.has(key))
        assert.deepStrictEqual(leaked, [], "rows inserted only by rolled-back transactions, found in Redis")
        assert.strictEqual(yield* streamLength(redisUrl, "redflow.dead-letter"), 0, "dead-lettered entries")
      }),
    { timeout: 300_000 }
  )

  it.effect(
    "a snapshot of 20,000 rows in chunks of 1,000 while writers change them: each row once as r, then its changes; the state rebuilt from Redis is the tables' final contents",
    () =>
      Effect.gen(function* () {
        const { pgUrl, redisUrl } = yield* servers
        const n = names("snap")
        const admin = yield* connect(pgUrl)
        const sa = n.table("sa")
        const sb = n.table("sb")
        yield* sql(admin, [
          `CREATE TABLE ${sa} (id int8 PRIMARY KEY, v text, n numeric, j jsonb)`,
          `INSERT INTO ${sa} SELECT g, 'v' || g, (g || '.5')::numeric, jsonb_build_object('g', g) FROM generate_series(1, 15000) g`,
          `CREATE TABLE ${sb} (id int4 PRIMARY KEY, label text)`,
          `INSERT INTO ${sb} SELECT g, 'label ' || g FROM generate_series(1, 5000) g`
        ])
        const phase = { now: "before" as "before" | "during" | "after", stop: false }
        const commits = { before: 0, during: 0, after: 0 }
        /** Changes rows of its own (id % 2 = w) in both tables until told to stop. */
        const snapshotWriter = (session: Sql, w: number) =>
          Effect.gen(function* () {
            const r = random(2000 + w)
            const owned = {
              [sa]: Array.from({ length: 7500 }, (_, i) => 2 * i + 1 + w).filter((id) => id <= 15000),
              [sb]: Array.from({ length: 2500 }, (_, i) => 2 * i + 1 + w).filter((id) => id <= 5000)
            }
            let fresh = 0
            while (!phase.stop) {
              yield* session.run("BEGIN")
              const staged = { [sa]: [...owned[sa]!], [sb]: [...owned[sb]!] }
              for (let s = 1 + r.int(3); s > 0; s--) {
                const table = r.chance(0.7) ? sa : sb
                const ids = staged[table]!
                const choice = r.int(10)
                if (choice < 3 || ids.length === 0) {
                  const id = 100_000 + w + 2 * fresh++
                  yield* table === sa
                    ? session.run(`INSERT INTO ${sa} VALUES ($1, $2, $3, $4)`, [
                        id,
                        `new ${id}`,
                        "0.001",
                        `{"new": ${id}}`
                      ])
                    : session.run(`INSERT INTO ${sb} VALUES ($1, $2)`, [id, `new ${id}`])
                  ids.push(id)
                } else if (choice < 8) {
                  const id = r.pick(ids)
                  yield* table === sa
                    ? session.run(`UPDATE ${sa} SET v = $1, n = $2, j = $3 WHERE id = $4`, [
                        `w${w} ${r.int(1e6)}`,
                        `${r.int(1e6)}.${r.int(100)}`,
                        JSON.stringify({ w, r: r.int(100), list: [r.int(5), null] }),
                        id
                      ])
                    : session.run(`UPDATE ${sb} SET label = $1 WHERE id = $2`, [`w${w} ${r.int(1e6)}`, id])
                } else {
                  const i = r.int(ids.length)
                  yield* session.run(`DELETE FROM ${table} WHERE id = $1`, [ids[i]])
                  ids.splice(i, 1)
                }
              }
              yield* session.run("COMMIT")
              owned[sa] = staged[sa]!
              owned[sb] = staged[sb]!
              commits[phase.now]++
              yield* Effect.sleep("2 millis")
            }
          })
        const sessions = yield* Effect.all([0, 1].map(() => connect(pgUrl)))
        const writers = yield* Effect.forkScoped(
          Effect.all(
            sessions.map((session, w) => snapshotWriter(session, w)),
            { concurrency: "unbounded" }
          )
        )
        yield* waitFor(
          "the writers' first commits",
          Effect.sync(() => (commits.before >= 20 ? true : undefined))
        )
        const { store } = yield* CheckpointStore.makeMemory()
        const pipeline = yield* start({
          source: {
            url: pgUrl,
            tables: [sa, sb],
            slot: n.slot,
            publication: n.publication,
            snapshotChunkRows: 1000
          },
          redisUrl,
          pipeline: n.pipeline,
          prefix: n.prefix,
          store
        })
        yield* untilSlot(admin, n.slot, pipeline)
        phase.now = "during"
        // Changes come after the whole snapshot: the first one in Redis says the snapshot has been delivered.
        yield* waitFor(
          "the first change after the snapshot",
          Effect.map(
            Effect.all([lastEntry(redisUrl, `${n.prefix}.${sa}`), lastEntry(redisUrl, `${n.prefix}.${sb}`)]),
            (lasts) => (lasts.some((l) => l !== undefined && l.event.op !== "r") ? true : undefined)
          ),
          { pipeline }
        )
        phase.now = "after"
        yield* waitFor(
          "more commits",
          Effect.sync(() => (commits.after >= 30 ? true : undefined))
        )
        phase.stop = true
        yield* Fiber.join(writers)
        yield* sql(admin, [
          "BEGIN",
          `INSERT INTO ${sa} VALUES (-1, 'end', 0, '{}')`,
          `INSERT INTO ${sb} VALUES (-1, 'end')`,
          "COMMIT"
        ])
        yield* untilLast(redisUrl, `${n.prefix}.${sa}`, "-1", pipeline)
        yield* untilLast(redisUrl, `${n.prefix}.${sb}`, -1, pipeline)
        yield* Fiber.interrupt(pipeline.fiber)
        assert.isAbove(commits.during, 0, "no transaction committed while the snapshot was delivered")

        const tables = {
          [sa]: {
            query: `SELECT id::text AS id, v, n::text AS n, j::text AS j FROM ${sa}`,
            row: (row: Record<string, string | null>): Image => ({
              id: row.id,
              v: row.v,
              n: row.n,
              j: row.j === null ? null : JSON.parse(row.j!)
            })
          },
          [sb]: {
            query: `SELECT id::text AS id, label FROM ${sb}`,
            row: (row: Record<string, string | null>): Image => ({ id: Number(row.id), label: row.label })
          }
        }
        let changedAfterRead = 0
        for (const [table, { query, row }] of Object.entries(tables)) {
          const entries = yield* readAll(redisUrl, `${n.prefix}.${table}`)
          const events = entries.map((e) => e.event)
          const firstChange = events.findIndex((e) => e.op !== "r")
          assert.isAbove(firstChange, 0, `${table}: no snapshot rows, or no changes`)
          const lateRow = events.slice(firstChange).find((e) => e.op === "r")
          assert.isUndefined(lateRow, `${table}: a snapshot row after the first change: ${lateRow?.position}`)
          for (const e of events.slice(0, firstChange)) {
            assert.isTrue(e.source.snapshot === true && !isChangePosition(e.position), `${table}: ${e.position}`)
          }
          const { rows, problems } = rebuild(events)
          assert.deepStrictEqual(problems.slice(0, 10), [], `${table}: ${problems.length} impossible steps`)
          const final = new Map((yield* admin.run(query)).map((r) => [String(r.id), row(r)]))
          assert.strictEqual(rows.size, final.size, `${table}: rows rebuilt from Redis against rows in the table`)
          for (const [key, value] of final) {
            const rebuilt = rows.get(key)
            if (canonical(rebuilt) !== canonical(value)) {
              assert.deepStrictEqual(
                rebuilt,
                value,
                `${table}: row ${key} rebuilt from Redis (actual) and in the table`
              )
            }
          }
          const snapshotted = new Set(events.slice(0, firstChange).map((e) => String(e.after?.id)))
          changedAfterRead += events
            .slice(firstChange)
            .filter((e) => (e.op === "u" || e.op === "d") && snapshotted.has(String(e.before?.id))).length
        }
        assert.isAbove(changedAfterRead, 0, "no snapshot row was changed after it was read")
      }),
    { timeout: 300_000 }
  )

  it.effect(
    "the slot's confirmed_flush_lsn never passes the checkpoint, and catches up once everything is checkpointed",
    () =>
      Effect.gen(function* () {
        const { pgUrl, redisUrl } = yield* servers
        const n = names("confirm")
        const admin = yield* connect(pgUrl)
        const watcher = yield* connect(pgUrl)
        const table = n.table("c")
        yield* admin.run(`CREATE TABLE ${table} (id int PRIMARY KEY, v text)`)
        const { store } = yield* CheckpointStore.makeMemory()
        // Small batches: the checkpoint trails what the source has read, which is what the slot must not pass.
        const pipeline = yield* start({
          source: { url: pgUrl, tables: [table], slot: n.slot, publication: n.publication },
          redisUrl,
          pipeline: n.pipeline,
          prefix: n.prefix,
          store,
          batch: { maxEvents: 40 }
        })
        yield* untilSlot(admin, n.slot, pipeline)
        const samples: Array<{ readonly confirmed: bigint; readonly checkpoint: string | undefined }> = []
        // The slot first, then the checkpoint: the checkpoint only grows, so one read after the other is a fair bound.
        const sampler = yield* Effect.forkScoped(
          Effect.forever(
            Effect.gen(function* () {
              const confirmed = yield* confirmedFlush(watcher, n.slot)
              const checkpoint = Option.getOrUndefined(yield* pipeline.checkpoint)
              if (confirmed !== undefined) samples.push({ confirmed, checkpoint })
              yield* Effect.sleep("20 millis")
            })
          )
        )
        const sessions = yield* Effect.all([0, 1].map(() => connect(pgUrl)))
        yield* Effect.all(
          sessions.map((session, w) =>
            Effect.gen(function* () {
              const r = random(3000 + w)
              let next = w * 1_000_000 + 1
              for (let t = 0; t < 60; t++) {
                const rows = w === 0 && t === 30 ? 3000 : 1 + r.int(30)
                yield* session.run(
                  `INSERT INTO ${table} SELECT g, 'w${w} ' || g FROM generate_series($1::int, $2::int) g`,
                  [next, next + rows - 1]
                )
                if (r.chance(0.3)) yield* session.run(`UPDATE ${table} SET v = 'again' WHERE id = $1`, [next])
                next += rows
                // Long enough for the sampler to see the checkpoint trail many times on a fast machine too.
                yield* Effect.sleep("20 millis")
              }
            })
          ),
          { concurrency: "unbounded" }
        )
        yield* admin.run(`INSERT INTO ${table} VALUES (-1, 'end')`)
        const last = yield* untilLast(redisUrl, `${n.prefix}.${table}`, -1, pipeline)
        yield* waitFor(
          "the checkpoint at the last event",
          Effect.map(pipeline.checkpoint, (c) => (Option.getOrUndefined(c) === last.event.position ? true : undefined)),
          { pipeline }
        )
        const lastCommit = lsnOfPosition(last.event.position)
        const caughtUp = yield* waitFor(
          `confirmed_flush_lsn at or past the last commit ${formatLsn(lastCommit)}`,
          Effect.map(confirmedFlush(watcher, n.slot), (c) => (c !== undefined && c >= lastCommit ? c : undefined)),
          { pipeline, timeoutMs: 90_000 }
        )
        yield* Fiber.interrupt(sampler)
        yield* Fiber.interrupt(pipeline.fiber)
        assert.isTrue(caughtUp >= lastCommit)

        const positions = (yield* readAll(redisUrl, `${n.prefix}.${table}`)).map((e) => e.event.position)
        const firstAfter = (checkpoint: string | undefined) => {
          if (checkpoint === undefined) return positions[0]
          let lo = 0
          let hi = positions.length
          while (lo < hi) {
            const mid = (lo + hi) >> 1
            if (positions[mid]! <= checkpoint) lo = mid + 1
            else hi = mid
          }
          return positions[lo]
        }
        let behind = 0
        for (const sample of samples) {
          const next = firstAfter(sample.checkpoint)
          if (next === undefined) continue
          behind++
          assert.isTrue(
            sample.confirmed <= lsnOfPosition(next),
            `confirmed_flush_lsn ${formatLsn(sample.confirmed)} passed the checkpoint ${sample.checkpoint}: the first ` +
              `event not checkpointed (${next}) commits at ${formatLsn(lsnOfPosition(next))}`
          )
        }
        const moves = new Set(samples.map((s) => s.confirmed)).size
        assert.isAbove(behind, 10, `samples taken while the checkpoint trailed: ${behind} of ${samples.length}`)
        assert.isAbove(moves, 3, `distinct confirmed_flush_lsn values seen: ${moves}`)
      }),
    { timeout: 300_000 }
  )

  it.effect(
    "a restart from the stored checkpoint delivers exactly the changes made while stopped and after, none twice",
    () =>
      Effect.gen(function* () {
        const { pgUrl, redisUrl } = yield* servers
        const n = names("restart")
        const admin = yield* connect(pgUrl)
        const table = n.table("r")
        const stream = `${n.prefix}.${table}`
        yield* sql(admin, [
          `CREATE TABLE ${table} (id int PRIMARY KEY, v text, n int)`,
          `INSERT INTO ${table} SELECT g, 'row ' || g, g FROM generate_series(1, 50) g`
        ])
        const r = random(4000)
        const live = new Set(Array.from({ length: 50 }, (_, i) => i + 1))
        let fresh = 1000
        /** `count` single-statement changes; returns them as the events must carry them. */
        const changes = (count: number) =>
          Effect.gen(function* () {
            const out: Array<{ op: string; before: Image | null; after: Image | null; unchanged: undefined }> = []
            for (let i = 0; i < count; i++) {
              const choice = r.int(3)
              if (choice === 0 || live.size === 0) {
                const id = fresh++
                yield* admin.run(`INSERT INTO ${table} VALUES ($1, $2, $3)`, [id, `new ${id}`, id])
                live.add(id)
                out.push({ op: "c", before: null, after: { id, v: `new ${id}`, n: id }, unchanged: undefined })
              } else {
                const id = r.pick([...live])
                if (choice === 1) {
                  const v = `changed ${r.int(1e6)}`
                  yield* admin.run(`UPDATE ${table} SET v = $1, n = NULL WHERE id = $2`, [v, id])
                  out.push({ op: "u", before: { id }, after: { id, v, n: null }, unchanged: undefined })
                } else {
                  yield* admin.run(`DELETE FROM ${table} WHERE id = $1`, [id])
                  live.delete(id)
                  out.push({ op: "d", before: { id }, after: null, unchanged: undefined })
                }
              }
            }
            return out
          })
        const { store } = yield* CheckpointStore.makeMemory()
        const options = {
          source: { url: pgUrl, tables: [table], slot: n.slot, publication: n.publication },
          redisUrl,
          pipeline: n.pipeline,
          prefix: n.prefix,
          store
        }
        const untilCheckpointed = (pipeline: Pipeline, last: Delivered) =>
          waitFor(
            "the checkpoint at the last event",
            Effect.map(pipeline.checkpoint, (c) =>
              Option.getOrUndefined(c) === last.event.position ? true : undefined
            ),
            { pipeline }
          )

        const first = yield* start(options)
        yield* untilSlot(admin, n.slot, first)
        const before = yield* changes(30)
        const lastBefore = before.at(-1)!
        yield* untilLast(redisUrl, stream, (lastBefore.after ?? lastBefore.before)!.id, first, lastBefore.op)
        yield* untilCheckpointed(first, (yield* lastEntry(redisUrl, stream))!)
        yield* Fiber.interrupt(first.fiber)
        const delivered = yield* streamLength(redisUrl, stream)
        assert.strictEqual(delivered, 50 + before.length)

        const whileStopped = yield* changes(30)
        const second = yield* start(options)
        const lastStopped = whileStopped.at(-1)!
        yield* untilLast(redisUrl, stream, (lastStopped.after ?? lastStopped.before)!.id, second, lastStopped.op)
        const after = yield* changes(20)
        const lastAfter = after.at(-1)!
        yield* untilLast(redisUrl, stream, (lastAfter.after ?? lastAfter.before)!.id, second, lastAfter.op)
        yield* untilCheckpointed(second, (yield* lastEntry(redisUrl, stream))!)
        yield* Fiber.interrupt(second.fiber)

        const entries = yield* readAll(redisUrl, stream)
        assert.deepStrictEqual(
          entries.slice(0, 50).map((e): Array<unknown> => [e.event.op, e.event.after]),
          Array.from({ length: 50 }, (_, i) => ["r", { id: i + 1, v: `row ${i + 1}`, n: i + 1 }]),
          "the snapshot"
        )
        assert.deepStrictEqual(
          entries.slice(50, delivered).map((e) => shape(e.event)),
          before,
          "the first run's changes"
        )
        assert.deepStrictEqual(
          entries.slice(delivered).map((e) => shape(e.event)),
          [...whileStopped, ...after],
          "the second run's entries: the changes made while stopped, then the later ones"
        )
        // The source itself re-sent nothing the checkpoint covered (exactly-once would hide it from the stream).
        const skipped = second.batches().reduce((sum, b) => sum + b.streams.reduce((s, x) => s + x.skipped, 0), 0)
        assert.strictEqual(skipped, 0, "entries the second run's sink skipped as already written")
      }),
    { timeout: 300_000 }
  )

  it.effect(
    "stopped right after the snapshot was checkpointed and restarted: the rows are not read again, new changes follow",
    () =>
      Effect.gen(function* () {
        const { pgUrl, redisUrl } = yield* servers
        const n = names("aftersnap")
        const admin = yield* connect(pgUrl)
        const table = n.table("q")
        const stream = `${n.prefix}.${table}`
        yield* sql(admin, [
          `CREATE TABLE ${table} (id int PRIMARY KEY, v text)`,
          `INSERT INTO ${table} SELECT g, 'v' || g FROM generate_series(1, 30) g`
        ])
        const { store } = yield* CheckpointStore.makeMemory()
        const options = {
          source: {
            url: pgUrl,
            tables: [table],
            slot: n.slot,
            publication: n.publication,
            snapshotChunkRows: 7
          },
          redisUrl,
          pipeline: n.pipeline,
          prefix: n.prefix,
          store
        }
        const first = yield* start(options)
        const lastRow = yield* untilLast(redisUrl, stream, 30, first, "r")
        yield* waitFor(
          "the checkpoint at the snapshot's last row",
          Effect.map(first.checkpoint, (c) => (Option.getOrUndefined(c) === lastRow.event.position ? true : undefined)),
          { pipeline: first }
        )
        yield* Fiber.interrupt(first.fiber)
        yield* admin.run(`UPDATE ${table} SET v = 'changed' WHERE id = 3`)
        const second = yield* start(options)
        yield* untilLast(redisUrl, stream, 3, second, "u")
        yield* admin.run(`INSERT INTO ${table} VALUES (31, 'v31')`)
        yield* untilLast(redisUrl, stream, 31, second)
        yield* Fiber.interrupt(second.fiber)
        const events = (yield* readAll(redisUrl, stream)).map((e): Array<unknown> => [
          e.event.op,
          e.event.before,
          e.event.after
        ])
        assert.deepStrictEqual(events, [
          ...Array.from({ length: 30 }, (_, i) => ["r", null, { id: i + 1, v: `v${i + 1}` }]),
          ["u", { id: 3 }, { id: 3, v: "changed" }],
          ["c", null, { id: 31, v: "v31" }]
        ])
      }),
    { timeout: 120_000 }
  )

  it.effect(
    "stopped in the middle of a 5,000-row transaction and restarted: every row in Redis exactly once, in order",
    () =>
      Effect.gen(function* () {
        const { pgUrl, redisUrl } = yield* servers
        const n = names("midflight")
        const admin = yield* connect(pgUrl)
        const table = n.table("m")
        const stream = `${n.prefix}.${table}`
        yield* admin.run(`CREATE TABLE ${table} (id int PRIMARY KEY, v text)`)
        const { store } = yield* CheckpointStore.makeMemory()
        const options = {
          source: { url: pgUrl, tables: [table], slot: n.slot, publication: n.publication },
          redisUrl,
          pipeline: n.pipeline,
          prefix: n.prefix,
          store,
          batch: { maxEvents: 100 }
        }
        const first = yield* start(options)
        yield* untilSlot(admin, n.slot, first)
        yield* admin.run(`INSERT INTO ${table} SELECT g, 'v' || g FROM generate_series(1, 5000) g`)
        yield* waitFor(
          "the first entries of the big transaction",
          Effect.map(streamLength(redisUrl, stream), (len) => (len >= 300 ? true : undefined)),
          { pipeline: first }
        )
        yield* Fiber.interrupt(first.fiber)
        const stoppedAt = yield* streamLength(redisUrl, stream)
        const checkpoint = Option.getOrUndefined(yield* store.load(n.pipeline).pipe(Effect.orDie))
        assert.isBelow(stoppedAt, 5000, "the first run delivered the whole transaction before it was stopped")
        yield* admin.run(`INSERT INTO ${table} SELECT g, 'v' || g FROM generate_series(5001, 5100) g`)

        const second = yield* start(options)
        yield* untilLast(redisUrl, stream, 5100, second)
        yield* Fiber.interrupt(second.fiber)
        const entries = yield* readAll(redisUrl, stream)
        const ids = entries.map((e) => (e.event.op === "c" ? e.event.after?.id : `${e.event.op}?`))
        const wanted = Array.from({ length: 5100 }, (_, i) => i + 1)
        if (canonical(ids) !== canonical(wanted)) {
          assert.deepStrictEqual(
            ids,
            wanted,
            `ids in Redis (stopped at ${stoppedAt} entries, checkpoint ${checkpoint})`
          )
        }
        assert.deepStrictEqual(entries[4999]!.event.after, { id: 5000, v: "v5000" })
      }),
    { timeout: 300_000 }
  )

  it.effect(
    "a column added and one dropped mid-stream: events carry the table's shape as of their change",
    () =>
      Effect.gen(function* () {
        const { pgUrl, redisUrl } = yield* servers
        const n = names("ddl")
        const admin = yield* connect(pgUrl)
        const table = n.table("s")
        const mood = n.table("mood")
        const stream = `${n.prefix}.${table}`
        yield* admin.run(`CREATE TABLE ${table} (id int PRIMARY KEY, a text, b int)`)
        const { store } = yield* CheckpointStore.makeMemory()
        const pipeline = yield* start({
          source: { url: pgUrl, tables: [table], slot: n.slot, publication: n.publication },
          redisUrl,
          pipeline: n.pipeline,
          prefix: n.prefix,
          store
        })
        yield* untilSlot(admin, n.slot, pipeline)
        yield* admin.run(`INSERT INTO ${table} VALUES (1, 'one', 10)`)
        // Delivered: the snapshot is over, and the DDL below runs while the source streams.
        yield* untilLast(redisUrl, stream, 1, pipeline)
        yield* ddl(admin, `ALTER TABLE ${table} ADD COLUMN c int DEFAULT 7`)
        yield* sql(admin, [
          `INSERT INTO ${table} VALUES (2, 'two', 20, 30)`,
          `UPDATE ${table} SET a = 'uno' WHERE id = 1`,
          // A column of a type created after the source started, so unknown to it.
          `CREATE TYPE ${mood} AS ENUM ('sad', 'happy')`,
          `ALTER TABLE ${table} ADD COLUMN m ${mood}, ADD COLUMN tags jsonb[]`,
          `UPDATE ${table} SET m = 'happy', tags = ARRAY['{"x": 1}'::jsonb, NULL] WHERE id = 2`,
          // The shape changing inside a transaction, between its changes.
          "BEGIN",
          `INSERT INTO ${table} (id, a, b, c) VALUES (3, 'three', 3, 33)`,
          `ALTER TABLE ${table} DROP COLUMN b`,
          `INSERT INTO ${table} (id, a, c, m) VALUES (4, 'four', 44, 'sad')`,
          "COMMIT",
          `UPDATE ${table} SET m = 'sad' WHERE id = 2`,
          `DELETE FROM ${table} WHERE id = 1`
        ])
        yield* untilLast(redisUrl, stream, 1, pipeline, "d")
        yield* Fiber.interrupt(pipeline.fiber)
        const events = (yield* readAll(redisUrl, stream)).map((e) => [e.event.op, e.event.before, e.event.after])
        assert.deepStrictEqual(events, [
          ["c", null, { id: 1, a: "one", b: 10 }],
          ["c", null, { id: 2, a: "two", b: 20, c: 30 }],
          ["u", { id: 1 }, { id: 1, a: "uno", b: 10, c: 7 }],
          ["u", { id: 2 }, { id: 2, a: "two", b: 20, c: 30, m: "happy", tags: [{ x: 1 }, null] }],
          ["c", null, { id: 3, a: "three", b: 3, c: 33, m: null, tags: null }],
          ["c", null, { id: 4, a: "four", c: 44, m: "sad", tags: null }],
          ["u", { id: 2 }, { id: 2, a: "two", c: 30, m: "sad", tags: [{ x: 1 }, null] }],
          ["d", { id: 1 }, null]
        ])
      }),
    { timeout: 120_000 }
  )

  it.effect(
    "TRUNCATE of two tables in one statement: one op t event in each table's stream, in one transaction",
    () =>
      Effect.gen(function* () {
        const { pgUrl, redisUrl } = yield* servers
        const n = names("truncate")
        const admin = yield* connect(pgUrl)
        const ta = n.table("ta")
        const tb = n.table("tb")
        yield* sql(admin, [
          `CREATE TABLE ${ta} (id int PRIMARY KEY, v text)`,
          `CREATE TABLE ${tb} (id int PRIMARY KEY, v text)`
        ])
        const { store } = yield* CheckpointStore.makeMemory()
        const pipeline = yield* start({
          source: { url: pgUrl, tables: [ta, tb], slot: n.slot, publication: n.publication },
          redisUrl,
          pipeline: n.pipeline,
          prefix: n.prefix,
          store
        })
        yield* untilSlot(admin, n.slot, pipeline)
        yield* sql(admin, [`INSERT INTO ${ta} VALUES (1, 'a1')`, `INSERT INTO ${tb} VALUES (1, 'b1')`])
        // Delivered: the snapshot is over, and the TRUNCATE below runs while the source streams.
        yield* untilLast(redisUrl, `${n.prefix}.${tb}`, 1, pipeline)
        yield* ddl(admin, `TRUNCATE ${ta}, ${tb}`)
        yield* sql(admin, [`INSERT INTO ${ta} VALUES (2, 'a2')`, `INSERT INTO ${tb} VALUES (2, 'b2')`])
        yield* untilLast(redisUrl, `${n.prefix}.${tb}`, 2, pipeline)
        yield* untilLast(redisUrl, `${n.prefix}.${ta}`, 2, pipeline)
        yield* Fiber.interrupt(pipeline.fiber)
        const a = (yield* readAll(redisUrl, `${n.prefix}.${ta}`)).map((e) => e.event)
        const b = (yield* readAll(redisUrl, `${n.prefix}.${tb}`)).map((e) => e.event)
        const view = (e: CdcEvent.CdcEvent) => [e.op, e.source.table, e.before, e.after]
        assert.deepStrictEqual(a.map(view), [
          ["c", ta, null, { id: 1, v: "a1" }],
          ["t", ta, null, null],
          ["c", ta, null, { id: 2, v: "a2" }]
        ])
        assert.deepStrictEqual(b.map(view), [
          ["c", tb, null, { id: 1, v: "b1" }],
          ["t", tb, null, null],
          ["c", tb, null, { id: 2, v: "b2" }]
        ])
        const [ta1, tb1] = [a[1]!, b[1]!]
        assert.strictEqual(ta1.transaction?.id, tb1.transaction?.id, "both truncate events in one transaction")
        assert.deepStrictEqual(
          [ta1.transaction?.total_order, tb1.transaction?.total_order].sort(),
          [1, 2],
          "total_order of the two truncate events"
        )
        assert.notStrictEqual(ta1.position, tb1.position)
        assert.notStrictEqual(ta1.transaction?.id, a[0]!.transaction?.id)
      }),
    { timeout: 120_000 }
  )
})

const sql = (session: Sql, statements: ReadonlyArray<string>) => Effect.forEach(statements, (s) => session.run(s))

/**
 * Runs a statement that takes an ACCESS EXCLUSIVE lock (ALTER TABLE, TRUNCATE) with a lock timeout: a session of the
 * pipeline that holds a lock on the table for good makes it fail naming that session, instead of hanging the test.
 */
const ddl = (session: Sql, statement: string) =>
  Effect.gen(function* () {
    yield* session.run("SET lock_timeout = '20s'")
    const result = yield* Effect.result(session.attempt(statement))
    yield* session.run("RESET lock_timeout")
    if (result._tag === "Success") return
    const holders = yield* session.run(
      `SELECT a.pid::text AS pid, a.application_name AS app, a.state, a.backend_xmin::text AS xmin, ` +
        `now() - a.xact_start AS open_for, left(a.query, 120) AS last_query, l.mode ` +
        `FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid ` +
        `WHERE l.granted AND l.relation IS NOT NULL AND a.pid <> pg_backend_pid() AND l.relation::regclass::text ` +
        `IN (SELECT unnest(regexp_matches($1, '(?:TABLE|TRUNCATE) ([a-z0-9_]+)', 'g')))`,
      [statement]
    )
    assert.fail(`${statement}: ${result.failure.message}; locks held on the table by: ${JSON.stringify(holders)}`)
  })
