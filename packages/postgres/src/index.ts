/**
 * PostgreSQL logical replication for Redflow: {@link PostgresSource} reads the changes of chosen tables (an initial
 * snapshot, then the replication stream, with the built-in `pgoutput` plugin) as a resumable `Source` of change
 * events, and moves its replication slot only as far as the pipeline's checkpoint.
 *
 * @since 0.1.0
 */
export * as PostgresSource from "./PostgresSource.ts"
export * as PostgresMetrics from "./PostgresMetrics.ts"
export * as PostgresSession from "./PostgresSession.ts"
export * from "./PostgresError.ts"
