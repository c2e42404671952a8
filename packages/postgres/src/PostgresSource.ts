/**
 * The PostgreSQL source: changes of chosen tables, read by logical replication with the built-in `pgoutput` plugin,
 * as a resumable {@link Source} of change events.
 *
 * @since 0.1.0
 */
import * as CdcEvent from "@redflow/core/CdcEvent"
import * as ConfigError from "@redflow/core/ConfigError"
import type * as Position from "@redflow/core/Position"
import type * as Source from "@redflow/core/Source"
import * as Arr from "effect/Array"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type * as Pull from "effect/Pull"
import type * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import * as SchemaTransformation from "effect/SchemaTransformation"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Pgoutput from "./internal/Pgoutput.ts"
import * as Positions from "./internal/Positions.ts"
import * as ReplicationClient from "./internal/ReplicationClient.ts"
import * as Session from "./internal/Session.ts"
import * as Setup from "./internal/Setup.ts"
import type { TableInfo } from "./internal/Tables.ts"
import * as Values from "./internal/Values.ts"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as PostgresMetrics from "./PostgresMetrics.ts"
import { PostgresConfigError, type PostgresError, PostgresProtocolError, PostgresUnavailable } from "./PostgresError.ts"

/**
 * Options of {@link make}: the server and the tables to read, the names of the slot and the publication, the
 * initial snapshot, a warning bound on retained WAL, how long to retry, and how much is held in memory.
 *
 * @since 0.1.0
 * @category options
 */
export interface Options {
  /** `postgres://user@host:port/db`. A password in the URL works; `password` (a `Redacted`) is preferred. */
  readonly url: string
  readonly password?: Redacted.Redacted | undefined
  /** Tables to capture, `schema.table` or `table` (schema `public`). At least one. */
  readonly tables: ReadonlyArray<string>
  /** The source's name in events (`source.name`) and its checkpoint key. Default `postgres`. */
  readonly name?: string | undefined
  /** The replication slot, created when absent. Default `redflow`. */
  readonly slot?: string | undefined
  /** The publication, created for `tables` when absent; an existing one must publish them. Default `redflow`. */
  readonly publication?: string | undefined
  /** `initial` (default): read the tables first when there is no checkpoint; `never`: stream changes only. */
  readonly snapshot?: "initial" | "never" | undefined
  /** Rows per snapshot query. Default 10,000. */
  readonly snapshotChunkRows?: number | undefined
  /** Over this bound, a warning and `source_slot_retained_wal_over_bound` 1. Default 1 GiB. */
  readonly maxRetainedWalBytes?: number | undefined
  /** Reconnect backoff, as the sink's: exponential from 200 ms, capped at 10 s, giving up after `retryFor`. */
  readonly retryFor?: Duration.Input | undefined
  /** Decoded replication messages held before the socket is paused. Default 1,024. */
  readonly highWater?: number | undefined
}

// ---------------------------------------------------------------------------------------------------------------
// The source
// ---------------------------------------------------------------------------------------------------------------

/**
 * A {@link Source} of PostgreSQL changes, told what is durable downstream by {@link Source.acknowledgeCommits}.
 *
 * @since 0.1.0
 * @category models
 */
export interface PostgresSource extends Source.Source<PostgresError> {
  readonly acknowledge: (position: Position.Position) => Effect.Effect<void>
  readonly slot: string
  readonly publication: string
  /** The captured tables, `schema.table`. */
  readonly tables: ReadonlyArray<string>
  /** The server as `host:port/db`. */
  readonly server: string
}

const defaults = {
  name: "postgres",
  slot: "redflow",
  publication: "redflow",
  snapshot: "initial",
  snapshotChunkRows: 10_000,
  maxRetainedWalBytes: 1024 ** 3,
  retryFor: "5 minutes",
  highWater: 1024
} as const

/** How often the lag and retained-WAL figures are read, and a standby status is sent while paused. */
const STATUS_INTERVAL = "5 seconds"

interface Config {
  readonly url: string
  readonly password: Redacted.Redacted | undefined
  readonly tables: ReadonlyArray<string>
  readonly name: string
  readonly slot: string
  readonly publication: string
  readonly snapshot: "initial" | "never"
  readonly snapshotChunkRows: number
  readonly maxRetainedWalBytes: number
  readonly retryFor: Duration.Duration
  readonly highWater: number
  readonly server: string
  readonly user: string
  readonly db: string
}

/** The component named by the source's configuration errors. */
const COMPONENT = "PostgresSource"

const URL_FORM = "give postgres://user@host:5432/database"

/** What is wrong with a connection URL, or `undefined` when it can work. */
const urlProblem = (url: string): string | undefined => {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return `not a URL; ${URL_FORM}`
  }
  if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:") {
    return `the scheme is ${JSON.stringify(parsed.protocol)}; ${URL_FORM}`
  }
  if (parsed.pathname.replace(/^\//, "") === "") return "names no database; end it with /database"
  return undefined
}

const PositiveInt = Schema.Number.check(
  Schema.makeFilter(
    (n: number) =>
      (Number.isSafeInteger(n) && n > 0) || `must be a positive integer, got ${n}; give a whole number above 0`
  )
)

const Name = Schema.String.check(Schema.makeFilter((s: string) => s !== "" || "must be a non-empty string"))

const RetryFor = Schema.Unknown.pipe(
  Schema.decodeTo(
    Schema.Duration,
    SchemaTransformation.transformEffect<Duration.Duration, unknown>({
      decode: (input) => {
        let d: Option.Option<Duration.Duration>
        try {
          d = Duration.fromInput(input as Duration.Input)
        } catch {
          d = Option.none()
        }
        return Option.isSome(d)
          ? Effect.succeed(d.value)
          : Effect.fail(
              new SchemaIssue.InvalidValue({ message: `not a duration: ${String(input)}; give e.g. "5 minutes"` })
            )
      },
      encode: (d) => Effect.succeed(d)
    })
  )
)

/**
 * The source's options as a Schema: what each accepts. An option that is simply malformed fails with a `ConfigError`
 * (component `PostgresSource`); what only the server can tell (a table that does not exist, `wal_level`) is a
 * {@link PostgresConfigError} later, naming the server and the fix.
 */
const OptionsSchema = Schema.Struct({
  url: Schema.String.check(Schema.makeFilter((url: string) => urlProblem(url) ?? true)),
  password: Schema.optional(Schema.Redacted(Schema.String)),
  tables: Schema.Array(Schema.String).check(
    Schema.makeFilter(
      (tables: ReadonlyArray<string>) =>
        tables.length > 0 || "no table given; name at least one table, e.g. public.orders"
    )
  ),
  name: Schema.optional(Name),
  slot: Schema.optional(Name),
  publication: Schema.optional(Name),
  snapshot: Schema.optional(
    Schema.Literals(["initial", "never"]).annotate({ message: `expected "initial" or "never"` })
  ),
  snapshotChunkRows: Schema.optional(PositiveInt),
  maxRetainedWalBytes: Schema.optional(PositiveInt),
  retryFor: Schema.optional(RetryFor),
  highWater: Schema.optional(PositiveInt)
})

const decodeOptions = ConfigError.decoder(COMPONENT, OptionsSchema)

const validate = (options: Options): Effect.Effect<Config, ConfigError.ConfigError> =>
  Effect.map(decodeOptions(options), (decoded) => {
    const parsed = new URL(decoded.url)
    return {
      url: decoded.url,
      password: decoded.password,
      tables: decoded.tables,
      name: decoded.name ?? defaults.name,
      slot: decoded.slot ?? defaults.slot,
      publication: decoded.publication ?? defaults.publication,
      snapshot: decoded.snapshot ?? defaults.snapshot,
      snapshotChunkRows: decoded.snapshotChunkRows ?? defaults.snapshotChunkRows,
      maxRetainedWalBytes: decoded.maxRetainedWalBytes ?? defaults.maxRetainedWalBytes,
      retryFor: decoded.retryFor ?? Duration.fromInputUnsafe(defaults.retryFor),
      highWater: decoded.highWater ?? defaults.highWater,
      server: Session.serverOf(decoded.url),
      user: decodeURIComponent(parsed.username) || process.env.PGUSER || "postgres",
      db: decodeURIComponent(parsed.pathname.replace(/^\//, ""))
    }
  })

/** A transaction emitted but not yet durable downstream: acknowledged once its last event is. */
interface Pending {
  /** The position of its last event (or of the last event before it, for a transaction that had none). */
  readonly last: Position.Position | undefined
  /** Where the slot may move once it is durable: the end of its commit record. */
  readonly end: Pgoutput.Lsn
}

/** What the source's stream and its `acknowledge` share. */
interface State {
  /** The last position passed downstream by this process: a reconnect skips up to it. */
  lastEmitted: Position.Position | undefined
  /** Transactions (and the snapshot) emitted and not yet durable, in order. */
  readonly pending: Array<Pending>
  /** The LSN the slot may be confirmed at: every transaction ending at or before it is durable. */
  durable: Pgoutput.Lsn
  /** The replication connection streaming now. */
  client: ReplicationClient.ReplicationClient | undefined
  /** Whether a transaction is being read (between BEGIN and COMMIT). */
  inTransaction: boolean
  /** Commit time (ms) of the last transaction read, for the lag in seconds. */
  lastCommitMillis: number | undefined
  /** The highest position acknowledged durable. */
  acknowledgedUpTo: Position.Position | undefined
  /** Whether the stream has ended (drained or failed): acknowledgements then advance the slot by SQL. */
  ended: boolean
  /** Whether this process finished a snapshot (so a reconnect after it does not take another). */
  snapshotFinished: boolean
  /** Whether this process has streamed from the slot: a slot "in use" on a reconnect may be our own dead stream. */
  streamed: boolean
}

const isAtOrBefore = (a: Position.Position, b: Position.Position | undefined) => b !== undefined && a <= b

/**
 * Checks the server, the role, the tables, the publication and the slot (creating the publication when absent),
 * and returns the source. Nothing is read until `stream` runs; each failure is a typed {@link PostgresError} that
 * names what to do. Options that cannot work fail first, before anything connects, with the `ConfigError`
 * (component `PostgresSource`) whose path names the option.
 *
 * @example
 * ```ts
 * const source = yield* PostgresSource.make({ url: "postgres://redflow@db:5432/shop", tables: ["public.orders"] })
 * const from = yield* checkpoints.load("orders")
 * yield* source.stream(from).pipe(
 *   Stream.run(RedisStreamSink.make({ stream: "cdc.${source.table}", pipeline: "orders" })),
 *   Source.acknowledgeCommits(source, "orders")
 * )
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<PostgresSource, PostgresError | ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function* () {
    const config = yield* validate(options)
    const connect = { url: config.url, password: config.password, applicationName: `redflow ${config.name}` }
    const classify = (error: ReplicationClient.ReplicationError) =>
      Setup.classifyConnectError(error, config.server, config.user)
    const openSession = Session.make(connect).pipe(Effect.mapError(classify))

    /**
     * The slot's state. One that is streamed is waited for up to {@link SLOT_RELEASE_WAIT}: a pipeline restarted
     * right after its previous process died finds the slot held until the server notices the dead connection.
     */
    const inspectSlot = (session: Session.Session) =>
      Setup.inspectSlot(session, config.slot).pipe(
        Effect.retry({
          while: (error) => error._tag === "PostgresSlotInUse",
          schedule: Schedule.max([Schedule.spaced("250 millis"), Schedule.during(SLOT_RELEASE_WAIT)])
        })
      )

    /** The column types read so far: the tables' at start, more when a RELATION message brings a new one. */
    let catalog = Values.emptyCatalog
    const loadTypes = (session: Session.Session, oids: ReadonlyArray<number>) =>
      Values.loadTypes(session, oids, catalog).pipe(
        Effect.map((loaded) => {
          catalog = loaded
        }),
        Effect.mapError((e) => (e._tag === "PostgresReplicationError" ? classify(e) : e))
      )

    const start = yield* Effect.scoped(
      Effect.gen(function* () {
        const session = yield* openSession
        yield* Setup.checkServer(session)
        yield* Setup.checkRole(session)
        const tables = yield* Setup.resolveTables(session, config.tables)
        yield* loadTypes(
          session,
          tables.flatMap((t) => t.columns.map((c) => c.typeOid))
        )
        const publication = yield* Setup.ensurePublication(session, config.publication, tables)
        const slot = yield* inspectSlot(session)
        return { tables, publication, slot }
      })
    )
    const tables = start.tables
    const byName = new Map(tables.map((t) => [`${t.schema}.${t.table}`, t]))
    if (start.publication.created) {
      yield* Effect.logInfo(`created publication ${config.publication} for ${[...byName.keys()].join(", ")}`)
    }
    if (start.publication.others.length > 0) {
      yield* Effect.logWarning(
        `publication ${config.publication} also publishes ${start.publication.others.join(", ")}: ` +
          "their changes are read and ignored (give this pipeline a publication of its own to spare the server that work)"
      )
    }

    const state: State = {
      lastEmitted: undefined,
      pending: [],
      durable: 0n,
      client: undefined,
      inTransaction: false,
      lastCommitMillis: undefined,
      snapshotFinished: false,
      acknowledgedUpTo: undefined,
      ended: false,
      streamed: false
    }
    const attributes = { source: config.name }
    const health = yield* Effect.serviceOption(PipelineHealth.PipelineHealth)
    /** The source's component in /health and /ready. */
    const component = `${config.name} source (slot ${config.slot})`
    const report = (f: (h: PipelineHealth.PipelineHealthService) => Effect.Effect<void>) =>
      Option.match(health, { onNone: () => Effect.void, onSome: f })
    const sourceInfo = { connector: "postgresql", name: config.name, db: config.db } as const
    const idOf = Positions.eventIds(sourceInfo)

    /**
     * After the stream ended (a drain), the last acknowledgements come with no replication connection open: the
     * slot is moved with `pg_replication_slot_advance` instead, so a stopped pipeline leaves its slot at its
     * checkpoint. A failure only leaves the slot where it was (safe: the next run skips what the checkpoint holds).
     */
    const advanceStopped = (lsn: Pgoutput.Lsn) =>
      Effect.scoped(
        Effect.gen(function* () {
          const session = yield* openSession
          yield* session.query("SELECT pg_replication_slot_advance($1, $2::pg_lsn)", [
            config.slot,
            Pgoutput.formatLsn(lsn)
          ])
        })
      ).pipe(
        Effect.catch((error) =>
          Effect.logWarning(`could not move slot ${config.slot} to ${Pgoutput.formatLsn(lsn)}: ${error.message}`)
        )
      )

    /** Sends the durable LSN: on the streaming connection, or after the end by advancing the slot. */
    const sendDurable = (lsn: Pgoutput.Lsn): Effect.Effect<void> =>
      state.client !== undefined
        ? Effect.ignore(state.client.acknowledge(lsn))
        : state.ended
          ? advanceStopped(lsn)
          : Effect.void

    const acknowledge = (position: Position.Position): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (state.acknowledgedUpTo === undefined || position > state.acknowledgedUpTo) {
          state.acknowledgedUpTo = position
        }
        let durable = state.durable
        while (state.pending.length > 0) {
          const head = state.pending[0]!
          if (head.last !== undefined && !isAtOrBefore(head.last, position)) break
          state.pending.shift()
          if (head.end > durable) durable = head.end
        }
        if (durable <= state.durable) return Effect.void
        state.durable = durable
        return sendDurable(durable)
      })

    /**
     * A transaction (or the snapshot) passed downstream whole: durable once `last` is. Returns the LSN the slot may
     * move to now (nothing of it, or before it, is waiting downstream), for the caller to send.
     */
    const settleNow = (last: Position.Position | undefined, end: Pgoutput.Lsn): Pgoutput.Lsn | undefined => {
      if (state.pending.length === 0 && (last === undefined || isAtOrBefore(last, state.acknowledgedUpTo))) {
        if (end <= state.durable) return undefined
        state.durable = end
        return end
      }
      state.pending.push({ last, end })
      return undefined
    }

    const settle = (last: Position.Position | undefined, end: Pgoutput.Lsn): Effect.Effect<void> =>
      Effect.suspend(() => {
        const durable = settleNow(last, end)
        return durable === undefined ? Effect.void : sendDurable(durable)
      })

    // ---------------------------------------------------------------------------------------------------------
    // Values
    // ---------------------------------------------------------------------------------------------------------

    const protocolError = (reason: string, cause?: unknown) =>
      new PostgresProtocolError({
        server: config.server,
        reason,
        ...(cause === undefined ? {} : { cause })
      })

    /** One decoder per column, built once per table description; types not seen yet are read from the catalog. */
    const decodersOf = (session: Session.Session, table: string, columns: ReadonlyArray<ColumnRef>) =>
      Effect.gen(function* () {
        yield* loadTypes(
          session,
          columns.map((c) => c.typeOid)
        )
        return columns.map((c) => Values.columnDecoder(catalog, c, { table, server: config.server }))
      })

    const image = (
      table: string,
      names: ReadonlyArray<string>,
      decoders: ReadonlyArray<ColumnDecoder>,
      tuple: ReadonlyArray<Pgoutput.Value>,
      /** The columns to include (the key's, `isKey`); `undefined` for all. */
      only: ReadonlyArray<boolean> | undefined,
      unchanged: Array<string> | undefined,
      old: Record<string, unknown> | undefined
    ): Record<string, unknown> => {
      const row: Record<string, unknown> = {}
      for (let i = 0; i < names.length; i++) {
        if (only !== undefined && only[i] !== true) continue
        const value = tuple[i]
        const name = names[i]!
        if (value === undefined) throw new ShapeError(`no value for column ${name} of ${table}`)
        if (value === Pgoutput.UnchangedToast) {
          // Not sent because it did not change: the old full row has it, else it is named in `unchanged`.
          if (old !== undefined && name in old) row[name] = old[name]
          else if (unchanged === undefined) {
            throw new ShapeError(`column ${name} of ${table} is an unchanged TOAST value in a key image`)
          } else unchanged.push(name)
        } else row[name] = decoders[i]!(value)
      }
      return row
    }

    /** A failure while decoding: a bad value is its typed error, anything else a protocol error; never skipped. */
    const decodingError = (what: string, cause: unknown): PostgresError =>
      cause instanceof Values.PostgresValueError
        ? cause
        : protocolError(`${what}: ${cause instanceof Error ? cause.message : String(cause)}`, cause)

    const decoding = <A>(what: string, evaluate: () => A): Effect.Effect<A, PostgresError> =>
      Effect.suspend(() => {
        try {
          return Effect.succeed(evaluate())
        } catch (cause) {
          return Effect.fail(decodingError(what, cause))
        }
      })

    // ---------------------------------------------------------------------------------------------------------
    // The snapshot: every row of every table as of the consistent point, in key order, in chunks
    // ---------------------------------------------------------------------------------------------------------

    /** One table's chunked read: its SELECTs, decoders and key columns. */
    const tableReader = (session: Session.Session, table: TableInfo) =>
      Effect.gen(function* () {
        // pgoutput leaves generated columns out of its rows (PostgreSQL 15): the snapshot does the same.
        const columns = table.columns.filter((c) => !c.generated)
        const decoders = yield* decodersOf(session, table.quoted, columns)
        const names = columns.map((c) => c.name)
        // Key order: the primary key, else the identity index, else the physical row id (stable within one
        // snapshot, which is all a chunked read needs).
        const order = table.primaryKey.length > 0 ? table.primaryKey : (table.identityColumns ?? [])
        const byCtid = order.length === 0
        const keyList = byCtid ? "ctid" : order.map(Setup.quoteIdent).join(", ")
        const select =
          `SELECT ${names.map(Setup.quoteIdent).join(", ")}${byCtid ? `, ctid::text AS "${CTID}"` : ""} ` +
          `FROM ${table.quoted}`
        const limit = ` ORDER BY ${keyList} LIMIT ${config.snapshotChunkRows}`
        const first = `${select}${limit}`
        const next = byCtid
          ? `${select} WHERE ctid > $1::tid${limit}`
          : `${select} WHERE (${keyList}) > (${order.map((_, i) => `$${i + 1}`).join(", ")})${limit}`
        const rowsCounter = Metric.withAttributes(PostgresMetrics.snapshotRows, {
          ...attributes,
          table: `${table.schema}.${table.table}`
        })
        /** The next chunk after `cursor` (the previous chunk's last key), and the cursor after it. */
        const chunk = (cursor: ReadonlyArray<string | null> | undefined) =>
          Effect.gen(function* () {
            const rows = yield* session
              .query(cursor === undefined ? first : next, cursor ?? [])
              .pipe(Effect.mapError(classify))
            yield* Metric.update(rowsCounter, rows.length)
            const images = yield* decoding(`a snapshot row of ${table.quoted}`, () =>
              rows.map((row) =>
                image(
                  table.quoted,
                  names,
                  decoders,
                  names.map((n) => row[n] ?? null),
                  undefined,
                  undefined,
                  undefined
                )
              )
            )
            const last = rows.at(-1)
            const more = rows.length === config.snapshotChunkRows && last !== undefined
            return {
              images,
              cursor: more ? (byCtid ? [last[CTID] ?? null] : order.map((k) => last[k] ?? null)) : undefined
            }
          })
        return { table, chunk }
      })

    /**
     * Every row of every table as of the consistent point, in key order, read in chunks. The last row of the whole
     * snapshot gets the final mark in its position, so a restart knows whether the snapshot finished: each chunk's
     * last row is held back until the next row is known to exist.
     */
    const snapshotStream = (
      { release, session }: SnapshotReader,
      consistentPoint: Pgoutput.Lsn
    ): Stream.Stream<CdcEvent.CdcEvent, PostgresError> =>
      Stream.unwrap(
        Effect.gen(function* () {
          const startedAt = yield* Clock.currentTimeMillis
          const lsn = Pgoutput.formatLsn(consistentPoint)
          const tablesDone = Metric.withAttributes(PostgresMetrics.snapshotTables, attributes)
          yield* Metric.update(Metric.withAttributes(PostgresMetrics.snapshotTablesTotal, attributes), tables.length)
          yield* Metric.update(tablesDone, 0)
          state.snapshotFinished = false
          let index = 0
          const event = (table: TableInfo, after: CdcEvent.Row, final: boolean): CdcEvent.CdcEvent => {
            const position = Positions.snapshotRow(consistentPoint, index++, final)
            return {
              id: idOf(position),
              op: "r",
              before: null,
              after,
              source: {
                connector: sourceInfo.connector,
                name: sourceInfo.name,
                db: sourceInfo.db,
                schema: table.schema,
                table: table.table,
                ts_ms: startedAt,
                snapshot: true,
                lsn
              },
              ts_ms: startedAt,
              position
            }
          }
          interface Cursor {
            readonly table: number
            readonly reader: Effect.Success<ReturnType<typeof tableReader>> | undefined
            readonly cursor: ReadonlyArray<string | null> | undefined
            readonly held: { readonly table: TableInfo; readonly after: CdcEvent.Row } | undefined
          }
          return Stream.paginate<Cursor, CdcEvent.CdcEvent, PostgresError>(
            { table: 0, reader: undefined, cursor: undefined, held: undefined },
            (at) =>
              Effect.gen(function* () {
                if (at.table >= tables.length) {
                  // Past the last table: the held row is the snapshot's last.
                  const out = at.held === undefined ? [] : [event(at.held.table, at.held.after, true)]
                  if (out.length > 0) state.lastEmitted = out[0]!.position
                  state.snapshotFinished = true
                  yield* release
                  yield* settle(state.lastEmitted, consistentPoint)
                  yield* Effect.logInfo(`snapshot: ${index} rows of ${tables.length} tables read`)
                  return [out, Option.none()] as const
                }
                const reader = at.reader ?? (yield* tableReader(session, tables[at.table]!))
                const { images, cursor } = yield* reader.chunk(at.cursor)
                const out: Array<CdcEvent.CdcEvent> = []
                let held = at.held
                for (const after of images) {
                  if (held !== undefined) out.push(event(held.table, held.after, false))
                  held = { table: reader.table, after }
                }
                if (out.length > 0) state.lastEmitted = out[out.length - 1]!.position
                if (cursor === undefined) {
                  yield* Metric.update(tablesDone, at.table + 1)
                  yield* Effect.logInfo(
                    `snapshot: ${reader.table.quoted} read (${at.table + 1} of ${tables.length} tables)`
                  )
                }
                return [
                  out,
                  Option.some(
                    cursor === undefined
                      ? { table: at.table + 1, reader: undefined, cursor: undefined, held }
                      : { table: at.table, reader, cursor, held }
                  )
                ] as const
              })
          )
        })
      )

    // ---------------------------------------------------------------------------------------------------------
    // Streaming: committed transactions from the slot, as events
    // ---------------------------------------------------------------------------------------------------------

    interface RelationInfo {
      readonly schema: string
      readonly table: string
      readonly quoted: string
      /** The count of its table's changes in the transaction (`data_collection_order`), shared by the table's relations. */
      readonly inTable: TableCount
      readonly names: ReadonlyArray<string>
      readonly isKey: ReadonlyArray<boolean>
      readonly full: boolean
      /** Decoders per column; `undefined` for a published table this source does not capture. */
      readonly decoders: ReadonlyArray<ColumnDecoder> | undefined
    }

    interface Transaction {
      readonly xid: number
      readonly commitLsn: Pgoutput.Lsn
      readonly commitMillis: number
      readonly id: string
      /** The transaction's position prefix (its commit LSN and kind), formatted once. */
      readonly prefix: string
      /** Its commit LSN as PostgreSQL prints it, formatted once: `source.lsn` of changes that carry no LSN. */
      readonly lsn: string
      index: number
      emitted: number
      last: Position.Position | undefined
    }

    /** A table's changes in the transaction `tx` so far: reset when a change of another transaction comes. */
    interface TableCount {
      tx: Transaction | undefined
      count: number
    }

    type Out = CdcEvent.CdcEvent

    // One counter per op, made once: a metric made per update recomputes its key (a JSON of its attributes).
    const eventsCounters = new Map<string, Metric.Metric<number, unknown>>()
    const eventsCounter = (op: string) => {
      let counter = eventsCounters.get(op)
      if (counter === undefined) {
        counter = PostgresMetrics.eventsOf({ ...attributes, op })
        eventsCounters.set(op, counter)
      }
      return counter
    }
    const transactionsCounter = PostgresMetrics.transactionsOf(attributes)

    /**
     * Events of the slot from its confirmed point, skipping what is at or below `skipUpTo`. With `stopAt`, only
     * transactions committed before `stopAt.lsn` are passed on, and the stream ends once the server has sent
     * everything before it (a transaction at or after it, or the marker message written after it).
     */
    const streamFrom = (
      session: Session.Session,
      skipUpTo: Position.Position | undefined,
      stopAt?: { readonly lsn: Pgoutput.Lsn; readonly marker: Pgoutput.Lsn; readonly token: string }
    ): Stream.Stream<CdcEvent.CdcEvent, PostgresError> =>
      Stream.unwrap(
        Effect.gen(function* () {
          const client = yield* ReplicationClient.make(connect).pipe(Effect.mapError(classify))
          yield* Effect.ignore(client.acknowledge(state.durable))
          state.client = client
          state.streamed = true
          yield* report((h) => h.set(component, "running"))
          yield* Effect.addFinalizer(() =>
            Effect.sync(() => {
              if (state.client === client) state.client = undefined
              state.inTransaction = false
            })
          )
          yield* Effect.forkScoped(statusLoop(session, client))

          const relations = new Map<number, RelationInfo>()
          const tableCounts = new Map<string, TableCount>()
          let tx: Transaction | undefined
          let stopped = false
          const skip = (position: Position.Position) =>
            isAtOrBefore(position, skipUpTo) || isAtOrBefore(position, state.lastEmitted)

          const describeRelation = (m: Pgoutput.Relation) =>
            Effect.gen(function* () {
              const name = `${m.schema}.${m.table}`
              const captured = byName.get(name)
              const decoders =
                captured === undefined ? undefined : yield* decodersOf(session, captured.quoted, m.columns)
              let inTable = tableCounts.get(name)
              if (inTable === undefined) {
                inTable = { tx: undefined, count: 0 }
                tableCounts.set(name, inTable)
              }
              relations.set(m.relationId, {
                schema: m.schema,
                table: m.table,
                quoted: captured?.quoted ?? name,
                inTable,
                names: m.columns.map((c) => c.name),
                isKey: m.columns.map((c) => c.isKey),
                full: m.replicaIdentity === "f",
                decoders
              })
            })

          const relationOf = (id: number) => {
            const r = relations.get(id)
            if (r === undefined) throw new ShapeError(`a change of relation ${id}, which no RELATION message described`)
            return r
          }

          const emit = (
            out: Array<Out>,
            now: number,
            walStart: Pgoutput.Lsn,
            r: RelationInfo,
            op: CdcEvent.Op,
            before: CdcEvent.Row | null,
            after: CdcEvent.Row | null,
            unchanged: ReadonlyArray<string> | undefined
          ) => {
            const t = tx!
            const index = t.index++
            if (r.decoders === undefined) return
            const position = Positions.inTransaction(t.prefix, index)
            // Counted before the skip, so a replayed event keeps its order within the table.
            const counted = r.inTable
            if (counted.tx !== t) {
              counted.tx = t
              counted.count = 0
            }
            const inTable = ++counted.count
            if (skip(position)) return
            t.emitted++
            t.last = position
            state.lastEmitted = position
            // Object literals of one shape each (no spread): cheaper to build here and to serialize in the sink.
            const source: CdcEvent.Source = {
              connector: sourceInfo.connector,
              name: sourceInfo.name,
              db: sourceInfo.db,
              schema: r.schema,
              table: r.table,
              ts_ms: t.commitMillis,
              lsn: walStart === 0n ? t.lsn : Pgoutput.formatLsn(walStart),
              txId: t.xid
            }
            const transaction = { id: t.id, total_order: index + 1, data_collection_order: inTable }
            out.push(
              unchanged !== undefined && unchanged.length > 0
                ? { id: idOf(position), op, before, after, source, ts_ms: now, transaction, unchanged, position }
                : { id: idOf(position), op, before, after, source, ts_ms: now, transaction, position }
            )
          }

          /**
           * The events of one socket read. A plain loop, not an `Effect.gen`: it holds a read's every message, and a
           * generator over them made V8 pretenure what it touched, so each read's messages outlived the young
           * generation and filled the old one (bench/RESULTS.md, PostgreSQL memory). It leaves the loop only for what
           * is asynchronous (a RELATION whose column types must be read) or fails; the metrics and the slot's
           * acknowledgement go once per read.
           */
          const onBatch = (
            batch: ReadonlyArray<ReplicationClient.Event>
          ): Effect.Effect<Array<CdcEvent.CdcEvent>, PostgresError> => {
            const out: Array<Out> = []
            if (stopped) return Effect.succeed(out)
            const counted = { transactions: 0, durable: undefined as Pgoutput.Lsn | undefined }
            const finish = (): Effect.Effect<Array<CdcEvent.CdcEvent>> => {
              const effects: Array<Effect.Effect<void>> = []
              if (out.length > 0) {
                const byOp = new Map<CdcEvent.Op, number>()
                for (const e of out) byOp.set(e.op, (byOp.get(e.op) ?? 0) + 1)
                for (const [op, n] of byOp) effects.push(Metric.update(eventsCounter(op), n))
              }
              if (counted.transactions > 0) effects.push(Metric.update(transactionsCounter, counted.transactions))
              if (counted.durable !== undefined) effects.push(sendDurable(counted.durable))
              return effects.length === 0 ? Effect.succeed(out) : Effect.as(Effect.all(effects, { discard: true }), out)
            }
            let now = 0
            const step = (from: number): Effect.Effect<Array<CdcEvent.CdcEvent>, PostgresError> => {
              for (let i = from; i < batch.length; i++) {
                const event = batch[i]!
                if (event._tag === "Keepalive") {
                  if (stopAt !== undefined && event.walEnd >= stopAt.marker) {
                    stopped = true
                    break
                  }
                  // Caught up and everything durable: the slot may move to where the server is.
                  if (tx === undefined && state.pending.length === 0 && event.walEnd > state.durable) {
                    state.durable = event.walEnd
                    counted.durable = event.walEnd
                  }
                  continue
                }
                const m = event.message
                switch (m._tag) {
                  case "Begin": {
                    if (tx !== undefined) {
                      return Effect.fail(protocolError(`BEGIN of transaction ${m.xid} inside transaction ${tx.xid}`))
                    }
                    if (stopAt !== undefined && m.finalLsn >= stopAt.lsn) {
                      stopped = true
                      return finish()
                    }
                    tx = {
                      xid: m.xid,
                      commitLsn: m.finalLsn,
                      commitMillis: Pgoutput.toEpochMillis(m.commitTime),
                      id: `${m.xid}:${Pgoutput.formatLsn(m.finalLsn)}`,
                      prefix: Positions.changePrefix(m.finalLsn),
                      lsn: Pgoutput.formatLsn(m.finalLsn),
                      index: 0,
                      emitted: 0,
                      last: undefined
                    }
                    state.inTransaction = true
                    break
                  }
                  case "Commit": {
                    const t = tx
                    if (t === undefined) {
                      return Effect.fail(
                        protocolError(`COMMIT at ${Pgoutput.formatLsn(m.commitLsn)} outside a transaction`)
                      )
                    }
                    if (m.commitLsn !== t.commitLsn) {
                      return Effect.fail(
                        protocolError(
                          `COMMIT at ${Pgoutput.formatLsn(m.commitLsn)} for a transaction that began with commit LSN ${Pgoutput.formatLsn(t.commitLsn)}`
                        )
                      )
                    }
                    tx = undefined
                    state.inTransaction = false
                    state.lastCommitMillis = t.commitMillis
                    counted.transactions++
                    const durable = settleNow(t.last ?? state.lastEmitted, m.endLsn)
                    if (durable !== undefined) counted.durable = durable
                    break
                  }
                  case "Relation": {
                    const next = i + 1
                    return Effect.flatMap(describeRelation(m), () => step(next))
                  }
                  case "Insert":
                  case "Update":
                  case "Delete":
                  case "Truncate": {
                    if (tx === undefined) return Effect.fail(protocolError(`a ${m._tag} outside a transaction`))
                    // Plain try/catch on the hot path (one change per message): no Effect per message.
                    try {
                      change(out, now, event.walStart, m)
                    } catch (cause) {
                      return Effect.fail(decodingError(`${m._tag} in transaction ${tx.xid}`, cause))
                    }
                    break
                  }
                  case "Message":
                    if (
                      stopAt !== undefined &&
                      !m.transactional &&
                      m.prefix === MARKER_PREFIX &&
                      new TextDecoder().decode(m.content) === stopAt.token
                    ) {
                      stopped = true
                      return finish()
                    }
                    break
                  case "Origin":
                  case "Type":
                    break
                }
              }
              return finish()
            }
            return Effect.flatMap(Clock.currentTimeMillis, (millis) => {
              now = millis
              return step(0)
            })
          }

          const change = (
            out: Array<Out>,
            now: number,
            walStart: Pgoutput.Lsn,
            m: Pgoutput.Insert | Pgoutput.Update | Pgoutput.Delete | Pgoutput.Truncate
          ) => {
            if (m._tag === "Truncate") {
              for (const id of m.relationIds) emit(out, now, walStart, relationOf(id), "t", null, null, undefined)
              return
            }
            const r = relationOf(m.relationId)
            if (r.decoders === undefined) {
              tx!.index++
              return
            }
            const all = undefined
            const keyOnly = r.isKey
            const name = r.quoted
            switch (m._tag) {
              case "Insert":
                return emit(
                  out,
                  now,
                  walStart,
                  r,
                  "c",
                  null,
                  image(name, r.names, r.decoders, m.new, all, [], undefined),
                  undefined
                )
              case "Update": {
                const before =
                  m.old === undefined
                    ? image(name, r.names, r.decoders, m.new, keyOnly, undefined, undefined)
                    : image(
                        name,
                        r.names,
                        r.decoders,
                        m.old,
                        m.oldKind === "full" ? all : keyOnly,
                        undefined,
                        undefined
                      )
                const unchanged: Array<string> = []
                const after = image(
                  name,
                  r.names,
                  r.decoders,
                  m.new,
                  all,
                  unchanged,
                  m.oldKind === "full" ? before : undefined
                )
                return emit(out, now, walStart, r, "u", before, after, unchanged)
              }
              case "Delete":
                return emit(
                  out,
                  now,
                  walStart,
                  r,
                  "d",
                  image(name, r.names, r.decoders, m.old, m.oldKind === "full" ? all : keyOnly, undefined, undefined),
                  null,
                  undefined
                )
            }
          }

          const take = yield* client
            .open({
              slot: config.slot,
              startLsn: 0n,
              publications: [config.publication],
              messages: stopAt !== undefined,
              highWater: config.highWater
            })
            .pipe(Effect.mapError(streamError))
          // One pull per socket read, looping past reads that carry no event (a BEGIN, a keepalive): no stream
          // stage per protocol message, and no empty chunk handed downstream.
          const pull: Pull.Pull<Arr.NonEmptyReadonlyArray<CdcEvent.CdcEvent>, PostgresError> = Effect.suspend(() =>
            stopped
              ? Cause.done()
              : take.pipe(
                  Effect.mapError((e) => (Cause.isDone(e) ? e : streamError(e))),
                  Effect.flatMap((batch) => onBatch(batch)),
                  Effect.flatMap((out) => (Arr.isArrayNonEmpty(out) ? Effect.succeed(out) : pull))
                )
          )
          return Stream.fromPull(Effect.succeed(pull))
        })
      )

    /** A failure of the replication stream, as the source's error: connection loss is retried by the caller. */
    const streamError = (error: ReplicationClient.ReplicationError): PostgresError =>
      error.code === "55006"
        ? // Still marked active: our previous stream the server has not yet seen end, or another reader that
          // started since the check; the retry's slot check tells which.
          new PostgresUnavailable({ server: config.server, reason: error.message, cause: error })
        : classify(error)

    let overBound = false
    /** Every few seconds: a standby status (also while the socket is paused), the lag and retained-WAL figures. */
    const statusLoop = (session: Session.Session, client: ReplicationClient.ReplicationClient) =>
      Effect.gen(function* () {
        yield* Effect.ignore(client.acknowledge(state.durable))
        const now = yield* Clock.currentTimeMillis
        const caughtUp = state.pending.length === 0 && !state.inTransaction
        yield* Metric.update(
          Metric.withAttributes(PostgresMetrics.lagSeconds, attributes),
          caughtUp || state.lastCommitMillis === undefined ? 0 : Math.max(0, (now - state.lastCommitMillis) / 1000)
        )
        const wal = yield* Setup.walPosition(session, config.slot)
        yield* Metric.update(Metric.withAttributes(PostgresMetrics.lagBytes, attributes), wal.lagBytes)
        yield* Metric.update(Metric.withAttributes(PostgresMetrics.retainedWalBytes, attributes), wal.retainedBytes)
        const over = wal.retainedBytes > config.maxRetainedWalBytes
        yield* Metric.update(Metric.withAttributes(PostgresMetrics.retainedWalOverBound, attributes), over ? 1 : 0)
        if (over && !overBound) {
          yield* Effect.logWarning(
            `replication slot ${config.slot} on ${config.server} retains ${wal.retainedBytes} bytes of WAL, over the bound of ` +
              `${config.maxRetainedWalBytes}: the sink is behind or stopped, and the server's disk fills until it catches up ` +
              `(pg_replication_slots shows the slot; dropping it loses the changes it holds)`
          )
        }
        overBound = over
      }).pipe(
        Effect.catch((error) => Effect.logDebug(`status check failed: ${error.message}`)),
        Effect.repeat(Schedule.spaced(STATUS_INTERVAL)),
        Effect.asVoid
      )

    // ---------------------------------------------------------------------------------------------------------
    // The plan: what to read, from where, given the checkpoint and the slot
    // ---------------------------------------------------------------------------------------------------------

    /**
     * A session whose transaction reads exactly as of an exported snapshot, in a scope of its own under `outer`:
     * `release` ends the transaction and closes the session as soon as the snapshot is read. Left open, it would
     * hold a lock on every table (an `ALTER TABLE` or `TRUNCATE` would wait behind it, and every query behind that)
     * and hold back vacuum for as long as the stream runs.
     */
    const snapshotSession = (snapshotName: string, outer: Scope.Scope) =>
      Effect.gen(function* () {
        const scope = yield* Scope.fork(outer)
        const session = yield* openSession.pipe(Scope.provide(scope))
        yield* session.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").pipe(Effect.mapError(classify))
        yield* session
          .query(`SET TRANSACTION SNAPSHOT '${snapshotName.replaceAll("'", "''")}'`)
          .pipe(Effect.mapError(classify))
        const release = Effect.ignore(session.query("COMMIT")).pipe(Effect.andThen(Scope.close(scope, Exit.void)))
        return { session, release } satisfies SnapshotReader
      })

    const plan = (from: Option.Option<Position.Position>): Stream.Stream<CdcEvent.CdcEvent, PostgresError> =>
      Stream.unwrap(
        Effect.gen(function* () {
          const outer = yield* Effect.scope
          const resume = Option.match(from, {
            onNone: () => state.lastEmitted,
            onSome: (p) => (state.lastEmitted !== undefined && state.lastEmitted > p ? state.lastEmitted : p)
          })
          const parsed = resume === undefined ? undefined : Positions.parse(resume)
          if (resume !== undefined && parsed === undefined) {
            return yield* new PostgresConfigError({
              field: "checkpoint",
              server: config.server,
              reason: `${resume} is not a position of a PostgreSQL source (32 hex digits: LSN, kind, index)`,
              fix: "give this pipeline its own checkpoint key (--pipeline), or delete the checkpoint to start over"
            })
          }
          const session = yield* openSession
          const slot = yield* inspectSlot(session).pipe(
            Effect.mapError((error) =>
              // Our own previous stream, which the server has not yet seen end, is waited for; another's is not.
              error._tag === "PostgresSlotInUse" && state.streamed
                ? new PostgresUnavailable({ server: config.server, reason: error.message })
                : error
            )
          )
          // A snapshot is (re)taken when none finished: no checkpoint, or one inside a snapshot that did not end.
          const wantSnapshot =
            config.snapshot === "initial" &&
            (parsed === undefined || (parsed.kind === "snapshot" && !parsed.final && !state.snapshotFinished))

          if (Option.isNone(slot)) {
            if (parsed?.kind === "change") {
              return yield* new PostgresConfigError({
                field: "slot",
                server: config.server,
                reason:
                  `replication slot ${config.slot} does not exist, but the checkpoint (${resume}) says this pipeline ` +
                  "streamed from it: the changes since were not kept for it and cannot be read",
                fix:
                  "to start again with a full snapshot, delete the checkpoint (and the streams' high-water marks in exactly-once); " +
                  "to carry on from now without the missing changes, create the slot and use --snapshot never"
              })
            }
            // A new slot, with its snapshot exported for the reader; the creating connection is closed once the
            // reader holds the snapshot (so it does not stay a WAL sender).
            const created = yield* Effect.scoped(
              Effect.gen(function* () {
                const client = yield* ReplicationClient.make(connect).pipe(Effect.mapError(classify))
                const slotCreated = yield* client
                  .createSlot(config.slot, { snapshot: wantSnapshot ? "export" : "nothing" })
                  .pipe(Effect.mapError(classify))
                const reader =
                  wantSnapshot && slotCreated.snapshotName !== undefined
                    ? yield* snapshotSession(slotCreated.snapshotName, outer)
                    : undefined
                return { consistentPoint: slotCreated.consistentPoint, reader }
              })
            )
            yield* Effect.logInfo(
              `created replication slot ${config.slot} at ${Pgoutput.formatLsn(created.consistentPoint)}` +
                (created.reader === undefined ? "" : `; snapshot of ${tables.length} tables follows`)
            )
            state.durable = created.consistentPoint
            return created.reader === undefined
              ? streamFrom(session, resume)
              : Stream.concat(
                  snapshotStream(created.reader, created.consistentPoint),
                  Stream.suspend(() => streamFrom(session, state.lastEmitted))
                )
          }

          if (!wantSnapshot) return streamFrom(session, resume)

          // The slot exists but no snapshot was finished (a crash during it, or a slot made before): the snapshot
          // starts over at a new consistent point, taken from a temporary slot. The changes between the slot's
          // confirmed point and the new point come first, as changes; then every row as of the new point, as `r`
          // (a consumer sees again the rows it got before the crash); then the changes after it.
          yield* Effect.logWarning(
            resume === undefined
              ? `replication slot ${config.slot} exists but this pipeline has no checkpoint: reading a snapshot of ${tables.length} tables, ` +
                  "then the slot's changes (consumers see every row as op r)"
              : `the snapshot was interrupted (checkpoint ${resume} is a snapshot row): it starts over; consumers see the rows ` +
                  "read before the interruption again, as op r"
          )
          const retake = yield* Effect.scoped(
            Effect.gen(function* () {
              const client = yield* ReplicationClient.make(connect).pipe(Effect.mapError(classify))
              const temporary = yield* client
                .createSlot(`${config.slot.slice(0, 40)}_snapshot_${process.pid}`, {
                  temporary: true,
                  snapshot: "export"
                })
                .pipe(Effect.mapError(classify))
              const reader = yield* snapshotSession(temporary.snapshotName ?? "", outer)
              return { consistentPoint: temporary.consistentPoint, reader }
            })
          )
          const token = `${config.slot} ${process.pid} ${yield* Clock.currentTimeMillis}`
          const marker = yield* session
            .query("SELECT pg_logical_emit_message(false, $1, $2)::text AS lsn", [MARKER_PREFIX, token])
            .pipe(Effect.mapError(classify))
          const markerLsn = Pgoutput.parseLsn(String(marker[0]?.lsn))
          if (markerLsn === undefined) {
            return yield* protocolError(`pg_logical_emit_message answered ${JSON.stringify(marker)}`)
          }
          return Stream.concat(
            streamFrom(session, resume, { lsn: retake.consistentPoint, marker: markerLsn, token }),
            Stream.concat(
              Stream.suspend(() => snapshotStream(retake.reader, retake.consistentPoint)),
              Stream.suspend(() => streamFrom(session, state.lastEmitted))
            )
          )
        })
      )

    // ---------------------------------------------------------------------------------------------------------
    // Retries: a lost connection or a restarting server is waited for, and the stream resumes from the slot
    // ---------------------------------------------------------------------------------------------------------

    const backoff = Schedule.exponential("200 millis").pipe(
      Schedule.jittered,
      Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.seconds(10))))
    )
    const retryPolicy: Schedule.Schedule<unknown, PostgresError> = Schedule.fromStep(
      Effect.gen(function* () {
        const step = yield* Schedule.toStep(backoff)
        let since: number | undefined
        return (now: number, error: PostgresError) =>
          Effect.gen(function* () {
            if (error._tag !== "PostgresUnavailable") return yield* Cause.done(undefined)
            since ??= now
            if (now - since >= Duration.toMillis(config.retryFor)) return yield* Cause.done(undefined)
            const decision = yield* step(now, error)
            yield* report((h) => h.retrying(component, error.message))
            yield* Metric.update(Metric.withAttributes(PostgresMetrics.reconnects, attributes), 1)
            yield* Effect.logWarning(
              `${error.message}; reconnecting in ${Duration.format(decision[1])} (resuming from the slot, nothing is lost)`
            )
            return decision
          })
      })
    )

    const stream = (from: Option.Option<Position.Position>): Stream.Stream<CdcEvent.CdcEvent, PostgresError> =>
      Stream.suspend(() => {
        state.ended = false
        return plan(from)
      }).pipe(
        Stream.retry(retryPolicy),
        Stream.ensuring(
          Effect.sync(() => {
            state.ended = true
          })
        ),
        Stream.withSpan("PostgresSource.stream", { attributes: { slot: config.slot, publication: config.publication } })
      )

    return {
      name: config.name,
      stream,
      acknowledge,
      slot: config.slot,
      publication: config.publication,
      tables: [...byName.keys()],
      server: config.server
    } satisfies PostgresSource
  })

interface ColumnRef {
  readonly name: string
  readonly typeOid: number
}

type ColumnDecoder = (value: Values.ColumnValue) => unknown

/** A replication message that does not fit the protocol's framing (a bug or a corrupt stream, never skipped). */
class ShapeError extends Error {}

/** How long a slot still held by a stream is waited for at start (see `inspectSlot`). */
const SLOT_RELEASE_WAIT = "10 seconds"

interface SnapshotReader {
  readonly session: Session.Session
  /** Ends the snapshot's transaction and closes its session. */
  readonly release: Effect.Effect<void>
}

/** The snapshot's own column for the row id of a table read in physical order. */
const CTID = "redflow ctid"

/** The prefix of the logical message that marks where a retaken snapshot's consistent point has been passed. */
const MARKER_PREFIX = "redflow.snapshot"
