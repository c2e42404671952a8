/**
 * An in-process pipeline from a PostgreSQL source into Redis Streams, as `redflow run` wires it, for end-to-end
 * tests: SQL sessions for the writers, the pipeline on a background fiber with its checkpoint observable, the streams
 * read back and decoded, and the small pieces of arithmetic on positions and LSNs the checks need.
 */
import * as CdcEvent from "@redflow/core/CdcEvent"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as Envelope from "@redflow/core/Envelope"
import type * as Position from "@redflow/core/Position"
import * as Source from "@redflow/core/Source"
import * as Session from "@redflow/postgres/internal/Session"
import * as PostgresSource from "@redflow/postgres/PostgresSource"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import { Effect, Exit, Fiber, Layer, Option, Scope, Stream } from "effect"
import { Redis } from "ioredis"

let counter = 0
/** A name no other test of this process uses, valid as a table, slot, publication and stream name. */
export const uniqueName = (label: string): string => `${label}_${process.pid}_${Date.now().toString(36)}_${counter++}`

// ---------------------------------------------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------------------------------------------

export type Rows = ReadonlyArray<Session.Row>

export interface Sql {
  /** Runs one statement; a failure is the server's error (its SQLSTATE in `code`). */
  readonly attempt: (text: string, params?: ReadonlyArray<unknown>) => Effect.Effect<Rows, SqlFailure>
  /** Runs one statement that must succeed (a failure fails the test with the server's message). */
  readonly run: (text: string, params?: ReadonlyArray<unknown>) => Effect.Effect<Rows>
}

export interface SqlFailure {
  readonly code: string | undefined
  readonly message: string
}

/** A plain SQL session (values come back as the server's text), closed with the scope. */
export const connect = (url: string): Effect.Effect<Sql, never, Scope.Scope> =>
  Effect.map(Effect.orDie(Session.make({ url, applicationName: "redflow e2e writer" })), (session) => {
    const attempt = (text: string, params: ReadonlyArray<unknown> = []) =>
      Effect.mapError(session.query(text, params), (e): SqlFailure => ({ code: e.code, message: e.message }))
    return {
      attempt,
      run: (text, params) =>
        Effect.catch(attempt(text, params), (e) => Effect.die(new Error(`SQL failed: ${e.message}`)))
    }
  })

/** `pg_replication_slots.confirmed_flush_lsn` of a slot, `undefined` while the slot does not exist. */
export const confirmedFlush = (sql: Sql, slot: string): Effect.Effect<bigint | undefined> =>
  Effect.map(
    sql.run("SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1", [slot]),
    (rows) => (rows[0]?.lsn == null ? undefined : parseLsn(rows[0].lsn))
  )

/** Whether a slot exists and whether a connection streams from it. */
export const slotState = (sql: Sql, slot: string): Effect.Effect<"absent" | "active" | "inactive"> =>
  Effect.map(sql.run("SELECT active::text AS active FROM pg_replication_slots WHERE slot_name = $1", [slot]), (rows) =>
    rows.length === 0 ? "absent" : rows[0]!.active === "true" ? "active" : "inactive"
  )

/** `X/Y` as a number. */
export const parseLsn = (text: string): bigint => {
  const [hi, lo] = text.split("/")
  if (hi === undefined || lo === undefined) throw new Error(`not an LSN: ${text}`)
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`)
}

export const formatLsn = (lsn: bigint): string =>
  `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`

/** The commit LSN of a change's position (its first 16 hex digits); a snapshot row's is the consistent point - 1. */
export const lsnOfPosition = (position: string): bigint => BigInt(`0x${position.slice(0, 16)}`)

/** `true` for a position of a streamed change (kind `1`), `false` for a snapshot row (kind `0`). */
export const isChangePosition = (position: string): boolean => position[16] === "1"

// ---------------------------------------------------------------------------------------------------------------
// The pipeline
// ---------------------------------------------------------------------------------------------------------------

export interface PipelineOptions {
  readonly source: PostgresSource.Options
  readonly redisUrl: string
  /** The checkpoint key and the high-water field. */
  readonly pipeline: string
  /** Events of table `t` go to stream `<prefix>.t`. */
  readonly prefix: string
  /** Shared between runs to restart from the stored checkpoint. */
  readonly store: CheckpointStore.CheckpointStore["Service"]
  readonly batch?: RedisStreamSink.BatchOptions
}

export interface Pipeline {
  readonly fiber: Fiber.Fiber<void, unknown>
  /** The stored checkpoint now. */
  readonly checkpoint: Effect.Effect<Option.Option<Position.Position>>
  /** Every batch committed so far by this run. */
  readonly batches: () => ReadonlyArray<RedisStreamSink.CommittedBatch>
  /** Fails (dies) with the pipeline's own failure if its fiber has ended. */
  readonly alive: Effect.Effect<void>
}

/**
 * Starts `source → RedisStreamSink (exactly-once) → checkpoint → source.acknowledge` on a fiber of the scope, the
 * source made inside it (as a process would); interrupt the fiber to stop it as a killed process stops.
 */
export const start = (options: PipelineOptions): Effect.Effect<Pipeline, never, Scope.Scope> =>
  Effect.gen(function* () {
    const batches: Array<RedisStreamSink.CommittedBatch> = []
    const run = Effect.gen(function* () {
      const source = yield* PostgresSource.make(options.source)
      const from = yield* options.store.load(options.pipeline)
      yield* source.stream(from).pipe(
        RedisStreamSink.deliver({
          stream: `${options.prefix}.\${source.table}`,
          pipeline: options.pipeline,
          guarantee: "exactly-once",
          ...(options.batch === undefined ? {} : { batch: options.batch })
        }),
        Stream.runForEach((batch) => Effect.sync(() => batches.push(batch))),
        Source.acknowledgeCommits(source, options.pipeline)
      )
    }).pipe(
      Effect.scoped,
      Effect.provide(
        Layer.mergeAll(
          RedisConnection.layer({ url: options.redisUrl }),
          Layer.succeed(CheckpointStore.CheckpointStore, options.store)
        )
      )
    )
    const fiber: Fiber.Fiber<void, unknown> = yield* Effect.forkScoped(run)
    return {
      fiber,
      checkpoint: Effect.orDie(options.store.load(options.pipeline)),
      batches: () => batches,
      alive: Effect.suspend(() => {
        const exit = fiber.pollUnsafe()
        if (exit === undefined) return Effect.void
        return Effect.die(
          new Error(
            Exit.isSuccess(exit)
              ? "the pipeline ended on its own"
              : `the pipeline failed: ${String(Exit.isFailure(exit) ? exit.cause : exit)}`
          )
        )
      })
    }
  })

/** Polls `check` every 50 ms until it gives a value; dies naming `what` after `timeoutMs` or once `pipeline` died. */
export const waitFor = <A>(
  what: string | (() => string),
  check: Effect.Effect<A | undefined>,
  options: { readonly timeoutMs?: number; readonly pipeline?: Pipeline } = {}
): Effect.Effect<A> =>
  Effect.gen(function* () {
    const deadline = Date.now() + (options.timeoutMs ?? 90_000)
    for (;;) {
      if (options.pipeline !== undefined) yield* options.pipeline.alive
      const value = yield* check
      if (value !== undefined) return value
      if (Date.now() > deadline)
        return yield* Effect.die(new Error(`timed out waiting for ${typeof what === "string" ? what : what()}`))
      yield* Effect.sleep("50 millis")
    }
  })

// ---------------------------------------------------------------------------------------------------------------
// Reading the streams back
// ---------------------------------------------------------------------------------------------------------------

export interface Delivered {
  readonly entryId: string
  readonly fields: Readonly<Record<string, string>>
  readonly event: CdcEvent.CdcEvent
}

const envelope = Envelope.make()

const toDelivered = ([entryId, flat]: [string, Array<string>]): Delivered => {
  const fields: Record<string, string> = {}
  for (let i = 0; i < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!
  if (fields.event === undefined) throw new Error(`entry ${entryId} has no event field: ${JSON.stringify(fields)}`)
  return { entryId, fields, event: envelope.decodeSync(fields.event) }
}

const withRedis = <A>(url: string, f: (client: Redis) => Promise<A>): Effect.Effect<A> =>
  Effect.promise(async () => {
    const client = new Redis(url, { lazyConnect: true })
    await client.connect()
    try {
      return await f(client)
    } finally {
      client.disconnect()
    }
  })

/** Every entry of a stream, oldest first, its `event` decoded. */
export const readStream = (url: string, stream: string): Effect.Effect<Array<Delivered>> =>
  withRedis(url, async (client) => {
    const out: Array<Delivered> = []
    let start = "-"
    for (;;) {
      const page = (await client.xrange(stream, start, "+", "COUNT", 10_000)) as Array<[string, Array<string>]>
      for (const entry of page) out.push(toDelivered(entry))
      if (page.length < 10_000) return out
      start = `(${page[page.length - 1]![0]}`
    }
  })

/** The newest entry of a stream, if any. */
export const lastEntry = (url: string, stream: string): Effect.Effect<Delivered | undefined> =>
  withRedis(url, async (client) => {
    const page = (await client.xrevrange(stream, "+", "-", "COUNT", 1)) as Array<[string, Array<string>]>
    return page[0] === undefined ? undefined : toDelivered(page[0])
  })

export const streamLength = (url: string, stream: string): Effect.Effect<number> =>
  withRedis(url, (client) => client.xlen(stream))

/** Fails the test naming the stream and the pair when positions do not strictly increase along a stream. */
export const positionsIncrease = (stream: string, entries: ReadonlyArray<Delivered>): string | undefined => {
  for (let i = 1; i < entries.length; i++) {
    const a = entries[i - 1]!.event.position
    const b = entries[i]!.event.position
    if (!(b > a)) return `${stream}: entry ${i} has position ${b}, not after ${a} (entry ${i - 1})`
  }
  return undefined
}

/** JSON with object keys sorted: two values are deep-equal when their canonical texts are equal. */
export const canonical = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        )
      : v
  )

/** A seeded pseudo-random generator (mulberry32): the same workload on every run. */
export const random = (seed: number) => {
  let s = seed >>> 0
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const int = (n: number) => Math.floor(next() * n)
  return {
    next,
    int,
    pick: <A>(items: ReadonlyArray<A>): A => items[int(items.length)]!,
    chance: (p: number) => next() < p
  }
}
export type Random = ReturnType<typeof random>

/** Whether an event is a change event (not a snapshot row), by its `op`. */
export const isChange = (event: CdcEvent.CdcEvent): boolean => event.op !== "r"
