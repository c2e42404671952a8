/**
 * PostgreSQL logical replication for Redflow. So far the protocol layer only, under `src/internal/`: the pgoutput
 * decoder (`Pgoutput.ts`), the replication stream framing (`ReplicationProtocol.ts`) and the client on a replication
 * connection (`ReplicationClient.ts`). The public `PostgresSource` comes next (issue 11).
 *
 * @since 0.1.0
 */
export {}
