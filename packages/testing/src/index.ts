/**
 * Redis and PostgreSQL for tests: a server per test (PostgreSQL with logical decoding on), topologies (standalone, primary + replica, sentinel, cluster), a chaos TCP
 * proxy and process faults, all scoped so nothing started outlives its test.
 *
 * @since 0.1.0
 */
export * as ChaosProxy from "./ChaosProxy.ts"
export * as PostgresTestServer from "./PostgresTestServer.ts"
export * as RedisTestServer from "./RedisTestServer.ts"
export * as RedisTopology from "./RedisTopology.ts"
export * as TestingError from "./TestingError.ts"
