/**
 * The PostgreSQL source's metrics, as Effect `Metric`s with a `source` attribute (the source's name). The
 * Prometheus endpoint adds the `deltaforge_` prefix, as for the sink's series.
 *
 * @since 0.1.0
 */
import * as Metric from "effect/Metric"

const eventsOptions = {
  description: "Change events read from PostgreSQL (snapshot rows included), by op",
  incremental: true
} as const
const transactionsOptions = {
  description: "Committed transactions read from the replication stream",
  incremental: true
} as const

/**
 * `source_events_total`: change events read from PostgreSQL (snapshot rows included), by op.
 *
 * @since 0.1.0
 * @category metrics
 */
export const events = Metric.counter("source_events_total", eventsOptions)
/**
 * `source_transactions_total`: committed transactions read from the replication stream.
 *
 * @since 0.1.0
 * @category metrics
 */
export const transactions = Metric.counter("source_transactions_total", transactionsOptions)

/**
 * {@link events} of one series, its attributes built in: the same series as `Metric.withAttributes(events, a)`, but
 * keyed once. `withAttributes` merges its attributes into a new context at every update, and the series' key (a JSON
 * of them) is computed again each time: what the source pays per socket read.
 *
 * @since 0.1.0
 * @category metrics
 */
export const eventsOf = (attributes: Metric.Metric.Attributes) =>
  Metric.counter("source_events_total", { ...eventsOptions, attributes })

/**
 * {@link transactions} of one series, keyed once (see {@link eventsOf}).
 *
 * @since 0.1.0
 * @category metrics
 */
export const transactionsOf = (attributes: Metric.Metric.Attributes) =>
  Metric.counter("source_transactions_total", { ...transactionsOptions, attributes })
/**
 * `source_replication_lag_bytes`: the server's WAL position minus the slot's confirmed point, the WAL not yet durable
 * downstream.
 *
 * @since 0.1.0
 * @category metrics
 */
export const lagBytes = Metric.gauge("source_replication_lag_bytes", {
  description: "The server's WAL position minus the slot's confirmed point: WAL not yet durable downstream"
})
/**
 * `source_replication_lag_seconds`: now minus the commit time of the last transaction read; 0 when everything read is
 * durable.
 *
 * @since 0.1.0
 * @category metrics
 */
export const lagSeconds = Metric.gauge("source_replication_lag_seconds", {
  description: "Now minus the commit time of the last transaction read; 0 when everything read is durable"
})
/**
 * `source_slot_retained_wal_bytes`: WAL the server keeps for the slot (its current WAL position minus the slot's
 * restart LSN).
 *
 * @since 0.1.0
 * @category metrics
 */
export const retainedWalBytes = Metric.gauge("source_slot_retained_wal_bytes", {
  description: "WAL the server keeps for the slot (current WAL position minus the slot's restart LSN)"
})
/**
 * `source_slot_retained_wal_over_bound`: 1 while the slot retains more WAL than `maxRetainedWalBytes`, else 0.
 *
 * @since 0.1.0
 * @category metrics
 */
export const retainedWalOverBound = Metric.gauge("source_slot_retained_wal_over_bound", {
  description: "1 while the slot retains more WAL than maxRetainedWalBytes, else 0"
})
/**
 * `source_snapshot_rows_total`: rows read by the initial snapshot, by table.
 *
 * @since 0.1.0
 * @category metrics
 */
export const snapshotRows = Metric.counter("source_snapshot_rows_total", {
  description: "Rows read by the initial snapshot, by table",
  incremental: true
})
/**
 * `source_snapshot_tables_done`: tables the initial snapshot has finished.
 *
 * @since 0.1.0
 * @category metrics
 */
export const snapshotTables = Metric.gauge("source_snapshot_tables_done", {
  description: "Tables the initial snapshot has finished"
})
/**
 * `source_snapshot_tables_total`: tables the initial snapshot reads.
 *
 * @since 0.1.0
 * @category metrics
 */
export const snapshotTablesTotal = Metric.gauge("source_snapshot_tables_total", {
  description: "Tables the initial snapshot reads"
})
/**
 * `source_reconnects_total`: replication connections opened again after a failure.
 *
 * @since 0.1.0
 * @category metrics
 */
export const reconnects = Metric.counter("source_reconnects_total", {
  description: "Replication connections opened again after a failure",
  incremental: true
})
