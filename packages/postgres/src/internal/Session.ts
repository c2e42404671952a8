/**
 * A plain SQL session (not a replication connection) on `pg`, for the start-up checks, publication management and
 * the snapshot reads. Every value comes back as the server's text form, exactly as pgoutput sends it, so one value
 * mapping (`Values.ts`) serves the snapshot and the stream alike.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import pg from "pg"
import { ReplicationError } from "./ReplicationClient.ts"

/**
 * Session settings that fix the text form of values: ISO dates in UTC, floats with every digit, ISO 8601 intervals.
 * Sent as the startup `options` of every connection this package opens (pgoutput formats values with the WAL
 * sender's settings, so the replication connection gets them too).
 */
export const STARTUP_OPTIONS =
  "-c DateStyle=ISO,MDY -c TimeZone=UTC -c IntervalStyle=iso_8601 -c extra_float_digits=3 -c bytea_output=hex"

/** Every type parsed as its text form: the value mapping is ours, not pg's. */
const textTypes = { getTypeParser: () => (value: string) => value } as unknown as pg.CustomTypesConfig

export interface Row {
  readonly [column: string]: string | null
}

export interface Session {
  /** Runs one statement with `$1…` parameters; values come back as text (or null). */
  readonly query: (sql: string, params?: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<Row>, ReplicationError>
  /** The server as `host:port/db`, for messages. */
  readonly server: string
}

export interface ConnectOptions {
  readonly url: string
  readonly password?: Redacted.Redacted | undefined
  readonly applicationName?: string | undefined
}

const describe = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

const codeOf = (cause: unknown): { code?: string } => {
  const code = (cause as { code?: unknown } | null)?.code
  return typeof code === "string" ? { code } : {}
}

/** `host:port/db` of a connection URL, without user or password. */
export const serverOf = (url: string): string => {
  try {
    const parsed = new URL(url)
    return `${parsed.hostname || "localhost"}:${parsed.port || "5432"}${parsed.pathname || "/"}`
  } catch {
    return "<unparseable url>"
  }
}

/** Opens a session for the scope; closed when the scope closes. */
export const make = (options: ConnectOptions): Effect.Effect<Session, ReplicationError, Scope.Scope> =>
  Effect.gen(function* () {
    const server = serverOf(options.url)
    const client = new pg.Client({
      connectionString: options.url,
      options: STARTUP_OPTIONS,
      types: textTypes,
      ...(options.password === undefined ? {} : { password: Redacted.value(options.password) }),
      ...(options.applicationName === undefined ? {} : { application_name: options.applicationName })
    })
    client.on("error", () => undefined)
    yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => client.connect(),
        catch: (cause) =>
          new ReplicationError({
            operation: "connect",
            ...codeOf(cause),
            message: `could not connect to PostgreSQL at ${server}: ${describe(cause)}`,
            cause
          })
      }),
      () => Effect.promise(() => client.end().catch(() => undefined))
    )
    const query: Session["query"] = (sql, params = []) =>
      Effect.tryPromise({
        try: () => client.query(sql, params as Array<unknown>).then((result) => result.rows as ReadonlyArray<Row>),
        catch: (cause) =>
          new ReplicationError({
            operation: "query",
            ...codeOf(cause),
            message: `${describe(cause)} (PostgreSQL at ${server}; ${sql.replace(/\s+/g, " ").slice(0, 80)})`,
            cause
          })
      })
    return { query, server }
  })
