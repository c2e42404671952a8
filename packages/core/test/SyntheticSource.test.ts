import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Option, Ref, Stream } from "effect"
import { TestClock } from "effect/testing"
import * as CdcEvent from "../src/CdcEvent.ts"
import * as Position from "../src/Position.ts"
import type { Source } from "../src/Source.ts"
import * as SyntheticSource from "../src/SyntheticSource.ts"

const collect = (options: SyntheticSource.Options) => Stream.runCollect(SyntheticSource.make(options))

type RowKey = `${string}#${string}`
const rowKey = (e: CdcEvent.CdcEvent): RowKey => `${e.source.table}#${String(CdcEvent.row(e)!.id)}`

describe("SyntheticSource", () => {
  it.effect("emits `count` events with consecutive positions, sequences and timestamps", () =>
    Effect.gen(function* () {
      const events = yield* collect({ count: 2500, chunkSize: 300 })
      assert.strictEqual(events.length, 2500)
      events.forEach((e, i) => {
        const n = i + 1
        assert.strictEqual(e.position, Position.fromSequence(n))
        assert.strictEqual(e.source.sequence, n)
        assert.strictEqual(e.ts_ms, SyntheticSource.defaults.baseTimeMs + n)
        assert.strictEqual(e.source.ts_ms, e.ts_ms)
      })
      assert.deepStrictEqual(yield* collect({ count: 0 }), [])
      assert.strictEqual((yield* SyntheticSource.make({}).pipe(Stream.take(3000), Stream.runCollect)).length, 3000)
      assert.strictEqual((yield* Stream.runCollect(SyntheticSource.make().pipe(Stream.take(5)))).length, 5)
    })
  )

  it.effect("is deterministic: two runs are equal, another seed differs", () =>
    Effect.gen(function* () {
      const a = yield* collect({ count: 3000, seed: 42 })
      const b = yield* collect({ count: 3000, seed: 42, chunkSize: 7 })
      assert.deepStrictEqual(a, b)
      const c = yield* collect({ count: 3000, seed: 43 })
      assert.notDeepEqual(
        a.map((e) => e.after ?? e.before),
        c.map((e) => e.after ?? e.before)
      )
      assert.deepStrictEqual(SyntheticSource.eventAt(1234, { seed: 42 }), a[1233])
    })
  )

  it.effect("resuming from a position emits exactly the tail of a full run", () =>
    Effect.gen(function* () {
      const full = yield* collect({ count: 2000, seed: 9, payloadBytes: 300, transactionSize: 4 })
      for (const at of [0, 1, 737, 1999, 2000]) {
        const tail = yield* collect({
          count: 2000,
          seed: 9,
          payloadBytes: 300,
          transactionSize: 4,
          from: Position.fromSequence(at)
        })
        assert.deepStrictEqual(tail, full.slice(at))
      }
      assert.deepStrictEqual(yield* collect({ count: 10, from: Position.fromSequence(50) }), [])
    })
  )

  it.effect("implements Source: stream(from) resumes after from, whatever options.from says", () =>
    Effect.gen(function* () {
      const source: Source = SyntheticSource.source({ count: 100, name: "orders-db", from: Position.fromSequence(90) })
      assert.strictEqual(source.name, "orders-db")
      const all = yield* Stream.runCollect(source.stream(Option.none()))
      assert.strictEqual(all.length, 100)
      const tail = yield* Stream.runCollect(source.stream(Option.some(Position.fromSequence(60))))
      assert.deepStrictEqual(tail, all.slice(60))
      assert.strictEqual(SyntheticSource.source().name, "synthetic")
    })
  )

  it.effect("mixes about 60% inserts, 30% updates, 10% deletes over the default tables", () =>
    Effect.gen(function* () {
      const events = yield* collect({ count: 10_000 })
      const count = (op: string) => events.filter((e) => e.op === op).length / events.length
      assert.approximately(count("c"), 0.6, 0.02)
      assert.approximately(count("u"), 0.3, 0.02)
      assert.approximately(count("d"), 0.1, 0.02)
      const tables = new Set(events.map((e) => e.source.table))
      assert.deepStrictEqual([...tables].sort(), ["customers", "orders", "payments"])
    })
  )

  it.effect("row history is consistent: inserts first, updates and deletes touch live earlier rows only", () =>
    Effect.gen(function* () {
      for (const tables of [undefined, ["orders"], ["customers", "audit_log", "orders"]] as const) {
        const events = yield* collect({ count: 6000, seed: 5, ...(tables === undefined ? {} : { tables }) })
        const live = new Map<RowKey, CdcEvent.Row>()
        const deleted = new Set<RowKey>()
        const seenTables = new Map<string, number>()
        for (const e of events) {
          const key = rowKey(e)
          const nth = (seenTables.get(e.source.table) ?? 0) + 1
          seenTables.set(e.source.table, nth)
          if (nth <= 2) assert.strictEqual(e.op, "c", `the first events of ${e.source.table} are inserts`)
          switch (e.op) {
            case "c":
              assert.isNull(e.before)
              assert.isFalse(live.has(key) || deleted.has(key), `${key} inserted twice`)
              live.set(key, e.after!)
              break
            case "u": {
              const inserted = live.get(key)
              assert.isDefined(inserted, `update of ${key} that is not live`)
              assert.strictEqual(e.before!.id, e.after!.id)
              // Immutable columns agree with the insert.
              assert.strictEqual(e.before!.created_at, inserted!.created_at)
              assert.strictEqual(e.after!.created_at, inserted!.created_at)
              if (e.source.table === "orders") {
                assert.deepStrictEqual(e.after!.items, inserted!.items)
                assert.strictEqual(e.after!.amount, inserted!.amount)
              }
              assert.notDeepEqual(e.before, e.after)
              break
            }
            case "d":
              assert.isNull(e.after)
              assert.isTrue(live.has(key), `delete of ${key} that is not live`)
              assert.strictEqual(e.before!.created_at, live.get(key)!.created_at)
              live.delete(key)
              deleted.add(key)
              break
            default:
              assert.fail(`unexpected op ${e.op}`)
          }
        }
        // Row ids of a table are 1, 2, 3... in insert order.
        for (const table of seenTables.keys()) {
          const ids = events.filter((e) => e.op === "c" && e.source.table === table).map((e) => e.after!.id)
          assert.deepStrictEqual(
            ids,
            ids.map((_, i) => i + 1)
          )
        }
      }
    })
  )

  it.effect("event ids are unique, stable and derived from the source identity and position", () =>
    Effect.gen(function* () {
      const events = yield* collect({ count: 5000, connector: "pg", name: "main", db: "app" })
      assert.strictEqual(new Set(events.map((e) => e.id)).size, events.length)
      const idOf = CdcEvent.sequenceEventIds({ connector: "pg", name: "main", db: "app" })
      for (const e of events.slice(0, 50)) {
        assert.strictEqual(e.id, idOf(Number(Position.toSequence(e.position))))
        assert.match(e.id, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
        assert.notStrictEqual(e.id, CdcEvent.eventId({ connector: "pg", name: "main", db: "app" }, e.position))
        assert.strictEqual(e.source.connector, "pg")
        assert.strictEqual(e.source.name, "main")
        assert.strictEqual(e.source.db, "app")
      }
      const again = yield* collect({ count: 50, connector: "pg", name: "main", db: "app", seed: 77 })
      assert.deepStrictEqual(
        again.map((e) => e.id),
        events.slice(0, 50).map((e) => e.id)
      )
      const other = yield* collect({ count: 50, connector: "pg", name: "replica", db: "app" })
      assert.notStrictEqual(other[0]!.id, events[0]!.id)
      const defaults = (yield* collect({ count: 1 }))[0]!
      assert.deepStrictEqual(
        [defaults.source.connector, defaults.source.name, defaults.source.db],
        ["synthetic", "synthetic", "shop"]
      )
    })
  )

  it("sequence ids stay distinct where the sequence needs more than 48 bits, up to the largest safe integer", () => {
    const idOf = CdcEvent.sequenceEventIds({ connector: "synthetic", name: "synthetic", db: "shop" })
    const sequences = [
      1,
      2 ** 48 - 1,
      2 ** 48,
      2 ** 48 + 1,
      2 ** 52,
      Number.MAX_SAFE_INTEGER - 1,
      Number.MAX_SAFE_INTEGER
    ]
    const ids = sequences.map(idOf)
    assert.strictEqual(new Set(ids).size, sequences.length)
    for (const id of ids) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-8[0-9a-f]{3}-[0-9a-f]{12}$/)
    assert.strictEqual(idOf(Number.MAX_SAFE_INTEGER).slice(-17), "801f-ffffffffffff")
  })

  it.effect("every event is a valid CdcEvent, with realistic columns per table", () =>
    Effect.gen(function* () {
      const events = yield* collect({ count: 600, schema: "public", transactionSize: 5 })
      for (const e of events) assert.deepStrictEqual(CdcEvent.decodeUnknownSync(e), e)
      const columns = (table: string) =>
        Object.keys(events.find((e) => e.op === "c" && e.source.table === table)!.after!)
      assert.includeMembers(columns("orders"), [
        "id",
        "customer_id",
        "status",
        "amount",
        "currency",
        "items",
        "created_at"
      ])
      assert.includeMembers(columns("customers"), ["id", "email", "first_name", "last_name", "country", "created_at"])
      assert.includeMembers(columns("payments"), ["id", "order_id", "amount", "currency", "method", "status"])
      assert.strictEqual(events[0]!.source.schema, "public")
      // Transactions of 5 consecutive events.
      assert.deepStrictEqual(
        events.slice(0, 6).map((e) => [e.transaction!.id, e.transaction!.total_order, e.source.txId]),
        [
          ["tx-1", 1, 1],
          ["tx-1", 2, 1],
          ["tx-1", 3, 1],
          ["tx-1", 4, 1],
          ["tx-1", 5, 1],
          ["tx-2", 1, 2]
        ]
      )
      const plain = yield* collect({ count: 1 })
      assert.isFalse("transaction" in plain[0]!)
      assert.isFalse("schema" in plain[0]!.source)
    })
  )

  it.effect("pads row images to about payloadBytes", () =>
    Effect.gen(function* () {
      for (const payloadBytes of [500, 2000, 16_384]) {
        const events = yield* collect({ count: 600, payloadBytes })
        const sizes = events
          .flatMap((e) => [e.before, e.after])
          .filter((r) => r !== null)
          .map((r) => JSON.stringify(r).length)
        const mean = sizes.reduce((a, b) => a + b, 0) / sizes.length
        assert.approximately(mean, payloadBytes, payloadBytes * 0.05)
        for (const size of sizes) assert.approximately(size, payloadBytes, Math.max(100, payloadBytes * 0.1))
        const notes = events.find((e) => e.op === "c")!.after!.notes as string
        assert.match(notes, /^[a-z]+( [a-z-]+)*/)
      }
      const natural = yield* collect({ count: 100 })
      assert.isFalse("notes" in natural[0]!.after!)
    })
  )

  it.effect("ratePerSecond paces the stream by the Clock, in small chunks", () =>
    Effect.gen(function* () {
      const received = yield* Ref.make<Array<number>>([])
      const fiber = yield* SyntheticSource.make({ count: 3000, ratePerSecond: 1000 }).pipe(
        Stream.runForEachArray((chunk) => Ref.update(received, (sizes) => [...sizes, chunk.length])),
        Effect.forkChild
      )
      const total = Effect.map(Ref.get(received), (sizes) => sizes.reduce((a, b) => a + b, 0))
      yield* TestClock.adjust(0)
      assert.strictEqual(yield* total, 10) // the first chunk leaves at once
      yield* TestClock.adjust(500)
      assert.strictEqual(yield* total, 510)
      yield* TestClock.adjust(500)
      assert.strictEqual(yield* total, 1010)
      assert.isTrue((yield* Ref.get(received)).every((size) => size === 10))
      yield* TestClock.adjust(10_000)
      yield* Fiber.join(fiber)
      assert.strictEqual(yield* total, 3000)
    })
  )

  it.effect("a slow rate emits single events", () =>
    Effect.gen(function* () {
      const fiber = yield* collect({ count: 3, ratePerSecond: 2 }).pipe(Effect.forkChild)
      yield* TestClock.adjust(999)
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust(1)
      assert.strictEqual((yield* Fiber.join(fiber)).length, 3)
    })
  )

  it.effect("invalid options are a defect naming the option", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(collect({ count: -1 }))
      assert.isTrue(exit._tag === "Failure")
      assert.include(String(exit), "count")
      assert.throws(() => SyntheticSource.eventAt(0), /integer >= 1/)
    })
  )

  // How fast is a benchmark, not a test (it failed on a loaded machine): `pnpm bench:source`.
  it.effect("generates 100,000 events, each position once and in order", () =>
    Effect.gen(function* () {
      const events = yield* Stream.runCollect(SyntheticSource.make({ count: 100_000 }))
      assert.strictEqual(events.length, 100_000)
      assert.strictEqual(events[0]!.position, Position.fromSequence(1))
      assert.strictEqual(events[99_999]!.position, Position.fromSequence(100_000))
      assert.strictEqual(new Set(events.map((e) => e.position)).size, 100_000)
    })
  )
})
