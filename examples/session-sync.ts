/**
 * Use case: session synchronization, one of the uses of the contract in docs/DESIGN.md: the sessions a user opens,
 * changes and closes on one application instance are in the memory of every other instance moments later.
 *
 * The `sessions` table is the truth (a login inserts a row, activity updates it, a logout deletes it), written by
 * whichever instance served the request. Every instance keeps all sessions in memory, so a request never waits on
 * the database to know who is calling, and follows the table's change stream to stay current: each instance is a
 * consumer group of its own (`sessions-<instance>-<boot>`, created at the start of the stream, so it rebuilds its
 * memory from the snapshot and every change since, and removed when the instance stops) on a Redis connection of
 * its own. Changes of one session are applied in order (one handler at a time), so the last one wins everywhere.
 *
 * The convergence time of a change is from its commit (PostgreSQL's commit timestamp) until the last of the three
 * other instances has it in memory; p50/p99 are printed after a workload of logins, updates and logouts spread over
 * the four instances: `pnpm example session-sync` (DATABASE_URL and REDIS_URL, or servers started for the run).
 *
 * Library or `redflow run`: the instances only read Redis; in production the pipeline would be `redflow run`
 * beside the database. The example runs it in its own process (examples/harness.ts) so one command shows it all.
 */
import { randomUUID } from "node:crypto"
import { Console, Effect, Random } from "effect"
import type * as Scope from "effect/Scope"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"
import * as StreamAdmin from "@redflow/redis/StreamAdmin"
import * as Harness from "./harness.ts"
import { isMain } from "./shared.ts"

export const setup: Harness.Setup = {
  name: "session-sync",
  tables: {
    sessions:
      "id text PRIMARY KEY, user_id int NOT NULL, data jsonb NOT NULL DEFAULT '{}', " +
      "expires_at timestamptz NOT NULL DEFAULT now() + interval '1 hour'"
  }
}

export type Session = {
  readonly id: string
  readonly user_id: number
  readonly data: Readonly<Record<string, unknown>>
}

/** Which instance committed a transaction, by its xid: how a change's convergence leaves its writer out. */
export type Writers = Map<string, string>

/** One application instance: its sessions in memory, and the requests that change them. */
export interface Instance {
  readonly name: string
  readonly sessions: ReadonlyMap<string, Session>
  /** Changes applied to memory so far. */
  readonly applied: Harness.Progress
  /** When (Date.now()) each change, by event id, reached this instance's memory, with its commit time and xid. */
  readonly seen: ReadonlyMap<string, { readonly at: number; readonly commit: number; readonly xid: string }>
  readonly login: (userId: number) => Effect.Effect<string, Harness.SqlError>
  readonly update: (id: string, data: Record<string, unknown>) => Effect.Effect<void, Harness.SqlError>
  readonly logout: (id: string) => Effect.Effect<void, Harness.SqlError>
}

/** The 32-bit xid of the change events from the 64-bit one `pg_current_xact_id()` returns. */
const xid32 = (xid8: string) => (BigInt(xid8) % 2n ** 32n).toString()

/**
 * Starts an instance: its own PostgreSQL pool and Redis connection, and its consumer group following the sessions
 * stream into memory, for the life of the scope.
 */
export const instance = (
  example: Harness.Example,
  name: string,
  writers: Writers
): Effect.Effect<Instance, never, Scope.Scope> =>
  Effect.gen(function* () {
    const sql = yield* Harness.makeSql(example.databaseUrl, { max: 2, applicationName: `session-sync ${name}` })
    const redis = yield* RedisConnection.make({ url: example.redisUrl, clientName: `session-sync-${name}` }).pipe(
      Effect.orDie
    )
    const sessions = new Map<string, Session>()
    const seen = new Map<string, { at: number; commit: number; xid: string }>()
    const applied = Harness.makeCounter()
    const stream = example.stream("sessions")
    const group = `sessions-${name}-${Date.now().toString(36)}`
    const apply = (event: CdcEvent) =>
      Effect.sync(() => {
        if (event.op === "t") sessions.clear()
        else if (event.op === "d") sessions.delete(String(event.before?.id))
        else {
          const row = event.after as Session
          sessions.set(row.id, { id: row.id, user_id: row.user_id, data: row.data })
        }
        if (event.op !== "r") {
          seen.set(event.id, { at: Date.now(), commit: event.source.ts_ms, xid: String(event.source.txId) })
        }
        applied.add()
      })
    yield* Effect.forkScoped(
      RedisStreamConsumer.run({ stream, group, consumer: name, startId: "0", handler: apply }).pipe(
        Effect.provideService(RedisConnection.RedisConnection, redis)
      )
    )
    // The group dies with the instance: the next one rebuilds its memory from the start of the stream.
    yield* Effect.addFinalizer(() =>
      StreamAdmin.destroyGroup(stream, group).pipe(
        Effect.provideService(RedisConnection.RedisConnection, redis),
        Effect.ignore
      )
    )
    /** A request's statement, noting its transaction as this instance's. */
    const write = (text: string, params: ReadonlyArray<unknown>) =>
      sql.query<{ xid: string }>(`${text} RETURNING pg_current_xact_id()::text AS xid`, params).pipe(
        Effect.tap((rows) =>
          Effect.sync(() => {
            if (rows[0] !== undefined) writers.set(xid32(rows[0].xid), name)
          })
        )
      )
    return {
      name,
      sessions,
      applied: { get: applied.get, atLeast: applied.atLeast },
      seen,
      login: (userId) =>
        Effect.gen(function* () {
          const id = randomUUID()
          yield* write(`INSERT INTO ${example.tables.sessions} (id, user_id, data) VALUES ($1, $2, $3)`, [
            id,
            userId,
            { cart: 0, theme: "light", via: name }
          ])
          return id
        }),
      update: (id, data) =>
        write(`UPDATE ${example.tables.sessions} SET data = data || $2::jsonb WHERE id = $1`, [id, data]).pipe(
          Effect.asVoid
        ),
      logout: (id) => write(`DELETE FROM ${example.tables.sessions} WHERE id = $1`, [id]).pipe(Effect.asVoid)
    } satisfies Instance
  })

/**
 * The convergence time of every change made through `instances`, in ms: from its commit until the last of the
 * other instances had it in memory. Changes not yet everywhere are left out.
 */
export const convergence = (instances: ReadonlyArray<Instance>, writers: Writers): Array<number> => {
  const out: Array<number> = []
  for (const [eventId, first] of instances[0]!.seen) {
    const writer = writers.get(first.xid)
    const others = instances.filter((i) => i.name !== writer).map((i) => i.seen.get(eventId))
    if (others.some((s) => s === undefined)) continue
    out.push(Math.max(0, Math.max(...others.map((s) => s!.at)) - first.commit))
  }
  return out
}

/** The table as each instance should hold it. */
export const tableState = (example: Harness.Example) =>
  example.sql
    .query<Session>(`SELECT id, user_id, data FROM ${example.tables.sessions}`)
    .pipe(Effect.map((rows) => new Map(rows.map((r) => [r.id, r]))))

export interface WorkloadOptions {
  readonly users: number
  readonly updatesPerUser: number
  /** Of the users, how many log out at the end. */
  readonly logouts: number
}

/**
 * Users log in, work and log out, each request served by a random instance: `users` logins, `updatesPerUser`
 * updates each, `logouts` logouts, all at once. Returns the number of changes committed.
 */
export const workload = (instances: ReadonlyArray<Instance>, options: WorkloadOptions) =>
  Effect.gen(function* () {
    const any = () =>
      Random.nextIntBetween(0, instances.length, { halfOpen: true }).pipe(Effect.map((i) => instances[i]!))
    const user = (userId: number) =>
      Effect.gen(function* () {
        const id = yield* (yield* any()).login(userId)
        for (let n = 1; n <= options.updatesPerUser; n++) {
          yield* (yield* any()).update(id, { cart: n, page: `/products/${(userId * n) % 97}` })
        }
        if (userId <= options.logouts) yield* (yield* any()).logout(id)
      })
    yield* Effect.forEach(
      Array.from({ length: options.users }, (_, i) => i + 1),
      user,
      { concurrency: 8, discard: true }
    )
    return options.users * (1 + options.updatesPerUser) + options.logouts
  })

const app = (example: Harness.Example) =>
  Effect.gen(function* () {
    const writers: Writers = new Map()
    const names = ["a", "b", "c", "d"]
    const instances: Array<Instance> = []
    for (const name of names) instances.push(yield* instance(example, name, writers))
    const [a, b, c] = instances as [Instance, Instance, Instance, Instance]
    yield* Console.log(
      `\nFour application instances (${names.join(", ")}), each with its own PostgreSQL pool, Redis connection, ` +
        "consumer group and sessions in memory."
    )
    let changes = 0
    const show = (what: string, by: Instance) =>
      Effect.gen(function* () {
        changes++
        yield* Effect.forEach(instances, (i) => i.applied.atLeast(changes), { discard: true })
        const last = [...by.seen.values()].at(-1)!
        const others = instances
          .filter((i) => i !== by)
          .map((i) => `${i.name} after ${[...i.seen.values()].at(-1)!.at - last.commit} ms`)
        yield* Console.log(`${by.name}: ${what}; in memory on ${others.join(", ")}.`)
      })
    const alice = yield* a.login(1)
    yield* show(`alice logs in (session ${alice.slice(0, 8)}…)`, a)
    yield* c.update(alice, { cart: 2 })
    yield* show(`alice puts 2 items in her cart`, c)
    yield* Console.log(`   b's memory: ${JSON.stringify(b.sessions.get(alice))}`)
    yield* b.logout(alice)
    yield* show(`alice logs out`, b)
    yield* Console.log(`   sessions in memory: ${instances.map((i) => `${i.name} ${i.sessions.size}`).join(", ")}`)

    const options = { users: 200, updatesPerUser: 3, logouts: 150 }
    yield* Console.log(
      `\nWorkload: ${options.users} users log in, make ${options.updatesPerUser} changes each and ${options.logouts} ` +
        "log out, each request on a random instance..."
    )
    const committed = yield* workload(instances, options)
    yield* Effect.forEach(instances, (i) => i.applied.atLeast(changes + committed), { discard: true })
    const table = yield* tableState(example)
    const agree = instances.filter(
      (i) =>
        i.sessions.size === table.size &&
        [...table].every(([id, row]) => JSON.stringify(i.sessions.get(id)) === JSON.stringify(row))
    )
    yield* Console.log(
      `${committed} changes committed; ${agree.length} of 4 instances hold exactly the table's ${table.size} sessions.`
    )
    yield* Console.log(
      `Convergence (commit → in memory on the three other instances): ${Harness.latencyText(convergence(instances, writers))}.`
    )
  })

if (isMain(import.meta)) Harness.main(setup, (example) => Effect.scoped(app(example)))
