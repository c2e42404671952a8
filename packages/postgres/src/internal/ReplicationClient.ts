/**
 * A client on a replication connection (`replication=database`), built on `pg`'s `Client` (its connection, startup
 * and error handling, its pg-protocol parser) with the replication framing and the pgoutput decoder of this package.
 *
 * Why not `pg-logical-replication`: its keepalive timer acknowledges the last *received* LSN, and its automatic mode
 * acknowledges before a handler has finished; here the flushed LSN sent to the server is only ever what the caller
 * passed to `acknowledge` (see the package README for the measurements).
 *
 * Backpressure: decoded messages wait in a bounded inbox; when it holds `highWater` messages the socket is paused,
 * so the server's WAL sender blocks on TCP instead of this process buffering a large transaction.
 *
 * @internal
 */
import type * as Arr from "effect/Array"
import * as Cause from "effect/Cause"
import * as Channel from "effect/Channel"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as Pull from "effect/Pull"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import pg from "pg"
import * as Pgoutput from "./Pgoutput.ts"
import * as Protocol from "./ReplicationProtocol.ts"
import { STARTUP_OPTIONS } from "./Session.ts"

/** A failure of the replication connection. `code` is the server's SQLSTATE when the server refused. */
export class ReplicationError extends Schema.TaggedError<ReplicationError>()("PostgresReplicationError", {
  operation: Schema.Literals(["connect", "query", "createSlot", "startReplication", "stream", "acknowledge"]),
  code: Schema.optional(Schema.String),
  message: Schema.String,
  cause: Schema.optional(Schema.Defect())
}) {}

export interface ConnectOptions {
  /** `postgres://user@host:port/db`; a password in it is used, but prefer `password`. */
  readonly url: string
  readonly password?: Redacted.Redacted | undefined
  /** The application_name the server shows in pg_stat_replication / pg_stat_activity. */
  readonly applicationName?: string | undefined
}

export interface CreatedSlot {
  readonly slotName: string
  readonly consistentPoint: Pgoutput.Lsn
  /** The exported snapshot (with `snapshot: "export"`), valid while this connection stays open and idle. */
  readonly snapshotName: string | undefined
  readonly outputPlugin: string
}

export interface StartOptions {
  readonly slot: string
  /** Where to start; `0n` means the slot's `confirmed_flush_lsn`. The server never goes back before that point. */
  readonly startLsn: Pgoutput.Lsn
  readonly publications: ReadonlyArray<string>
  /** Ask for logical decoding messages (`pg_logical_emit_message`) too. Default false. */
  readonly messages?: boolean | undefined
  /** Decoded messages held before the socket is paused. Default 1024. */
  readonly highWater?: number | undefined
}

/** A decoded XLogData message. */
export interface Data {
  readonly _tag: "Data"
  readonly walStart: Pgoutput.Lsn
  readonly walEnd: Pgoutput.Lsn
  readonly message: Pgoutput.Message
}

/** Received from the stream: decoded data, or a keepalive (already answered when it asked for a reply). */
export type Event = Data | Protocol.Keepalive

export interface ReplicationClient {
  /** A simple-protocol command on the replication connection (`IDENTIFY_SYSTEM`, `DROP_REPLICATION_SLOT …`). */
  readonly query: (sql: string) => Effect.Effect<ReadonlyArray<Record<string, unknown>>, ReplicationError>
  /** `CREATE_REPLICATION_SLOT name LOGICAL pgoutput (SNAPSHOT '…')`. */
  readonly createSlot: (
    name: string,
    options?: { readonly snapshot?: "export" | "nothing" | "use" | undefined; readonly temporary?: boolean }
  ) => Effect.Effect<CreatedSlot, ReplicationError>
  /**
   * `START_REPLICATION SLOT … LOGICAL … (proto_version '1', publication_names '…')`. The connection streams from
   * then on: one stream per client. Keepalives that ask for a reply are answered with the acknowledged LSN.
   */
  readonly stream: (options: StartOptions) => Stream.Stream<Event, ReplicationError>
  /**
   * The same as {@link stream}, as a pull in the scope: each pull waits for what has arrived and returns all of it
   * (everything the socket delivered in one read comes in one array), `Cause.Done` once the server ended the stream.
   * For a caller that consumes the messages in its own loop without a stream stage per message.
   */
  readonly open: (
    options: StartOptions
  ) => Effect.Effect<Pull.Pull<Arr.NonEmptyReadonlyArray<Event>, ReplicationError>, ReplicationError, Scope.Scope>
  /**
   * Tells the server that everything up to `flushed` is durable downstream: the slot's `confirmed_flush_lsn` moves
   * there (never backwards). This is the only way the flushed LSN sent to the server moves.
   */
  readonly acknowledge: (flushed: Pgoutput.Lsn) => Effect.Effect<void, ReplicationError>
  /** The flushed LSN last sent (or to be sent) to the server. */
  readonly acknowledged: () => Pgoutput.Lsn
  /** The highest WAL position received in XLogData or keepalive messages. */
  readonly received: () => Pgoutput.Lsn
}

/** What `pg`'s Client carries but does not type: its protocol connection. */
interface PgConnection {
  readonly stream: { pause(): void; resume(): void }
  on(event: "copyData", listener: (message: { readonly chunk: Buffer }) => void): void
  once(event: "replicationStart", listener: () => void): void
  removeListener(event: "copyData", listener: (message: { readonly chunk: Buffer }) => void): void
  sendCopyFromChunk(chunk: Buffer): void
}

const describe = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

const sqlstate = (cause: unknown): { code?: string } => {
  const code = (cause as { code?: unknown } | null)?.code
  return typeof code === "string" ? { code } : {}
}

const failure = (operation: ReplicationError["operation"], what: string) => (cause: unknown) =>
  new ReplicationError({ operation, ...sqlstate(cause), message: `${what}: ${describe(cause)}`, cause })

/** Quotes an identifier for the replication grammar. */
export const quoteIdent = (name: string): string => `"${name.replaceAll('"', '""')}"`
const quoteLiteral = (text: string): string => `'${text.replaceAll("'", "''")}'`

const micros = Effect.map(Clock.currentTimeMillis, Pgoutput.fromEpochMillis)

/** Opens a replication connection for the scope; closed (Terminate) when the scope closes. */
export const make = (options: ConnectOptions): Effect.Effect<ReplicationClient, ReplicationError, Scope.Scope> =>
  Effect.gen(function* () {
    // `replication` is a startup parameter pg passes through but does not type.
    const config: pg.ClientConfig & { readonly replication: "database" } = {
      connectionString: options.url,
      replication: "database",
      options: STARTUP_OPTIONS,
      ...(options.password === undefined ? {} : { password: Redacted.value(options.password) }),
      ...(options.applicationName === undefined ? {} : { application_name: options.applicationName })
    }
    const client = new pg.Client(config)
    // A socket error after connect also rejects the active query; this keeps it from being an unhandled event.
    let lastError: unknown
    client.on("error", (error) => {
      lastError = error
    })
    yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => client.connect(),
        catch: failure("connect", `could not open a replication connection to ${redactUrl(options.url)}`)
      }),
      () => Effect.promise(() => client.end().catch(() => undefined))
    )
    const connection = (client as unknown as { readonly connection: PgConnection }).connection

    let acknowledged = 0n
    let received = 0n
    let streaming = false

    const sendStatus = (replyRequested: boolean) =>
      Effect.flatMap(micros, (clientTime) =>
        Effect.try({
          try: () =>
            connection.sendCopyFromChunk(
              Protocol.encodeStandbyStatus({
                written: received > acknowledged ? received : acknowledged,
                flushed: acknowledged,
                applied: acknowledged,
                clientTime,
                replyRequested
              })
            ),
          catch: failure("acknowledge", "could not send a standby status update")
        })
      )

    const query = (sql: string) =>
      Effect.tryPromise({
        try: () => client.query(sql).then((result) => result.rows as ReadonlyArray<Record<string, unknown>>),
        catch: failure("query", `${sql.split(" ", 2).join(" ")} failed`)
      })

    const createSlot: ReplicationClient["createSlot"] = (name, slotOptions = {}) =>
      Effect.tryPromise({
        try: () =>
          client.query(
            `CREATE_REPLICATION_SLOT ${quoteIdent(name)}${slotOptions.temporary ? " TEMPORARY" : ""} LOGICAL pgoutput` +
              ` (SNAPSHOT '${slotOptions.snapshot ?? "export"}')`
          ),
        catch: failure("createSlot", `could not create replication slot ${name}`)
      }).pipe(
        Effect.flatMap((result) => {
          const row = result.rows[0] as Record<string, string | null> | undefined
          const consistentPoint = row?.consistent_point == null ? undefined : Pgoutput.parseLsn(row.consistent_point)
          return row === undefined || consistentPoint === undefined
            ? Effect.fail(
                new ReplicationError({
                  operation: "createSlot",
                  message: `CREATE_REPLICATION_SLOT ${name} answered no consistent point: ${JSON.stringify(row)}`
                })
              )
            : Effect.succeed({
                slotName: String(row.slot_name),
                consistentPoint,
                snapshotName: row.snapshot_name ?? undefined,
                outputPlugin: String(row.output_plugin)
              })
        })
      )

    const open = (
      start: StartOptions
    ): Effect.Effect<Pull.Pull<Arr.NonEmptyReadonlyArray<Event>, ReplicationError>, ReplicationError, Scope.Scope> =>
      Effect.gen(function* () {
        if (streaming) {
          return yield* new ReplicationError({
            operation: "startReplication",
            message: "this replication connection is already streaming: open another client"
          })
        }
        streaming = true
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            connection.removeListener("copyData", onCopyData)
            streaming = false
          })
        )
        const highWater = start.highWater ?? 1024
        let inbox: Array<Event> = []
        let paused = false
        let ended = false
        let error: ReplicationError | undefined
        let wake: (() => void) | undefined
        let waking = false
        // The waiting reader is woken once the parser has emitted every message of the socket read in hand (a
        // microtask runs after it), not once per message: one pull then carries a whole read, and what follows (the
        // source's decoding, the sink's encoding) runs once for it instead of once per protocol message.
        const wakeUp = () => {
          waking = false
          const resume = wake
          wake = undefined
          resume?.()
        }
        const notify = () => {
          if (wake === undefined || waking) return
          waking = true
          queueMicrotask(wakeUp)
        }
        if (start.startLsn > acknowledged) acknowledged = start.startLsn

        const onCopyData = ({ chunk }: { readonly chunk: Buffer }) => {
          if (error !== undefined) return
          // Decoded here, inside the event: the chunk is a view into the parser's buffer, reused after it.
          try {
            if (Protocol.isXLogData(chunk)) {
              // The payload is decoded where it lies in the chunk: no frame object and no view per message.
              const walEnd = Protocol.walEndOf(chunk)
              if (walEnd > received) received = walEnd
              inbox.push({
                _tag: "Data",
                walStart: Protocol.walStartOf(chunk),
                walEnd,
                message: Pgoutput.decode(chunk, Protocol.XLOG_DATA_OFFSET)
              })
            } else {
              const frame = Protocol.parseServerMessage(chunk)
              if (frame.walEnd > received) received = frame.walEnd
              if (frame._tag === "Keepalive") {
                // The answer carries the acknowledged LSN, never the received one.
                if (frame.replyRequested) Effect.runSync(Effect.ignore(sendStatus(false)))
                inbox.push(frame)
              } else {
                inbox.push({
                  _tag: "Data",
                  walStart: frame.walStart,
                  walEnd: frame.walEnd,
                  message: Pgoutput.decode(frame.data)
                })
              }
            }
          } catch (cause) {
            error = failure("stream", "could not decode the replication stream")(cause)
          }
          if (!paused && inbox.length >= highWater) {
            paused = true
            connection.stream.pause()
          }
          notify()
        }
        connection.on("copyData", onCopyData)

        const sql =
          `START_REPLICATION SLOT ${quoteIdent(start.slot)} LOGICAL ${Pgoutput.formatLsn(start.startLsn)} (` +
          `proto_version '1', publication_names ${quoteLiteral(start.publications.map(quoteIdent).join(","))}` +
          `${start.messages ? ", messages 'true'" : ""})`
        const started = new Promise<void>((resolve) => connection.once("replicationStart", resolve))
        const done = client.query(sql).then(
          () => {
            ended = true
            notify()
          },
          (cause: unknown) => {
            error ??= failure(
              "startReplication",
              `replication from slot ${start.slot} ended`
            )(lastError instanceof Error && /terminated/i.test(describe(cause)) ? lastError : cause)
            notify()
          }
        )
        // Wait for CopyBothResponse, or the refusal (slot missing, in use, no such publication).
        yield* Effect.promise(() => Promise.race([started, done]))
        if (error !== undefined) return yield* error

        const take = Effect.callback<ReadonlyArray<Event>>((resume) => {
          const deliver = () => {
            // At most `highWater` messages per pull, however many one socket read brought: what is handed on is
            // then processed (and let go) before the next part, instead of waiting as a whole read's worth of
            // events while the sink works through it.
            let batch = inbox
            if (inbox.length > highWater) {
              batch = inbox.slice(0, highWater)
              inbox = inbox.slice(highWater)
            } else inbox = []
            if (paused && inbox.length < highWater) {
              paused = false
              connection.stream.resume()
            }
            resume(Effect.succeed(batch))
          }
          if (inbox.length > 0 || error !== undefined || ended) deliver()
          else wake = deliver
          return Effect.sync(() => {
            if (wake === deliver) wake = undefined
          })
        })
        return Effect.flatMap(
          take,
          (batch): Effect.Effect<Arr.NonEmptyReadonlyArray<Event>, ReplicationError | Cause.Done> =>
            batch.length > 0
              ? Effect.succeed(batch as Arr.NonEmptyReadonlyArray<Event>)
              : error !== undefined
                ? Effect.fail(error)
                : Cause.done()
        )
      })

    const stream = (start: StartOptions): Stream.Stream<Event, ReplicationError> =>
      Stream.fromChannel(Channel.fromTransform((_, scope) => open(start).pipe(Scope.provide(scope))))

    const acknowledge = (flushed: Pgoutput.Lsn) =>
      Effect.suspend(() => {
        if (flushed > acknowledged) acknowledged = flushed
        return streaming ? sendStatus(false) : Effect.void
      })

    return {
      query,
      createSlot,
      stream,
      open,
      acknowledge,
      acknowledged: () => acknowledged,
      received: () => received
    } satisfies ReplicationClient
  })

const redactUrl = (url: string): string => {
  try {
    const parsed = new URL(url)
    if (parsed.password !== "") parsed.password = "***"
    return parsed.toString()
  } catch {
    return "<unparseable url>"
  }
}
