/**
 * The synthetic change generator: event `n` is a pure function of (seed, n), computed in O(1) without replaying the
 * events before it, so a source can resume from any position and an infinite run uses constant memory.
 *
 * How the sequence is laid out:
 * - Tables take turns in a fixed weighted cycle (orders more often than customers), so the `k`-th event of a table
 *   and the global sequence number convert both ways in O(1).
 * - The events of one table come in blocks of 10: 6 inserts, 3 updates, 1 delete, in an order picked per block by
 *   hash. Inserts so far, and so row ids, are then known in O(1): the `j`-th insert of a table creates row `j`.
 *   Block 0 opens with two inserts, so a table's first events are inserts and row 1 exists before any update.
 * - A block's delete removes one of the rows that block inserted before it (never row 1). Whether a row is deleted
 *   at some point in time is therefore a look at one block, and updates skip deleted rows.
 * - Immutable columns (email, items, amount, created_at...) are a function of (seed, table, row id) and agree in
 *   every image of the row. Mutable columns (status, tier, updated_at) of an update's `before` are a plausible
 *   predecessor of its `after`, not necessarily the exact `after` of that row's previous update: exact row history
 *   would need per-row state, which an O(1), constant-memory generator cannot keep.
 */
import type { CdcEvent, Row, Source, Transaction } from "../CdcEvent.ts"
import { sequenceEventIds } from "../CdcEvent.ts"
import * as Position from "../Position.ts"
import { hash, hashString, pick } from "./hash.ts"

export interface GeneratorOptions {
  readonly tables: ReadonlyArray<string>
  readonly seed: number
  readonly payloadBytes: number | undefined
  readonly connector: string
  readonly name: string
  readonly db: string
  readonly schema: string | undefined
  readonly baseTimeMs: number
  readonly transactionSize: number | undefined
}

export interface Generator {
  /** The event at sequence `n` (1-based). */
  readonly event: (n: number) => CdcEvent
  /** The events at sequences `from..to`, both inclusive. */
  readonly range: (from: number, to: number) => Array<CdcEvent>
}

const INSERT = 0
const UPDATE = 1
const DELETE = 2
type OpCode = typeof INSERT | typeof UPDATE | typeof DELETE

const BLOCK = 10
const INSERTS_PER_BLOCK = 6

interface Pattern {
  readonly ops: ReadonlyArray<OpCode>
  /** Inserts at slots before each slot; index BLOCK holds the block total. */
  readonly insertsBefore: ReadonlyArray<number>
  /** The slot of the block's i-th insert. */
  readonly insertSlots: ReadonlyArray<number>
  readonly deleteSlot: number
}

const makePattern = (ops: ReadonlyArray<OpCode>): Pattern => {
  const insertsBefore: Array<number> = []
  const insertSlots: Array<number> = []
  let inserts = 0
  let deleteSlot = -1
  for (let slot = 0; slot < BLOCK; slot++) {
    insertsBefore.push(inserts)
    if (ops[slot] === INSERT) {
      insertSlots.push(slot)
      inserts++
    } else if (ops[slot] === DELETE) deleteSlot = slot
  }
  insertsBefore.push(inserts)
  return { ops, insertsBefore, insertSlots, deleteSlot }
}

/** Every arrangement of 6 inserts, 3 updates and 1 delete whose delete follows an insert (840 minus a few). */
const allPatterns: ReadonlyArray<Pattern> = (() => {
  const patterns: Array<Pattern> = []
  for (let d = 0; d < BLOCK; d++) {
    for (let a = 0; a < BLOCK; a++) {
      for (let b = a + 1; b < BLOCK; b++) {
        for (let c = b + 1; c < BLOCK; c++) {
          if (a === d || b === d || c === d) continue
          const ops: Array<OpCode> = []
          for (let slot = 0; slot < BLOCK; slot++) {
            ops.push(slot === d ? DELETE : slot === a || slot === b || slot === c ? UPDATE : INSERT)
          }
          const pattern = makePattern(ops)
          if (pattern.insertsBefore[d]! >= 1) patterns.push(pattern)
        }
      }
    }
  }
  return patterns
})()

/** Patterns for a table's first block: two inserts first, so the delete always has a row other than row 1. */
const firstPatterns: ReadonlyArray<Pattern> = allPatterns.filter((p) => p.ops[0] === INSERT && p.ops[1] === INSERT)

// Salts keep the independent choices of one event uncorrelated.
const SALT_PATTERN = 1
const SALT_DELETE = 2
const SALT_UPDATE = 3
const SALT_STAGE = 4
const SALT_ROW = 5
const SALT_PAD = 6
const SALT_REF = 7

const PAD_WINDOW = 4096
/** Longest stretch of padding text made of distinct words; longer notes repeat it. */
const PAD_PERIOD = 64 * 1024

type Kind = "customers" | "orders" | "payments" | "generic"

const WEIGHTS: Record<Kind, number> = { customers: 1, orders: 3, payments: 2, generic: 2 }

interface Table {
  readonly name: string
  readonly kind: Kind
  readonly salt: number
  readonly weight: number
  /** Cycle positions of this table's turns, in order. */
  readonly slots: ReadonlyArray<number>
  /** countBelow[p] = this table's turns at cycle positions < p. */
  readonly countBelow: ReadonlyArray<number>
  /** JSON size of a typical row with an empty note, per {@link variantOf} (orders vary by item count). */
  readonly padBase: Array<number>
}

const kindOf = (name: string): Kind =>
  name === "customers" || name === "orders" || name === "payments" ? name : "generic"

// prettier-ignore
const FIRST_NAMES = [
  "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Linus", "Radia", "Ken",
  "Frances", "John", "Hedy", "Dennis", "Katherine", "Tim", "Sophie", "Niklaus", "Joan", "Guido"
]
// prettier-ignore
const LAST_NAMES = [
  "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Torvalds", "Perlman", "Thompson",
  "Allen", "McCarthy", "Lamarr", "Ritchie", "Johnson", "Berners-Lee", "Wilson", "Wirth", "Clarke", "van Rossum"
]
const COUNTRIES = ["US", "GB", "DE", "FR", "NL", "SE", "JP", "BR", "CA", "AU"]
const CURRENCIES = ["USD", "EUR", "GBP", "CAD"]
const TIERS = ["bronze", "silver", "gold", "platinum"]
const ORDER_STATUSES = ["pending", "paid", "shipped", "delivered"]
const PAYMENT_STATUSES = ["authorized", "captured", "settled", "refunded"]
const PAYMENT_METHODS = ["card", "bank_transfer", "wallet", "gift_card"]
const GENERIC_STATUSES = ["new", "active", "suspended", "archived"]
const WORDS = (
  "the customer asked for delivery before noon and left the parcel with a neighbour if nobody answers the door " +
  "please call ahead gift wrap requested invoice to the billing address on file fragile handle with care " +
  "express shipping upgrade applied loyalty discount honoured replacement for a damaged item from the last order " +
  "backorder expected next week split shipment approved by support contact via email only leave at reception"
).split(" ")

/** Rows whose size differs by more than a few bytes: orders with 1, 2 or 3 items (`1 + r % 3`). */
const ORDER_VARIANTS = 3
const variantOf = (table: { readonly kind: Kind }, r: number): number =>
  table.kind === "orders" ? r % ORDER_VARIANTS : 0

/** `.000Z` to `.999Z`. */
const MILLIS: ReadonlyArray<string> = Array.from({ length: 1000 }, (_, ms) => `.${String(ms).padStart(3, "0")}Z`)

/** Cents to a two-decimal string, as CDC connectors usually render DECIMAL columns. */
const money = (cents: number): string => `${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, "0")}`

export const make = (options: GeneratorOptions): Generator => {
  const seed = options.seed >>> 0
  const names = options.tables

  // Smooth weighted round-robin: spreads each table's turns evenly over the cycle.
  const weights = names.map((name) => WEIGHTS[kindOf(name)])
  const cycle: Array<number> = []
  const current = weights.map(() => 0)
  const total = weights.reduce((a, b) => a + b, 0)
  for (let i = 0; i < total; i++) {
    let best = 0
    for (let t = 0; t < names.length; t++) {
      current[t]! += weights[t]!
      if (current[t]! > current[best]!) best = t
    }
    current[best]! -= total
    cycle.push(best)
  }
  const cycleLength = cycle.length
  const occurrence: Array<number> = []
  const tables: Array<Table> = names.map((name, t) => {
    const slots: Array<number> = []
    const countBelow: Array<number> = [0]
    for (let p = 0; p < cycleLength; p++) {
      if (cycle[p] === t) slots.push(p)
      countBelow.push(slots.length)
    }
    return { name, kind: kindOf(name), salt: hashString(name), weight: weights[t]!, slots, countBelow, padBase: [] }
  })
  for (let p = 0; p < cycleLength; p++) occurrence.push(tables[cycle[p]!]!.countBelow[p]!)
  const byKind = (kind: Kind): Table | undefined => tables.find((t) => t.kind === kind)
  const customersTable = byKind("customers")
  const ordersTable = byKind("orders")

  /** Global sequence of the table's k-th (1-based) event. */
  const globalSeq = (table: Table, k: number): number => {
    const c = Math.floor((k - 1) / table.weight)
    return c * cycleLength + table.slots[(k - 1) % table.weight]! + 1
  }
  /** How many of global events 1..n belong to the table. */
  const localCount = (table: Table, n: number): number =>
    Math.floor(n / cycleLength) * table.weight + table.countBelow[n % cycleLength]!

  const pattern = (table: Table, block: number): Pattern =>
    block === 0
      ? firstPatterns[pick(firstPatterns.length, seed, table.salt ^ SALT_PATTERN, block)]!
      : allPatterns[pick(allPatterns.length, seed, table.salt ^ SALT_PATTERN, block)]!

  /** Rows created by the table's first k events. */
  const insertsUpTo = (table: Table, k: number): number => {
    const block = Math.floor(k / BLOCK)
    const rest = k % BLOCK
    return block * INSERTS_PER_BLOCK + (rest === 0 ? 0 : pattern(table, block).insertsBefore[rest]!)
  }

  const deleteTarget = (table: Table, block: number, p: Pattern): number => {
    const low = block === 0 ? 1 : 0 // never row 1, so an update always has a live row
    const span = p.insertsBefore[p.deleteSlot]! - low
    return block * INSERTS_PER_BLOCK + 1 + low + pick(span, seed, table.salt ^ SALT_DELETE, block)
  }

  /** Whether row x has been deleted before slot `slot` of block `block`. */
  const isDeleted = (table: Table, x: number, block: number, slot: number): boolean => {
    const rowBlock = Math.floor((x - 1) / INSERTS_PER_BLOCK)
    if (rowBlock > block) return false
    const p = pattern(table, rowBlock)
    if (deleteTarget(table, rowBlock, p) !== x) return false
    return rowBlock < block || p.deleteSlot < slot
  }

  /** Global sequence of the insert that created row x. */
  const insertSeq = (table: Table, x: number): number => {
    const block = Math.floor((x - 1) / INSERTS_PER_BLOCK)
    const slot = pattern(table, block).insertSlots[(x - 1) % INSERTS_PER_BLOCK]!
    return globalSeq(table, block * BLOCK + slot + 1)
  }

  const baseTimeMs = options.baseTimeMs
  // `Date#toISOString` was a large share of generation time; consecutive sequences share their second, so most
  // calls only append the milliseconds.
  let isoSecond = NaN
  let isoPrefix = ""
  const iso = (n: number): string => {
    const ms = baseTimeMs + n
    const second = Math.floor(ms / 1000)
    if (second !== isoSecond) {
      isoSecond = second
      isoPrefix = new Date(second * 1000).toISOString().slice(0, 19)
    }
    return isoPrefix + MILLIS[ms - second * 1000]!
  }

  // Padding: one long deterministic text, sliced at word starts.
  const payloadBytes = options.payloadBytes
  // Notes start at one of the words in the first PAD_WINDOW characters, and the text runs long enough past that
  // window for any note to be whole.
  // Past PAD_PERIOD the text repeats itself: a note of 100 MB then costs one flat string, not millions of hashed
  // words in an array first (8 s and 400 MB before this bound).
  let padText = ""
  const wordStarts: Array<number> = []
  if (payloadBytes !== undefined) {
    const parts: Array<string> = []
    let length = 0
    for (let i = 0; length < Math.min(payloadBytes, PAD_PERIOD) + PAD_WINDOW; i++) {
      const word = WORDS[pick(WORDS.length, seed, SALT_PAD, i)]!
      if (length < PAD_WINDOW) wordStarts.push(length)
      parts.push(word)
      length += word.length + 1
    }
    padText = parts.join(" ")
    if (payloadBytes > PAD_PERIOD) {
      const unit = `${padText} `
      padText = unit.repeat(Math.ceil((payloadBytes + PAD_WINDOW) / unit.length) + 1)
    }
  }

  const refId = (table: Table | undefined, x: number, n: number, fallback: number): number => {
    const bound = table === undefined ? fallback : Math.max(1, insertsUpTo(table, localCount(table, n)))
    return 1 + pick(bound, seed, SALT_REF, x, n)
  }

  /**
   * A row image. `stage` drives the mutable columns; `createdSeq` and `updatedSeq` are the sequences of the
   * insert and of the latest change.
   */
  const rowImage = (table: Table, x: number, stage: number, createdSeq: number, updatedSeq: number): Row => {
    const r = hash(seed, table.salt ^ SALT_ROW, x)
    const created_at = iso(createdSeq)
    const updated_at = updatedSeq === createdSeq ? created_at : iso(updatedSeq)
    let row: Record<string, unknown>
    switch (table.kind) {
      case "customers": {
        const first = FIRST_NAMES[r % FIRST_NAMES.length]!
        const last = LAST_NAMES[(r >>> 8) % LAST_NAMES.length]!
        row = {
          id: x,
          email: `${first.toLowerCase()}.${last.toLowerCase().replace(/[^a-z]/g, "")}${x}@example.com`,
          first_name: first,
          last_name: last,
          country: COUNTRIES[(r >>> 16) % COUNTRIES.length]!,
          tier: TIERS[stage % TIERS.length]!,
          loyalty_points: stage * 100 + (r % 100),
          created_at,
          updated_at
        }
        break
      }
      case "orders": {
        const itemCount = 1 + variantOf(table, r)
        const items: Array<{ sku: string; quantity: number; unit_price: string }> = []
        let cents = 0
        for (let i = 0; i < itemCount; i++) {
          const h = hash(seed, table.salt ^ SALT_ROW, x, i + 1)
          const quantity = 1 + (h % 4)
          const unit = 199 + ((h >>> 4) % 19_800)
          cents += quantity * unit
          items.push({ sku: `SKU-${10_000 + ((h >>> 16) % 90_000)}`, quantity, unit_price: money(unit) })
        }
        row = {
          id: x,
          customer_id: refId(customersTable, x, createdSeq, 10_000),
          status: ORDER_STATUSES[stage % ORDER_STATUSES.length]!,
          amount: money(cents),
          currency: CURRENCIES[(r >>> 8) % CURRENCIES.length]!,
          items,
          created_at,
          updated_at
        }
        break
      }
      case "payments": {
        row = {
          id: x,
          order_id: refId(ordersTable, x, createdSeq, 100_000),
          amount: money(500 + (r % 50_000)),
          currency: CURRENCIES[(r >>> 8) % CURRENCIES.length]!,
          method: PAYMENT_METHODS[(r >>> 12) % PAYMENT_METHODS.length]!,
          status: PAYMENT_STATUSES[stage % PAYMENT_STATUSES.length]!,
          provider_ref: `pay_${r.toString(16).padStart(8, "0")}${x.toString(16)}`,
          created_at,
          updated_at
        }
        break
      }
      case "generic": {
        row = {
          id: x,
          name: `${table.name}-${x}`,
          status: GENERIC_STATUSES[stage % GENERIC_STATUSES.length]!,
          value: r % 1_000_000,
          version: stage + 1,
          created_at,
          updated_at
        }
        break
      }
    }
    if (payloadBytes !== undefined) {
      const pad = payloadBytes - table.padBase[variantOf(table, r)]!
      if (pad > 0) {
        const start = wordStarts[pick(wordStarts.length, seed, SALT_PAD, x, updatedSeq)]!
        row.notes = padText.slice(start, start + pad)
      } else row.notes = ""
    }
    return row
  }

  // The padding tops each row up to payloadBytes; its base is a typical row's JSON size with an empty note.
  if (payloadBytes !== undefined) {
    for (const table of tables) {
      for (let variant = 0; variant < (table.kind === "orders" ? ORDER_VARIANTS : 1); variant++) {
        let x = 1000
        while (variantOf(table, hash(seed, table.salt ^ SALT_ROW, x)) !== variant) x++
        table.padBase.push(JSON.stringify({ ...rowImage(table, x, 1, 10_000, 20_000), notes: "" }).length)
      }
    }
  }

  const { connector, name, db } = options
  const idOf = sequenceEventIds({ connector, name, db })
  const schema = options.schema
  const transactionSize = options.transactionSize

  const event = (n: number): CdcEvent => {
    const p0 = (n - 1) % cycleLength
    const table = tables[cycle[p0]!]!
    const k = Math.floor((n - 1) / cycleLength) * table.weight + occurrence[p0]! + 1
    const block = Math.floor((k - 1) / BLOCK)
    const slot = (k - 1) % BLOCK
    const p = pattern(table, block)
    const position = Position.fromSequence(n)
    const ts_ms = baseTimeMs + n

    let op: "c" | "u" | "d"
    let before: Row | null = null
    let after: Row | null = null
    switch (p.ops[slot]) {
      case INSERT: {
        op = "c"
        after = rowImage(table, block * INSERTS_PER_BLOCK + p.insertsBefore[slot]! + 1, 0, n, n)
        break
      }
      case UPDATE: {
        op = "u"
        const rows = block * INSERTS_PER_BLOCK + p.insertsBefore[slot]!
        const h = hash(seed, table.salt ^ SALT_UPDATE, n)
        // Mostly recent rows (orders move on soon after they are placed), sometimes any row.
        let x = h % 10 < 7 ? rows - ((h >>> 8) % Math.min(rows, 64)) : 1 + ((h >>> 8) % rows)
        while (isDeleted(table, x, block, slot)) x--
        const created = insertSeq(table, x)
        const stage = 1 + pick(3, seed, table.salt ^ SALT_STAGE, n)
        before = rowImage(table, x, stage - 1, created, created + Math.floor((n - created) / 2))
        after = rowImage(table, x, stage, created, n)
        break
      }
      default: {
        op = "d"
        const x = deleteTarget(table, block, p)
        const created = insertSeq(table, x)
        const stage = pick(4, seed, table.salt ^ SALT_STAGE, n)
        before = rowImage(table, x, stage, created, created + Math.floor((n - created) / 2))
      }
    }

    let transaction: Transaction | undefined
    let txId: number | undefined
    if (transactionSize !== undefined) {
      const txIndex = Math.floor((n - 1) / transactionSize)
      const first = txIndex * transactionSize + 1
      let sameTable = 0
      for (let q = first; q <= n; q++) if (cycle[(q - 1) % cycleLength] === cycle[p0]) sameTable++
      txId = txIndex + 1
      transaction = { id: `tx-${txId}`, total_order: n - first + 1, data_collection_order: sameTable }
    }

    // Fixed-shape literals rather than conditional spreads, which allocate and copy on every event.
    const source: Source =
      schema === undefined
        ? txId === undefined
          ? { connector, name, db, table: table.name, ts_ms, sequence: n }
          : { connector, name, db, table: table.name, ts_ms, txId, sequence: n }
        : txId === undefined
          ? { connector, name, db, schema, table: table.name, ts_ms, sequence: n }
          : { connector, name, db, schema, table: table.name, ts_ms, txId, sequence: n }
    const id = idOf(n)
    return transaction === undefined
      ? { id, op, before, after, source, ts_ms, position }
      : { id, op, before, after, source, ts_ms, transaction, position }
  }

  const range = (from: number, to: number): Array<CdcEvent> => {
    const out: Array<CdcEvent> = new Array(Math.max(0, to - from + 1))
    for (let n = from, i = 0; n <= to; n++, i++) out[i] = event(n)
    return out
  }

  return { event, range }
}
