import { assert, layer } from "@effect/vitest"
import type * as CdcEvent from "@redflow/core/CdcEvent"
import { PostgresTestServer } from "@redflow/testing"
import { Cause, Effect, Fiber, Metric, Option, Queue, Schedule, Scope, Stream } from "effect"
import pg from "pg"
import * as PostgresMetrics from "../src/PostgresMetrics.ts"
import * as PostgresSource from "../src/PostgresSource.ts"

const session = (url: string): Effect.Effect<pg.Client, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const client = new pg.Client({ connectionString: url })
      client.on("error", () => undefined)
      await client.connect()
      return client
    }),
    (client) => Effect.promise(() => client.end().catch(() => undefined))
  )

const sql = (client: pg.Client, text: string, params: ReadonlyArray<unknown> = []) =>
  Effect.promise(() =>
    client.query(text, params as Array<unknown>).then((r) => r.rows as Array<Record<string, unknown>>)
  )

/** Runs the source into a queue; `take(n)` waits for the next n events. */
const running = (source: PostgresSource.PostgresSource, from: Option.Option<string>) =>
  Effect.gen(function* () {
    const queue = yield* Queue.unbounded<CdcEvent.CdcEvent>()
    const fiber = yield* source.stream(from as never).pipe(
      Stream.runForEach((event) => Queue.offer(queue, event)),
      Effect.forkScoped
    )
    // A source that fails ends the wait with its error instead of leaving the test waiting for events.
    const failed = Fiber.join(fiber).pipe(
      Effect.flatMap(() => Effect.die(new Error("the source ended"))),
      Effect.catchCause((cause) => Effect.die(Cause.pretty(cause)))
    )
    const take = (n: number) =>
      Effect.gen(function* () {
        const out: Array<CdcEvent.CdcEvent> = []
        while (out.length < n) out.push(yield* Effect.raceFirst(Queue.take(queue), failed))
        return out
      })
    return { take, fiber }
  })

/** Waits until the source streams from its slot: changes committed before the slot exists are not its to read. */
const streaming = (client: pg.Client, slot: string) =>
  sql(client, "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active", [slot]).pipe(
    Effect.flatMap((rows) => (rows.length > 0 ? Effect.void : Effect.fail("not yet"))),
    Effect.retry({ schedule: Schedule.spaced("50 millis") })
  )

const confirmed = (client: pg.Client, slot: string) =>
  Effect.map(
    sql(client, "SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1", [slot]),
    (rows) => String(rows[0]?.lsn)
  )

layer(PostgresTestServer.layer(), { excludeTestServices: true })("PostgresSource", (it) => {
  it.effect(
    "snapshot rows as r in key order, then the changes committed after, positions increasing",
    () =>
      Effect.gen(function* () {
        const server = yield* PostgresTestServer.PostgresTestServer
        const admin = yield* session(server.url)
        yield* sql(admin, "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric)")
        yield* sql(admin, "INSERT INTO items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 25) g")
        const source = yield* PostgresSource.make({
          url: server.url,
          tables: ["items"],
          slot: "s1",
          publication: "p1",
          snapshotChunkRows: 10
        })
        const run = yield* running(source, Option.none())
        const snapshot = yield* run.take(25)
        assert.deepStrictEqual(
          snapshot.map((e) => e.op),
          Array.from({ length: 25 }, () => "r")
        )
        assert.deepStrictEqual(
          snapshot.map((e) => e.after?.id),
          Array.from({ length: 25 }, (_, i) => i + 1)
        )
        assert.deepStrictEqual(snapshot[2]!.after, { id: 3, name: "item 3", price: "4.5" })
        yield* sql(admin, "INSERT INTO items VALUES (100, 'new', 1)")
        yield* sql(admin, "UPDATE items SET price = 2 WHERE id = 100")
        yield* sql(admin, "DELETE FROM items WHERE id = 1")
        const changes = yield* run.take(3)
        assert.deepStrictEqual(
          changes.map((e) => [e.op, e.before, e.after]),
          [
            ["c", null, { id: 100, name: "new", price: "1" }],
            ["u", { id: 100 }, { id: 100, name: "new", price: "2" }],
            ["d", { id: 1 }, null]
          ]
        )
        const positions = [...snapshot, ...changes].map((e) => e.position)
        for (let i = 1; i < positions.length; i++) assert.isTrue(positions[i]! > positions[i - 1]!, positions[i])
        assert.strictEqual(changes[0]!.source.table, "items")
        assert.strictEqual(changes[0]!.source.schema, "public")
        assert.isNumber(changes[0]!.source.txId)
        // Nothing acknowledged: the slot has not moved past the consistent point.
        const before = yield* confirmed(admin, "s1")
        yield* source.acknowledge(changes[2]!.position)
        yield* Effect.sleep("500 millis")
        const after = yield* confirmed(admin, "s1")
        assert.notStrictEqual(after, before)
        yield* Fiber.interrupt(run.fiber)
      }),
    { timeout: 120_000 }
  )

  it.effect(
    "a restart from a checkpoint delivers exactly what came after it",
    () =>
      Effect.gen(function* () {
        const server = yield* PostgresTestServer.PostgresTestServer
        const admin = yield* session(server.url)
        yield* sql(admin, "CREATE TABLE t2 (id int PRIMARY KEY, v text)")
        const options = { url: server.url, tables: ["t2"], slot: "s2", publication: "p2", snapshot: "never" } as const
        const first = yield* PostgresSource.make(options)
        const run1 = yield* running(first, Option.none())
        yield* streaming(admin, "s2")
        yield* sql(admin, "INSERT INTO t2 SELECT g, 'a' FROM generate_series(1, 3) g")
        yield* sql(admin, "INSERT INTO t2 SELECT g, 'b' FROM generate_series(4, 6) g")
        const got1 = yield* run1.take(6)
        // Durable up to the middle of the second transaction: the restart resends that transaction, and the source
        // skips its first event.
        const checkpoint = got1[3]!.position
        yield* first.acknowledge(checkpoint)
        yield* Fiber.interrupt(run1.fiber)
        yield* sql(admin, "INSERT INTO t2 VALUES (7, 'c')")
        const second = yield* PostgresSource.make(options)
        const run2 = yield* running(second, Option.some(checkpoint))
        const got2 = yield* run2.take(3)
        assert.deepStrictEqual(
          got2.map((e) => e.after?.id),
          [5, 6, 7]
        )
        assert.deepStrictEqual(
          got2.slice(0, 2).map((e) => e.position),
          got1.slice(4).map((e) => e.position)
        )
        assert.deepStrictEqual(
          got2.slice(0, 2).map((e) => e.id),
          got1.slice(4).map((e) => e.id)
        )
        // The replayed events keep their transaction metadata, order within the table included.
        assert.deepStrictEqual(
          got2.slice(0, 2).map((e) => e.transaction),
          got1.slice(4).map((e) => e.transaction)
        )
        yield* Fiber.interrupt(run2.fiber)
      }),
    { timeout: 120_000 }
  )

  it.effect(
    "an interrupted snapshot starts over: the changes made since come first, then every row again as r",
    () =>
      Effect.gen(function* () {
        const server = yield* PostgresTestServer.PostgresTestServer
        const admin = yield* session(server.url)
        yield* sql(admin, "CREATE TABLE t3 (id int PRIMARY KEY, v int)")
        yield* sql(admin, "INSERT INTO t3 SELECT g, 0 FROM generate_series(1, 50) g")
        const options = { url: server.url, tables: ["t3"], slot: "s3", publication: "p3", snapshotChunkRows: 10 }
        const first = yield* PostgresSource.make(options)
        const run1 = yield* running(first, Option.none())
        const partial = yield* run1.take(15)
        yield* Fiber.interrupt(run1.fiber)
        const checkpoint = partial[14]!.position
        // Changes while the pipeline is down, after the slot's consistent point.
        yield* sql(admin, "UPDATE t3 SET v = 1 WHERE id = 3")
        yield* sql(admin, "DELETE FROM t3 WHERE id = 50")
        yield* sql(admin, "INSERT INTO t3 VALUES (51, 1)")
        const second = yield* PostgresSource.make(options)
        const run2 = yield* running(second, Option.some(checkpoint))
        const changes = yield* run2.take(3)
        assert.deepStrictEqual(
          changes.map((e) => [e.op, e.after?.id ?? e.before?.id]),
          [
            ["u", 3],
            ["d", 50],
            ["c", 51]
          ]
        )
        const again = yield* run2.take(50)
        assert.isTrue(again.every((e) => e.op === "r"))
        assert.deepStrictEqual(
          again.map((e) => e.after?.id),
          [...Array.from({ length: 49 }, (_, i) => i + 1), 51]
        )
        assert.deepStrictEqual(again[2]!.after, { id: 3, v: 1 })
        const positions = [checkpoint, ...changes.map((e) => e.position), ...again.map((e) => e.position)]
        for (let i = 1; i < positions.length; i++) assert.isTrue(positions[i]! > positions[i - 1]!, positions[i])
        yield* sql(admin, "UPDATE t3 SET v = 2 WHERE id = 1")
        const [later] = yield* run2.take(1)
        assert.deepStrictEqual([later!.op, later!.after], ["u", { id: 1, v: 2 }])
        assert.isTrue(later!.position > again[49]!.position)
        // The temporary slot is gone, the pipeline's own slot remains.
        const slots = yield* sql(admin, "SELECT slot_name FROM pg_replication_slots ORDER BY 1")
        assert.deepStrictEqual(
          slots.map((r) => r.slot_name).filter((n) => String(n).startsWith("s3")),
          ["s3"]
        )
        yield* Fiber.interrupt(run2.fiber)
      }),
    { timeout: 120_000 }
  )

  it.effect(
    "a finished snapshot is not taken again after a restart at its last row",
    () =>
      Effect.gen(function* () {
        const server = yield* PostgresTestServer.PostgresTestServer
        const admin = yield* session(server.url)
        yield* sql(admin, "CREATE TABLE t4 (id int PRIMARY KEY)")
        yield* sql(admin, "INSERT INTO t4 SELECT generate_series(1, 20)")
        const options = { url: server.url, tables: ["t4"], slot: "s4", publication: "p4", snapshotChunkRows: 7 }
        const first = yield* PostgresSource.make(options)
        const run1 = yield* running(first, Option.none())
        const rows = yield* run1.take(20)
        yield* Fiber.interrupt(run1.fiber)
        yield* sql(admin, "INSERT INTO t4 VALUES (21)")
        const second = yield* PostgresSource.make(options)
        const run2 = yield* running(second, Option.some(rows[19]!.position))
        const [next] = yield* run2.take(1)
        assert.deepStrictEqual([next!.op, next!.after], ["c", { id: 21 }])
        yield* Fiber.interrupt(run2.fiber)
      }),
    { timeout: 120_000 }
  )

  it.effect(
    "a server crash mid-stream: the source reconnects and resumes from the slot with no gap and nothing twice",
    () =>
      Effect.gen(function* () {
        const server = yield* PostgresTestServer.PostgresTestServer
        const admin = yield* session(server.url)
        yield* sql(admin, "CREATE TABLE t5 (id int PRIMARY KEY)")
        const source = yield* PostgresSource.make({
          url: server.url,
          tables: ["t5"],
          slot: "s5",
          publication: "p5",
          snapshot: "never"
        })
        const run = yield* running(source, Option.none())
        yield* streaming(admin, "s5")
        yield* sql(admin, "INSERT INTO t5 SELECT generate_series(1, 100)")
        const before = yield* run.take(100)
        yield* source.acknowledge(before[99]!.position)
        yield* server.crash
        yield* server.restart
        const again = yield* session(server.url)
        yield* sql(again, "INSERT INTO t5 SELECT generate_series(101, 200)")
        const after = yield* run.take(100)
        assert.deepStrictEqual(
          after.map((e) => e.after?.id),
          Array.from({ length: 100 }, (_, i) => 101 + i)
        )
        yield* Fiber.interrupt(run.fiber)
      }),
    { timeout: 180_000 }
  )

  it.effect(
    "an acknowledgement after the stream ended (a drain) still moves the slot, and only to the end of that transaction",
    () =>
      Effect.gen(function* () {
        const server = yield* PostgresTestServer.PostgresTestServer
        const admin = yield* session(server.url)
        yield* sql(admin, "CREATE TABLE t6 (id int PRIMARY KEY)")
        const source = yield* PostgresSource.make({
          url: server.url,
          tables: ["t6"],
          slot: "s6",
          publication: "p6",
          snapshot: "never"
        })
        const run = yield* running(source, Option.none())
        yield* streaming(admin, "s6")
        yield* sql(admin, "INSERT INTO t6 VALUES (1), (2)")
        yield* sql(admin, "INSERT INTO t6 VALUES (3)")
        const events = yield* run.take(3)
        yield* Fiber.interrupt(run.fiber)
        const before = yield* confirmed(admin, "s6")
        const lsnOf = (text: string) => {
          const [hi, lo] = text.split("/")
          return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`)
        }
        // Durable through the first transaction only: the slot moves past its commit, not to the second's.
        yield* source.acknowledge(events[1]!.position)
        const middle = yield* confirmed(admin, "s6")
        const firstCommit = BigInt(`0x${events[1]!.position.slice(0, 16)}`)
        const secondCommit = BigInt(`0x${events[2]!.position.slice(0, 16)}`)
        assert.isTrue(lsnOf(middle) > lsnOf(before), `${middle} > ${before}`)
        assert.isTrue(lsnOf(middle) > firstCommit && lsnOf(middle) <= secondCommit, middle)
        yield* source.acknowledge(events[2]!.position)
        const after = yield* confirmed(admin, "s6")
        assert.isTrue(lsnOf(after) > secondCommit, after)
      }),
    { timeout: 120_000 }
  )

  it.effect(
    "a slot holding more WAL than maxRetainedWalBytes sets the over-bound gauge; within the bound it stays 0",
    () =>
      Effect.gen(function* () {
        const server = yield* PostgresTestServer.PostgresTestServer
        const admin = yield* session(server.url)
        yield* sql(admin, "CREATE TABLE t7 (id int PRIMARY KEY, pad text)")
        const over = yield* PostgresSource.make({
          url: server.url,
          tables: ["t7"],
          slot: "s7",
          publication: "p7",
          snapshot: "never",
          name: "bounded",
          maxRetainedWalBytes: 1
        })
        const within = yield* PostgresSource.make({
          url: server.url,
          tables: ["t7"],
          slot: "s7b",
          publication: "p7",
          snapshot: "never",
          name: "roomy"
        })
        const a = yield* running(over, Option.none())
        const b = yield* running(within, Option.none())
        yield* streaming(admin, "s7")
        yield* streaming(admin, "s7b")
        // Nothing is acknowledged, so the slots keep the WAL of these rows.
        yield* sql(admin, "INSERT INTO t7 SELECT g, repeat('x', 1000) FROM generate_series(1, 2000) g")
        yield* a.take(2000)
        yield* b.take(2000)
        const gauge = (name: string) =>
          Effect.map(
            Metric.value(Metric.withAttributes(PostgresMetrics.retainedWalOverBound, { source: name })),
            (state) => state.value
          )
        const retained = (name: string) =>
          Effect.map(
            Metric.value(Metric.withAttributes(PostgresMetrics.retainedWalBytes, { source: name })),
            (state) => state.value
          )
        // The status check runs every 5 s: wait for one that has seen the rows.
        yield* Effect.gen(function* () {
          if ((yield* retained("bounded")) < 2_000_000) return yield* Effect.fail("not yet")
        }).pipe(Effect.retry({ schedule: Schedule.spaced("500 millis") }))
        assert.strictEqual(yield* gauge("bounded"), 1)
        yield* Effect.gen(function* () {
          if ((yield* retained("roomy")) < 2_000_000) return yield* Effect.fail("not yet")
        }).pipe(Effect.retry({ schedule: Schedule.spaced("500 millis") }))
        assert.strictEqual(yield* gauge("roomy"), 0)
        yield* Fiber.interrupt(a.fiber)
        yield* Fiber.interrupt(b.fiber)
      }),
    { timeout: 120_000 }
  )
})
