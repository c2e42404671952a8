/**
 * PostgreSQL logical replication for Redflow: {@link PostgresSource} reads the changes of chosen tables (an initial
 * snapshot, then the replication stream, with the built-in `pgoutput` plugin) as a resumable `Source` of change
 * events, and moves its replication slot only as far as the pipeline's checkpoint.
 *
 * @since 0.1.0
 */

/**
 * The PostgreSQL source: changes of chosen tables by logical replication, as a resumable `Source`.
 *
 * @since 0.1.0
 */
export * as PostgresSource from "./PostgresSource.ts"

/**
 * The PostgreSQL source's metrics, as Effect `Metric`s.
 *
 * @since 0.1.0
 */
export * as PostgresMetrics from "./PostgresMetrics.ts"

/**
 * A plain SQL session on the server a `PostgresSource` reads, with the source's connection settings.
 *
 * @since 0.1.0
 */
export * as PostgresSession from "./PostgresSession.ts"
export * from "./PostgresError.ts"
