/**
 * The failures of `@redflow/testing`, one class per failure mode, each with a message that says what to do.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * No Redis could be found or started: `REDIS_URL` was not set, `redis-server` is not installed and no Docker
 * engine answered. `attempts` lists what was tried and why each failed.
 *
 * @since 0.1.0
 * @category errors
 */
export class NoRedisAvailable extends Schema.TaggedError<NoRedisAvailable>()("NoRedisAvailable", {
  attempts: Schema.Array(Schema.String),
  message: Schema.String
}) {}

/**
 * A `redis-server` (or sentinel) process did not start or did not answer PING in time. `reason` is
 * `"not-installed"`, `"spawn-failed"`, `"port-in-use"`, `"exited"` or `"timeout"`; `output` is the
 * tail of its log.
 *
 * @since 0.1.0
 * @category errors
 */
export class ServerStartFailed extends Schema.TaggedError<ServerStartFailed>()("ServerStartFailed", {
  binary: Schema.String,
  args: Schema.Array(Schema.String),
  reason: Schema.Literals(["not-installed", "port-in-use", "exited", "timeout", "spawn-failed"]),
  output: Schema.String,
  message: Schema.String
}) {}

/**
 * A Docker container for Redis could not be started through testcontainers.
 *
 * @since 0.1.0
 * @category errors
 */
export class ContainerStartFailed extends Schema.TaggedError<ContainerStartFailed>()("ContainerStartFailed", {
  image: Schema.String,
  cause: Schema.Defect(),
  message: Schema.String
}) {}

/**
 * A topology did not reach the state it waits for (replication link up, sentinels agreeing, cluster_state:ok),
 * or one of its helpers (slot migration, failover wait) failed.
 *
 * @since 0.1.0
 * @category errors
 */
export class TopologyError extends Schema.TaggedError<TopologyError>()("TopologyError", {
  topology: Schema.Literals(["standalone", "primaryReplica", "sentinel", "cluster"]),
  step: Schema.String,
  reason: Schema.String,
  message: Schema.String
}) {}

/**
 * A signal could not be sent to a process (it is gone, or not ours to signal).
 *
 * @since 0.1.0
 * @category errors
 */
export class ProcessSignalFailed extends Schema.TaggedError<ProcessSignalFailed>()("ProcessSignalFailed", {
  pid: Schema.Number,
  signal: Schema.String,
  reason: Schema.String,
  message: Schema.String
}) {}

/**
 * The chaos proxy could not listen.
 *
 * @since 0.1.0
 * @category errors
 */
export class ChaosProxyFailed extends Schema.TaggedError<ChaosProxyFailed>()("ChaosProxyFailed", {
  cause: Schema.Defect(),
  message: Schema.String
}) {}
