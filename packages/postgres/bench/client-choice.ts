/**
 * The measurements behind the choice of replication client (packages/postgres/README.md):
 *
 * 1. Decode throughput, rows/s: a pgbench TPC-B-like load (4 changed rows per transaction: 3 UPDATEs and one
 *    INSERT) is written first, then each client reads the same WAL from a slot created before the load:
 *    `pg_recvlogical` to /dev/null (the server's ceiling), this package's ReplicationClient (pg + own decoder), and
 *    `pg-logical-replication` with its PgoutputPlugin.
 * 2. Whether acknowledgement can be held to the caller's LSN: a client that received changes but acknowledged
 *    nothing, then the slot's `confirmed_flush_lsn` a few seconds later.
 *
 * Run: `pnpm exec node packages/postgres/bench/client-choice.ts [transactions]` (default 20000). Wall-clock numbers
 * on a shared machine: read them as ratios within one run.
 */
import * as ChildProcess from "node:child_process"
import * as Path from "node:path"
import { PostgresTestServer } from "@redflow/testing"
import { Effect, Stream } from "effect"
import pg from "pg"
import { LogicalReplicationService, PgoutputPlugin } from "pg-logical-replication"
import * as Pgoutput from "../src/internal/Pgoutput.ts"
import * as ReplicationClient from "../src/internal/ReplicationClient.ts"

const transactions = Number(process.argv[2] ?? 20_000)
const server = await PostgresTestServer.spawnPostgresServer({ settings: { wal_sender_timeout: "4s" } })
const run = (binary: string, args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  new Promise<void>((resolve, reject) =>
    ChildProcess.execFile(
      Path.join(server.binDir, binary),
      [...args],
      { env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024 },
      (error, _stdout, stderr) => (error ? reject(new Error(`${binary}: ${error.message}\n${stderr}`)) : resolve())
    )
  )
const admin = new pg.Client({ connectionString: server.url })
await admin.connect()
const one = async (sql: string) => (await admin.query(sql)).rows[0] as Record<string, string>
const confirmed = async (slot: string) =>
  (await one(`SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots WHERE slot_name = '${slot}'`)).l!

try {
  await run("pgbench", ["-i", "-q", "-s", "1", server.url])
  await admin.query("ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY")
  await admin.query("CREATE PUBLICATION bench FOR ALL TABLES")
  for (const slot of ["s_recvlogical", "s_ours", "s_plr"]) {
    await admin.query(`SELECT pg_create_logical_replication_slot('${slot}', 'pgoutput')`)
  }
  const loadStart = performance.now()
  await run("pgbench", ["-n", "-c", "4", "-j", "2", "-t", String(transactions / 4), server.url], {
    PGOPTIONS: "-c synchronous_commit=off"
  })
  const loadSeconds = (performance.now() - loadStart) / 1000
  const end = Pgoutput.parseLsn((await one("SELECT pg_current_wal_insert_lsn()::text AS l")).l!)!
  // A marker transaction after the load: a client is done when it sees a commit past `end`.
  await admin.query("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (0, 0, 0, 0, now())")
  const endText = Pgoutput.formatLsn(end)
  const rows = 4 * transactions
  console.log(
    `load: ${transactions} transactions, ${rows} changed rows in ${loadSeconds.toFixed(1)} s, WAL to ${endText}`
  )

  const report = (name: string, seconds: number, counted?: number) =>
    console.log(
      `${name.padEnd(28)} ${seconds.toFixed(2).padStart(7)} s  ${Math.round(rows / seconds)
        .toString()
        .padStart(9)} rows/s${counted === undefined ? "" : `  (${counted} rows decoded)`}`
    )

  {
    const start = performance.now()
    await run("pg_recvlogical", [
      "-d",
      server.url,
      "--slot",
      "s_recvlogical",
      "--start",
      "-P",
      "pgoutput",
      "-o",
      "proto_version=1",
      "-o",
      "publication_names=bench",
      "-E",
      endText,
      "--no-loop",
      "-f",
      "/dev/null"
    ])
    report("pg_recvlogical (ceiling)", (performance.now() - start) / 1000)
  }

  {
    let counted = 0
    const start = performance.now()
    await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const client = yield* ReplicationClient.make({ url: server.url })
          yield* client.stream({ slot: "s_ours", startLsn: 0n, publications: ["bench"] }).pipe(
            Stream.takeUntil((event) => {
              if (event._tag !== "Data") return false
              const tag = event.message._tag
              if (tag === "Insert" || tag === "Update" || tag === "Delete") counted++
              return tag === "Commit" && event.message.commitLsn > end
            }),
            Stream.runDrain
          )
        })
      )
    )
    report("ReplicationClient (pg+own)", (performance.now() - start) / 1000, counted - 1)
  }

  {
    let counted = 0
    const start = performance.now()
    const service = new LogicalReplicationService(
      { connectionString: server.url },
      { acknowledge: { auto: false, timeoutSeconds: 0 } }
    )
    const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: ["bench"] })
    await new Promise<void>((resolve, reject) => {
      service.on("data", (_lsn: string, message: { tag: string; commitLsn?: string }) => {
        if (message.tag === "insert" || message.tag === "update" || message.tag === "delete") counted++
        if (message.tag === "commit" && Pgoutput.parseLsn(message.commitLsn ?? "0/0")! > end) resolve()
      })
      service.on("error", reject)
      service.subscribe(plugin, "s_plr").catch(reject)
    })
    report("pg-logical-replication", (performance.now() - start) / 1000, counted - 1)
    await service.stop()
  }

  // Acknowledgement: receive changes, acknowledge nothing, read the slot's confirmed point.
  await admin.query("CREATE TABLE ack_probe (id int PRIMARY KEY)")
  await admin.query("CREATE PUBLICATION ack FOR TABLE ack_probe")
  for (const [slot, auto, timeoutSeconds, first] of [
    ["a_plr_timer", false, 1, 1],
    ["a_plr_auto", true, 0, 11]
  ] as const) {
    await admin.query(`SELECT pg_create_logical_replication_slot('${slot}', 'pgoutput')`)
    const before = await confirmed(slot)
    const service = new LogicalReplicationService(
      { connectionString: server.url },
      { acknowledge: { auto, timeoutSeconds } }
    )
    service.on("error", () => undefined)
    // A handler that has not made anything durable (it never finishes).
    service.on("data", () => new Promise(() => undefined))
    void service.subscribe(new PgoutputPlugin({ protoVersion: 1, publicationNames: ["ack"] }), slot).catch(() => {})
    await new Promise((resolve) => service.once("start", resolve))
    await admin.query(`INSERT INTO ack_probe SELECT g FROM generate_series(${first}, ${first + 9}) g`)
    await new Promise((resolve) => setTimeout(resolve, 3_000))
    console.log(
      `pg-logical-replication auto=${auto} timeoutSeconds=${timeoutSeconds}: nothing durable downstream, ` +
        `confirmed_flush_lsn ${before} -> ${await confirmed(slot)}`
    )
    await service.stop()
  }
  {
    await admin.query("SELECT pg_create_logical_replication_slot('a_ours', 'pgoutput')")
    const before = await confirmed("a_ours")
    let received = ""
    await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const client = yield* ReplicationClient.make({ url: server.url })
          yield* Effect.promise(() => admin.query("INSERT INTO ack_probe VALUES (100)"))
          let keepalives = 0
          yield* client.stream({ slot: "a_ours", startLsn: 0n, publications: ["ack"] }).pipe(
            Stream.takeUntil((event) => event._tag === "Keepalive" && event.replyRequested && ++keepalives === 3),
            Stream.runDrain
          )
          received = Pgoutput.formatLsn(client.received())
        })
      )
    )
    console.log(
      `ReplicationClient, nothing acknowledged, 3 keepalives answered: received ${received}, ` +
        `confirmed_flush_lsn ${before} -> ${await confirmed("a_ours")}`
    )
  }
} finally {
  await admin.end()
  await server.stop()
}
