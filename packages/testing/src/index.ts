/**
 * Redis and PostgreSQL for tests: a server per test (PostgreSQL with logical decoding on), topologies (standalone, primary + replica, sentinel, cluster), a chaos TCP
 * proxy and process faults, all scoped so nothing started outlives its test.
 *
 * @since 0.1.0
 */

/**
 * A TCP proxy that makes network faults for real, between a client and a server.
 *
 * @since 0.1.0
 */
export * as ChaosProxy from "./ChaosProxy.ts"

/**
 * A PostgreSQL server for a test, ready for logical decoding, stopped when the scope closes.
 *
 * @since 0.1.0
 */
export * as PostgresTestServer from "./PostgresTestServer.ts"

/**
 * A Redis server for a test, stopped when the scope closes.
 *
 * @since 0.1.0
 */
export * as RedisTestServer from "./RedisTestServer.ts"

/**
 * Redis topologies for tests: standalone, primary + replica, sentinel, cluster.
 *
 * @since 0.1.0
 */
export * as RedisTopology from "./RedisTopology.ts"

/**
 * The failures of `@redflow/testing`, one class per failure mode.
 *
 * @since 0.1.0
 */
export * as TestingError from "./TestingError.ts"
