/**
 * The PostgreSQL source: changes of chosen tables, read by logical replication with the built-in `pgoutput` plugin,
 * as a resumable {@link Source} of change events.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Redacted from "effect/Redacted"

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
  /** A warning and `postgres_slot_retained_wal_bytes` over this bound. Default 1 GiB. */
  readonly maxRetainedWalBytes?: number | undefined
  /** Reconnect backoff, as the sink's: exponential from 200 ms, capped at 10 s, giving up after `retryFor`. */
  readonly retryFor?: Duration.Input | undefined
  /** Decoded replication messages held before the socket is paused. Default 1,024. */
  readonly highWater?: number | undefined
}
