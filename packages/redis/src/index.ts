/**
 * Redis Streams for Redflow: {@link RedisStreamSink} writes change events to streams in batches and moves the
 * checkpoint after each batch is acknowledged; {@link RedisStreamConsumer} reads them back with consumer groups, as
 * Effect streams. Around them: the connection, the failure policy, checkpoints in Redis, write gates, a pipeline
 * lease and stream management.
 *
 * @since 0.1.0
 */

/**
 * What the server's persistence settings mean for writes the sink has been told are done.
 *
 * @since 0.1.0
 */
export * as Durability from "./Durability.ts"

/**
 * The failure-policy table: for each Redis error tag, the `Schedule` that retries a failed batch.
 *
 * @since 0.1.0
 */
export * as FailurePolicy from "./FailurePolicy.ts"

/**
 * Idempotent consumers, keyed on the event `id`: skip an event already handled.
 *
 * @since 0.1.0
 */
export * as Idempotency from "./Idempotency.ts"

/**
 * A write gate that holds the sink's writes before Redis runs out of memory.
 *
 * @since 0.1.0
 */
export * as MemoryGuard from "./MemoryGuard.ts"

/**
 * One active writer per pipeline name: a lease in Redis, renewed while held, taken over by a standby.
 *
 * @since 0.1.0
 */
export * as PipelineLease from "./PipelineLease.ts"

/**
 * A `CheckpointStore` kept in a Redis hash.
 *
 * @since 0.1.0
 */
export * as RedisCheckpointStore from "./RedisCheckpointStore.ts"

/**
 * The Redis connection service: one ioredis client (standalone, Sentinel or Cluster) with typed errors.
 *
 * @since 0.1.0
 */
export * as RedisConnection from "./RedisConnection.ts"

/**
 * One tagged error per Redis failure mode, and `classify`, where a driver error becomes one of them.
 *
 * @since 0.1.0
 */
export * as RedisError from "./RedisError.ts"

/**
 * Pub/sub notices of the batches the sink writes, for ephemeral subscribers.
 *
 * @since 0.1.0
 */
export * as RedisStreamChannel from "./RedisStreamChannel.ts"

/**
 * Consuming CDC events from Redis Streams with consumer groups, as Effect streams.
 *
 * @since 0.1.0
 */
export * as RedisStreamConsumer from "./RedisStreamConsumer.ts"

/**
 * The Redis Streams sink: batched writes, with the checkpoint moved only after each batch is acknowledged.
 *
 * @since 0.1.0
 */
export * as RedisStreamSink from "./RedisStreamSink.ts"

/**
 * A plain `XREAD` subscription to a stream: no group, no acknowledgement.
 *
 * @since 0.1.0
 */
export * as RedisStreamSubscription from "./RedisStreamSubscription.ts"

/**
 * Parsing of Redflow's connection URLs, before any connection is made.
 *
 * @since 0.1.0
 */
export * as RedisUrl from "./RedisUrl.ts"

/**
 * Stream management commands (`XLEN`, `XINFO`, `XPENDING`, `XTRIM` …) with typed results.
 *
 * @since 0.1.0
 */
export * as StreamAdmin from "./StreamAdmin.ts"

/**
 * Trimming that knows its readers, and backpressure from consumer lag.
 *
 * @since 0.1.0
 */
export * as StreamRetention from "./StreamRetention.ts"
