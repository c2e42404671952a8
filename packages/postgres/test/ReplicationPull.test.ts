/**
 * `ReplicationClient.open`, the pull the source reads through: a pull returns what arrived together (the messages of
 * a socket read in one array, not one message per pull), never more than `highWater` of them, in order, and nothing is
 * lost between pulls.
 */
import { assert, layer } from "@effect/vitest"
import { PostgresTestServer } from "@redflow/testing"
import { Effect } from "effect"
import pg from "pg"
import * as ReplicationClient from "../src/internal/ReplicationClient.ts"

const withSession = <A>(url: string, f: (client: pg.Client) => Promise<A>) =>
  Effect.promise(async () => {
    const client = new pg.Client({ connectionString: url })
    client.on("error", () => undefined)
    await client.connect()
    try {
      return await f(client)
    } finally {
      await client.end().catch(() => undefined)
    }
  })

layer(PostgresTestServer.layer(), { excludeTestServices: true })("ReplicationClient.open", (it) => {
  it.effect("a pull carries what arrived together, at most highWater messages, in order and with nothing lost", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const rows = 3_000
      const highWater = 100
      yield* withSession(server.url, (c) =>
        c.query("CREATE TABLE pulled (id int PRIMARY KEY, note text); CREATE PUBLICATION pull_pub FOR TABLE pulled")
      )
      const replication = yield* ReplicationClient.make({ url: server.url })
      const slot = yield* replication.createSlot("pull_slot", { snapshot: "nothing" })
      yield* withSession(server.url, (c) =>
        c.query(`INSERT INTO pulled SELECT g, md5(g::text) FROM generate_series(1, ${rows}) g`)
      )
      const take = yield* replication.open({
        slot: "pull_slot",
        startLsn: slot.consistentPoint,
        publications: ["pull_pub"],
        highWater
      })
      // Before the first pull, the walsender sends the whole transaction: the inbox fills to highWater, the socket is
      // paused, and the rest waits in the kernel's buffers. Every later socket read then brings as much as a read
      // holds, whatever the machine's load, so the pulls are full ones.
      const end = yield* withSession(server.url, (c) =>
        c.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn").then((r) => r.rows[0]!.lsn)
      )
      for (let i = 0; ; i++) {
        const sent = yield* withSession(server.url, (c) =>
          c
            .query<{ done: boolean }>(
              "SELECT coalesce(bool_and(sent_lsn >= $1::pg_lsn), false) AS done FROM pg_stat_replication",
              [end]
            )
            .then((r) => r.rows[0]!.done)
        )
        if (sent) break
        if (i === 600) assert.fail(`the walsender never sent up to ${end}`)
        yield* Effect.sleep("50 millis")
      }
      const sizes: Array<number> = []
      const ids: Array<number> = []
      let committed = false
      while (!committed) {
        const batch = yield* take
        sizes.push(batch.length)
        for (const event of batch) {
          if (event._tag !== "Data") continue
          const m = event.message
          if (m._tag === "Insert") ids.push(Number(m.new[0]))
          if (m._tag === "Commit") committed = true
        }
      }
      assert.deepStrictEqual(
        ids,
        Array.from({ length: rows }, (_, i) => i + 1),
        "every row, in order, none twice"
      )
      assert.isTrue(
        sizes.every((n) => n >= 1 && n <= highWater),
        `every pull holds 1 to ${highWater} messages: ${sizes.join(" ")}`
      )
      // The messages of a read come in one pull, at most highWater of them: about rows / highWater full pulls, plus
      // one short pull where a socket read ended (32 pulls for 3,003 messages here, idle or loaded; one per message
      // before, 3,003).
      const full = sizes.filter((n) => n === highWater).length
      assert.isAtLeast(full, Math.floor((rows + 3) / highWater / 2), `${full} full pulls: ${sizes.join(" ")}`)
      assert.isAtMost(sizes.length, 2 * Math.ceil((rows + 3) / highWater), `${sizes.length} pulls: ${sizes.join(" ")}`)
    })
  )
})
