import { assert, layer } from "@effect/vitest"
import type * as CdcEvent from "@redflow/core/CdcEvent"
import { PostgresTestServer } from "@redflow/testing"
import { Effect, Fiber, Option, Queue, Scope, Stream } from "effect"
import pg from "pg"
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
    const take = (n: number) =>
      Effect.gen(function* () {
        const out: Array<CdcEvent.CdcEvent> = []
        while (out.length < n) out.push(yield* Queue.take(queue))
        return out
      })
    return { take, fiber }
  })

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
})
