/**
 * The metrics of a Redflow pipeline, as Effect `Metric`s.
 *
 * Names carry no prefix here: the Prometheus endpoint adds it when formatting (`deltaforge` by default, so
 * `sink_events_total` is scraped as `deltaforge_sink_events_total`, docs/DESIGN.md's name). Sink series carry the
 * `pipeline` and `sink` attributes; consumer series `stream` and `group`.
 *
 * @since 0.1.0
 */
import * as Metric from "effect/Metric"

/**
 * The contract's prefix (docs/DESIGN.md, "Metrics"), applied by the Prometheus formatter.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_PREFIX = "deltaforge"

/**
 * Latency buckets from 100 µs to about 26 s, doubling: sub-millisecond delivery stays visible.
 *
 * @since 0.1.0
 * @category constants
 */
export const LATENCY_BOUNDARIES: ReadonlyArray<number> = Metric.exponentialBoundaries({
  start: 0.0001,
  factor: 2,
  count: 18
})

// Sink (the contract's four series first: docs/DESIGN.md)

/**
 * `sink_events_total`: events delivered to Redis and checkpointed.
 *
 * @since 0.1.0
 * @category sink
 */
export const sinkEvents = Metric.counter("sink_events_total", {
  description: "Events delivered to Redis and checkpointed",
  incremental: true
})

/**
 * `sink_batch_total`: batches delivered.
 *
 * @since 0.1.0
 * @category sink
 */
export const sinkBatches = Metric.counter("sink_batch_total", { description: "Batches delivered", incremental: true })

/**
 * `sink_latency_seconds`: from a batch's first event reaching the sink to the batch being acknowledged.
 *
 * @since 0.1.0
 * @category sink
 */
export const sinkLatency = Metric.histogram("sink_latency_seconds", {
  description: "Delivery latency: from a batch's first event reaching the sink to the batch being acknowledged",
  boundaries: LATENCY_BOUNDARIES
})

/**
 * `stage_latency_seconds`: time spent in a pipeline stage per batch (`stage=sink`: the Redis write and the
 * checkpoint).
 *
 * @since 0.1.0
 * @category sink
 */
export const stageLatency = Metric.histogram("stage_latency_seconds", {
  description: "Time spent in a pipeline stage per batch (stage=sink: the Redis write and the checkpoint)",
  boundaries: LATENCY_BOUNDARIES
})

/**
 * `sink_bytes_total`: encoded bytes delivered.
 *
 * @since 0.1.0
 * @category sink
 */
export const sinkBytes = Metric.counter("sink_bytes_total", {
  description: "Encoded bytes delivered",
  incremental: true
})

/**
 * `sink_dead_letter_total`: events sent to the dead-letter stream.
 *
 * @since 0.1.0
 * @category sink
 */
export const sinkDeadLettered = Metric.counter("sink_dead_letter_total", {
  description: "Events sent to the dead-letter stream",
  incremental: true
})

/**
 * `sink_data_loss_total`: times a stream's high-water mark went back or moved under the sink (Redis lost acknowledged
 * writes), by stream. Alert on any increase.
 *
 * @since 0.1.0
 * @category sink
 */
export const sinkDataLoss = Metric.counter("sink_data_loss_total", {
  description:
    "Times a stream's high-water mark went back or moved under the sink (Redis lost acknowledged writes), by stream",
  incremental: true
})

/**
 * `sink_errors_total`: failed batch writes, by error kind (the tag of the typed error).
 *
 * @since 0.1.0
 * @category sink
 */
export const sinkErrors = Metric.counter("sink_errors_total", {
  description: "Failed batch writes, by error kind (the tag of the typed error)",
  incremental: true
})

/**
 * `sink_retries_total`: batch writes tried again, by reason (the tag of the error that caused the retry).
 *
 * @since 0.1.0
 * @category sink
 */
export const sinkRetries = Metric.counter("sink_retries_total", {
  description: "Batch writes tried again, by reason (the tag of the error that caused the retry)",
  incremental: true
})

/**
 * `sink_inflight_batches`: batches written but not yet acknowledged.
 *
 * @since 0.1.0
 * @category sink
 */
export const sinkInFlight = Metric.gauge("sink_inflight_batches", {
  description: "Batches written but not yet acknowledged"
})

/**
 * `sink_checkpoint_position`: the committed checkpoint position as a number (positions wider than 53 bits show their
 * low bits).
 *
 * @since 0.1.0
 * @category sink
 */
export const checkpointSequence = Metric.gauge("sink_checkpoint_position", {
  description: "The committed checkpoint position, as a number (positions wider than 53 bits show their low bits)"
})

/**
 * `sink_checkpoint_timestamp_seconds`: Unix time of the last checkpoint commit; the checkpoint's age is `time()`
 * minus this.
 *
 * @since 0.1.0
 * @category sink
 */
export const checkpointTimestamp = Metric.gauge("sink_checkpoint_timestamp_seconds", {
  description: "Unix time of the last checkpoint commit; its age is time() minus this"
})

// Write gates (backpressure: a gate holds the sink's writes while its probe says so), by pipeline and gate

/**
 * 1 while a write gate holds the sink's writes, 0 once it lets them through again.
 *
 * @since 0.1.0
 * @category sink
 */
export const sinkHeld = Metric.gauge("sink_held", {
  description: "1 while a write gate (memory, consumer lag) holds the sink's writes, by pipeline and gate"
})

/**
 * Times a write gate started holding writes.
 *
 * @since 0.1.0
 * @category sink
 */
export const sinkHolds = Metric.counter("sink_holds_total", {
  description: "Times a write gate started holding the sink's writes, by pipeline and gate",
  incremental: true
})

/**
 * Seconds writes spent held by a gate.
 *
 * @since 0.1.0
 * @category sink
 */
export const sinkHeldSeconds = Metric.counter("sink_held_seconds_total", {
  description: "Seconds the sink's writes spent held by a write gate, by pipeline and gate",
  incremental: true
})

// Pipeline lease (one active writer per pipeline name), by pipeline

/**
 * 1 while this process holds its pipeline's lease (the active writer), 0 while it waits as a standby.
 *
 * @since 0.1.0
 * @category lease
 */
export const leaseHeld = Metric.gauge("pipeline_lease_held", {
  description: "1 while this process holds the pipeline's lease and writes, 0 while it waits (standby)"
})

/**
 * Times this process lost its lease (a renewal found it gone or taken, or Redis stayed unreachable past the ttl).
 *
 * @since 0.1.0
 * @category lease
 */
export const leaseLost = Metric.counter("pipeline_lease_lost_total", {
  description: "Times this process lost the pipeline's lease, by reason",
  incremental: true
})

// Connection

/**
 * `redis_reconnects_total`: reconnection attempts of Redis clients.
 *
 * @since 0.1.0
 * @category connection
 */
export const reconnects = Metric.counter("redis_reconnects_total", {
  description: "Reconnection attempts of Redis clients",
  incremental: true
})

// Consumer

/**
 * `consumer_delivered_total`: entries handed to the application by a consumer group reader.
 *
 * @since 0.1.0
 * @category consumer
 */
export const consumerDelivered = Metric.counter("consumer_delivered_total", {
  description: "Entries handed to the application by a consumer group reader",
  incremental: true
})

/**
 * `consumer_acked_total`: entries acknowledged (`XACK`).
 *
 * @since 0.1.0
 * @category consumer
 */
export const consumerAcked = Metric.counter("consumer_acked_total", {
  description: "Entries acknowledged (XACK)",
  incremental: true
})

/**
 * `consumer_claimed_total`: entries claimed from other consumers (`XAUTOCLAIM` / `XCLAIM`).
 *
 * @since 0.1.0
 * @category consumer
 */
export const consumerClaimed = Metric.counter("consumer_claimed_total", {
  description: "Entries claimed from other consumers (XAUTOCLAIM / XCLAIM)",
  incremental: true
})

/**
 * `consumer_dead_lettered_total`: entries moved to the dead-letter stream after too many deliveries or undecodable
 * data.
 *
 * @since 0.1.0
 * @category consumer
 */
export const consumerDeadLettered = Metric.counter("consumer_dead_lettered_total", {
  description: "Entries moved to the dead-letter stream after too many deliveries or undecodable data",
  incremental: true
})

/**
 * `consumer_pending`: entries delivered to the group but not acknowledged (`XPENDING`).
 *
 * @since 0.1.0
 * @category consumer
 */
export const consumerPending = Metric.gauge("consumer_pending", {
  description: "Entries delivered to the group but not acknowledged (XPENDING)"
})

/**
 * Attributes of a sink's series.
 *
 * @since 0.1.0
 * @category utils
 */
export const sinkAttributes = (pipeline: string, sink: string) => ({ pipeline, sink })
