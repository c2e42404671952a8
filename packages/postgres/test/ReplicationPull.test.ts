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
      // The messages of one read come in one pull: fewer pulls than messages (one per message before). How many a
      // read holds depends on how fast the walsender writes: more than 10 on average on an idle machine, under 5 on a
      // loaded CI one (629 pulls for 3,003 messages).
      assert.isBelow(sizes.length, (rows + 3) / 2, `${sizes.length} pulls for ${rows + 3} messages`)
    })
  )
})
