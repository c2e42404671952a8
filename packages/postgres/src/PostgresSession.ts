/**
 * A plain SQL session on the server a {@link PostgresSource} reads, opened with the source's own connection settings
 * (the same text form of values) and with a failure to connect classified as the source classifies it: a refused
 * role is a `PostgresPermissionError` naming the grant, a missing database a `PostgresConfigError`, anything else
 * `PostgresUnavailable`. For what runs beside a pipeline: preparing a schema, seeding rows, writing test traffic.
 *
 * @example
 * ```ts
 * import * as PostgresSession from "@redflow/postgres/PostgresSession"
 *
 * const rows = Effect.scoped(
 *   Effect.flatMap(PostgresSession.make({ url: "postgres://app@db:5432/shop" }), (session) =>
 *     session.query("SELECT count(*) AS n FROM orders")
 *   )
 * )
 * // rows: [{ n: "42" }]: every value in its text form
 * ```
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { PostgresConfigError, PostgresPermissionError, PostgresUnavailable } from "./PostgresError.ts"
import type { ReplicationError } from "./internal/ReplicationClient.ts"
import * as Session from "./internal/Session.ts"
import * as Setup from "./internal/Setup.ts"

/**
 * A failed statement: `code` is the SQLSTATE when the server answered, absent when the connection went.
 *
 * @since 0.1.0
 * @category errors
 */
export type { ReplicationError }

/**
 * A row: every column as the server's text form, or null.
 *
 * @since 0.1.0
 * @category models
 */
export type Row = Session.Row

/**
 * An open session; `query` runs one statement with `$1…` parameters.
 *
 * @since 0.1.0
 * @category models
 */
export type PostgresSession = Session.Session

/**
 * Options of {@link make}: the server's URL, a password, and the `application_name` the session shows.
 *
 * @since 0.1.0
 * @category options
 */
export interface Options {
  /** `postgres://user@host:port/db`; a password in it is used, but prefer `password`. */
  readonly url: string
  readonly password?: Session.ConnectOptions["password"]
  /** The application_name the server shows in pg_stat_activity. */
  readonly applicationName?: string | undefined
}

/**
 * Why a session could not be opened, classified as the source classifies it: a refused role, a missing database, or a
 * server out of reach.
 *
 * @since 0.1.0
 * @category errors
 */
export type ConnectError = PostgresPermissionError | PostgresConfigError | PostgresUnavailable

/**
 * `host:port/db` of a connection URL, without the user or the password: what messages name.
 *
 * @since 0.1.0
 * @category utils
 */
export const serverOf: (url: string) => string = Session.serverOf

/**
 * An identifier quoted for SQL: `quoteIdent('my "t"')` is `"my ""t"""`.
 *
 * @since 0.1.0
 * @category utils
 */
export const quoteIdent: (name: string) => string = Setup.quoteIdent

/**
 * The role a URL connects as: its user, else `PGUSER`, else `postgres` (as libpq and `pg` choose it).
 *
 * @since 0.1.0
 * @category utils
 */
export const userOf = (url: string): string => {
  try {
    return decodeURIComponent(new URL(url).username) || process.env.PGUSER || "postgres"
  } catch {
    return "postgres"
  }
}

/**
 * Opens a session for the scope (closed when the scope closes).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<PostgresSession, ConnectError, Scope.Scope> =>
  Session.make(options).pipe(
    Effect.mapError((error) => Setup.classifyConnectError(error, Session.serverOf(options.url), userOf(options.url)))
  )
