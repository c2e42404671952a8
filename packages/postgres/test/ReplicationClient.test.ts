import { assert, layer } from "@effect/vitest"
import { PostgresTestServer } from "@redflow/testing"
import { Effect, Scope, Stream } from "effect"
import pg from "pg"
import * as Pgoutput from "../src/internal/Pgoutput.ts"
import * as ReplicationClient from "../src/internal/ReplicationClient.ts"

/** A plain SQL session for the workload, closed with its scope. */
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

const sql = (client: pg.Client, text: string) =>
  Effect.promise(() => client.query(text).then((result) => result.rows as Array<Record<string, unknown>>))

const confirmedFlush = (client: pg.Client, slot: string) =>
  sql(client, `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = '${slot}'`).pipe(
    Effect.map((rows) => Pgoutput.parseLsn(String(rows[0]?.lsn)) ?? 0n)
  )

const U = Pgoutput.UnchangedToast

interface Change {
  readonly op: string
  readonly table: string
  readonly oldKind?: string | undefined
  readonly old?: ReadonlyArray<unknown> | undefined
  readonly new?: ReadonlyArray<unknown> | undefined
  readonly tables?: ReadonlyArray<string> | undefined
}

interface Transaction {
  readonly xid: number
  readonly commitLsn: bigint
  readonly endLsn: bigint
  readonly changes: Array<Change>
}

/** Groups the decoded messages into transactions, checking BEGIN/COMMIT framing on the way. */
const transactionsOf = (events: ReadonlyArray<ReplicationClient.Event>): Array<Transaction> => {
  const relations = new Map<number, string>()
  const done: Array<Transaction> = []
  let open: { xid: number; finalLsn: bigint; changes: Array<Change> } | undefined
  for (const event of events) {
    if (event._tag !== "Data") continue
    const m = event.message
    const table = (id: number) => relations.get(id) ?? `unknown relation ${id}`
    switch (m._tag) {
      case "Relation":
        relations.set(m.relationId, `${m.schema}.${m.table}`)
        break
      case "Begin":
        assert.isUndefined(open, "BEGIN inside a transaction")
        open = { xid: m.xid, finalLsn: m.finalLsn, changes: [] }
        break
      case "Commit":
        assert.isDefined(open, "COMMIT outside a transaction")
        assert.strictEqual(m.commitLsn, open!.finalLsn, "COMMIT's LSN is BEGIN's final LSN")
        done.push({ xid: open!.xid, commitLsn: m.commitLsn, endLsn: m.endLsn, changes: open!.changes })
        open = undefined
        break
      case "Insert":
        open!.changes.push({ op: "c", table: table(m.relationId), new: m.new })
        break
      case "Update":
        open!.changes.push({ op: "u", table: table(m.relationId), oldKind: m.oldKind, old: m.old, new: m.new })
        break
      case "Delete":
        open!.changes.push({ op: "d", table: table(m.relationId), oldKind: m.oldKind, old: m.old })
        break
      case "Truncate":
        open!.changes.push({ op: "t", table: "", tables: m.relationIds.map(table) })
        break
    }
  }
  return done
}

const strip = (change: Change): Change =>
  Object.fromEntries(Object.entries(change).filter(([, value]) => value !== undefined)) as unknown as Change

layer(PostgresTestServer.layer({ settings: { wal_sender_timeout: "2s" } }))("ReplicationClient", (it) => {
  it.effect(
    "streams what was committed, in commit order, decoded (TOAST unchanged, old keys, full old rows, truncate)",
    () =>
      Effect.gen(function* () {
        const server = yield* PostgresTestServer.PostgresTestServer
        const admin = yield* session(server.url)
        yield* sql(admin, "CREATE TABLE items (id int PRIMARY KEY, n int, body text)")
        yield* sql(admin, "CREATE TABLE other (id int PRIMARY KEY, v text)")
        yield* sql(admin, "ALTER TABLE other REPLICA IDENTITY FULL")
        yield* sql(admin, "CREATE PUBLICATION pub1 FOR TABLE items, other")

        const replication = yield* ReplicationClient.make({ url: server.url })
        const slot = yield* replication.createSlot("slot1", { snapshot: "export" })
        assert.strictEqual(slot.slotName, "slot1")
        assert.strictEqual(slot.outputPlugin, "pgoutput")
        assert.match(slot.snapshotName ?? "", /^[0-9A-F]+-[0-9A-F]+-\d+$/)
        // The exported snapshot is usable while the creating connection stays idle.
        const reader = yield* session(server.url)
        yield* sql(reader, "BEGIN ISOLATION LEVEL REPEATABLE READ")
        yield* sql(reader, `SET TRANSACTION SNAPSHOT '${slot.snapshotName}'`)
        assert.deepStrictEqual(yield* sql(reader, "SELECT count(*)::int AS n FROM items"), [{ n: 0 }])
        yield* sql(reader, "COMMIT")

        // Interleaved: A begins and writes first, B writes, B commits, A writes again and commits.
        const a = yield* session(server.url)
        const b = yield* session(server.url)
        const c = yield* session(server.url)
        yield* sql(a, "BEGIN")
        yield* sql(a, "INSERT INTO items VALUES (1, 10, 'a')")
        yield* sql(b, "BEGIN")
        yield* sql(b, "INSERT INTO items VALUES (2, 20, 'b')")
        yield* sql(c, "BEGIN")
        yield* sql(c, "INSERT INTO items VALUES (99, 0, 'rolled back')")
        yield* sql(b, "UPDATE items SET n = 21 WHERE id = 2")
        yield* sql(b, "COMMIT")
        yield* sql(a, "INSERT INTO items VALUES (3, 30, 'c')")
        yield* sql(c, "ROLLBACK")
        yield* sql(a, "COMMIT")
        // A value stored out of line (random text does not compress below the TOAST threshold).
        const big = String(
          (yield* sql(admin, "SELECT string_agg(md5(random()::text), '') AS s FROM generate_series(1, 400)"))[0]!.s
        )
        yield* sql(admin, `INSERT INTO items VALUES (10, 1, '${big}')`)
        yield* sql(admin, "UPDATE items SET n = 2 WHERE id = 10")
        yield* sql(admin, "UPDATE items SET id = 5 WHERE id = 2")
        yield* sql(admin, "INSERT INTO other VALUES (1, 'x'), (2, 'y')")
        yield* sql(admin, "UPDATE other SET v = 'z' WHERE id = 1")
        yield* sql(a, "BEGIN")
        yield* sql(a, "DELETE FROM items WHERE id = 1")
        yield* sql(a, "DELETE FROM other WHERE id = 2")
        yield* sql(a, "COMMIT")
        yield* sql(admin, "TRUNCATE other")

        const expected: Array<Array<Change>> = [
          [
            { op: "c", table: "public.items", new: ["2", "20", "b"] },
            { op: "u", table: "public.items", new: ["2", "21", "b"] }
          ],
          [
            { op: "c", table: "public.items", new: ["1", "10", "a"] },
            { op: "c", table: "public.items", new: ["3", "30", "c"] }
          ],
          [{ op: "c", table: "public.items", new: ["10", "1", big] }],
          [{ op: "u", table: "public.items", new: ["10", "2", U] }],
          [{ op: "u", table: "public.items", oldKind: "key", old: ["2", null, null], new: ["5", "21", "b"] }],
          [
            { op: "c", table: "public.other", new: ["1", "x"] },
            { op: "c", table: "public.other", new: ["2", "y"] }
          ],
          [{ op: "u", table: "public.other", oldKind: "full", old: ["1", "x"], new: ["1", "z"] }],
          [
            { op: "d", table: "public.items", oldKind: "key", old: ["1", null, null] },
            { op: "d", table: "public.other", oldKind: "full", old: ["2", "y"] }
          ],
          [{ op: "t", table: "", tables: ["public.other"] }]
        ]

        let commits = 0
        const events = yield* replication
          .stream({ slot: "slot1", startLsn: slot.consistentPoint, publications: ["pub1"] })
          .pipe(
            Stream.takeUntil((event) => event._tag === "Data" && event.message._tag === "Commit" && ++commits === 9),
            Stream.runCollect
          )
        const transactions = transactionsOf(events)
        assert.deepStrictEqual(
          transactions.map((t) => t.changes.map(strip)),
          expected,
          "the decoded changes are the committed ones, in commit order, the rolled-back one absent"
        )
        const unchanged = transactions[3]!.changes[0]!.new![2]
        assert.strictEqual(unchanged, Pgoutput.UnchangedToast, "an unchanged TOAST column is the marker, not null")

        // (commit LSN, index in transaction) strictly increases in emission order, though B's insert came after
        // A's first one in the WAL.
        const positions = transactions.flatMap((t) => t.changes.map((_, index) => [t.commitLsn, index] as const))
        for (let i = 1; i < positions.length; i++) {
          const [lsn, index] = positions[i]!
          const [previousLsn, previousIndex] = positions[i - 1]!
          assert.isTrue(lsn > previousLsn || (lsn === previousLsn && index > previousIndex), `position ${i} increases`)
        }
        assert.isTrue(transactions.every((t) => t.commitLsn >= slot.consistentPoint))
        assert.notStrictEqual(transactions[0]!.xid, transactions[1]!.xid)
      })
  )

  it.effect("never moves the slot's confirmed_flush_lsn past what was acknowledged, keepalives included", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const admin = yield* session(server.url)
      yield* sql(admin, "CREATE TABLE acks (id int PRIMARY KEY)")
      yield* sql(admin, "CREATE PUBLICATION pub2 FOR TABLE acks")
      const replication = yield* ReplicationClient.make({ url: server.url })
      const slot = yield* replication.createSlot("slot2", { snapshot: "nothing" })
      for (let i = 1; i <= 5; i++) yield* sql(admin, `INSERT INTO acks VALUES (${i})`)

      // Acknowledge the second transaction only; go on receiving the rest and answering keepalives.
      let commits = 0
      let acknowledged = 0n
      let answeredAfterAck = 0
      let worstExcess = 0n
      yield* replication.stream({ slot: "slot2", startLsn: slot.consistentPoint, publications: ["pub2"] }).pipe(
        Stream.tap((event) =>
          Effect.gen(function* () {
            if (event._tag === "Data" && event.message._tag === "Commit" && ++commits === 2) {
              acknowledged = event.message.endLsn
              yield* replication.acknowledge(acknowledged)
            }
            if (event._tag === "Keepalive" && event.replyRequested && acknowledged > 0n) answeredAfterAck++
            const confirmed = yield* confirmedFlush(admin, "slot2")
            if (acknowledged > 0n && confirmed - acknowledged > worstExcess) worstExcess = confirmed - acknowledged
          })
        ),
        // The server asks for a reply every wal_sender_timeout / 2; three answered requests after the ack.
        Stream.takeUntil(() => answeredAfterAck >= 3),
        Stream.runDrain
      )
      assert.strictEqual(commits, 5)
      assert.isTrue(replication.received() > acknowledged, "more was received than acknowledged")
      assert.strictEqual(worstExcess, 0n, "confirmed_flush_lsn never passed the acknowledged LSN")
      assert.strictEqual(yield* confirmedFlush(admin, "slot2"), acknowledged, "and it did reach it")
      assert.strictEqual(replication.acknowledged(), acknowledged)
    })
  )

  it.effect("fails with a typed error naming the slot when it does not exist", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const replication = yield* ReplicationClient.make({ url: server.url })
      const error = yield* Effect.flip(
        replication.stream({ slot: "no_such_slot", startLsn: 0n, publications: ["pub1"] }).pipe(Stream.runDrain)
      )
      assert.strictEqual(error._tag, "PostgresReplicationError")
      assert.strictEqual(error.operation, "startReplication")
      assert.strictEqual(error.code, "42704")
      assert.include(error.message, "no_such_slot")
    })
  )
})
