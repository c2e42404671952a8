/**
 * The failures of the PostgreSQL source, one class per way it fails. Each message names the server, what is wrong
 * and what to do about it.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import type { PostgresValueError } from "./internal/Values.ts"

/**
 * The source cannot run with this server's settings or objects: `wal_level` not `logical`, a table that does not
 * exist, a published table without a replica identity, a publication or slot that does not fit, a database that does
 * not exist. Found at start, before anything is read; it names the server and the fix. The CLI exits 2. (An option
 * that is simply malformed, found before connecting, is a `ConfigError` with component `PostgresSource`.)
 *
 * @since 0.1.0
 * @category errors
 */
export class PostgresConfigError extends Schema.TaggedError<PostgresConfigError>()("PostgresConfigError", {
  /** The option or server setting at fault, e.g. `tables`, `wal_level`, `slot`. */
  field: Schema.String,
  /** The server as `host:port/db`, when one is involved. */
  server: Schema.optionalKey(Schema.String),
  reason: Schema.String,
  fix: Schema.String
}) {
  override get message(): string {
    const where = this.server === undefined ? "" : ` (PostgreSQL at ${this.server})`
    return `${this.field}: ${this.reason}${where}. Fix: ${this.fix}`
  }
}

/**
 * The server refused who we are: a wrong password, a role without `REPLICATION` (or `LOGIN`), no `SELECT` on a
 * table, no right to create the publication. The CLI exits 3.
 *
 * @since 0.1.0
 * @category errors
 */
export class PostgresPermissionError extends Schema.TaggedError<PostgresPermissionError>()("PostgresPermissionError", {
  server: Schema.String,
  /** The role connecting. */
  user: Schema.String,
  reason: Schema.String,
  fix: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {
  override get message(): string {
    return `PostgreSQL at ${this.server} refused role ${JSON.stringify(this.user)}: ${this.reason}. Fix: ${this.fix}`
  }
}

/**
 * Another process streams from the replication slot (a slot has one reader at a time).
 *
 * @since 0.1.0
 * @category errors
 */
export class PostgresSlotInUse extends Schema.TaggedError<PostgresSlotInUse>()("PostgresSlotInUse", {
  server: Schema.String,
  slot: Schema.String,
  /** The server process streaming from it (`pg_replication_slots.active_pid`). */
  pid: Schema.Number
}) {
  override get message(): string {
    return (
      `replication slot ${JSON.stringify(this.slot)} on ${this.server} is being streamed by server process ${this.pid}: ` +
      `stop the other pipeline using it, or give this one its own --slot (SELECT pg_terminate_backend(${this.pid}) ends the other stream)`
    )
  }
}

/**
 * The server could not be reached or dropped the connection, and the retry policy gave up. Nothing is lost: the
 * slot keeps the WAL from its confirmed point, and a restart resumes from the checkpoint.
 *
 * @since 0.1.0
 * @category errors
 */
export class PostgresUnavailable extends Schema.TaggedError<PostgresUnavailable>()("PostgresUnavailable", {
  server: Schema.String,
  reason: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {
  override get message(): string {
    return `PostgreSQL at ${this.server} is unavailable: ${this.reason}`
  }
}

/**
 * The replication stream said something the source cannot accept: a message it cannot decode, a change for a table
 * it has no description of, a value of the wrong form, WAL the slot no longer has. Never skipped: the source stops.
 *
 * @since 0.1.0
 * @category errors
 */
export class PostgresProtocolError extends Schema.TaggedError<PostgresProtocolError>()("PostgresProtocolError", {
  server: Schema.String,
  reason: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {
  override get message(): string {
    return `unexpected replication data from PostgreSQL at ${this.server}: ${this.reason}`
  }
}

/**
 * Every way the PostgreSQL source fails, one tagged class per failure mode.
 *
 * @since 0.1.0
 * @category errors
 */
export type PostgresError =
  | PostgresConfigError
  | PostgresPermissionError
  | PostgresSlotInUse
  | PostgresUnavailable
  | PostgresProtocolError
  | PostgresValueError
