/**
 * Redflow's core: the change event, positions, checkpoint stores, envelopes, routing, metrics and the `Source`
 * contract every change source fulfils.
 *
 * @since 0.1.0
 */

/**
 * The change-data-capture event, with a deterministic `id` and a byte-comparable `position`.
 *
 * @since 0.1.0
 */
export * as CdcEvent from "./CdcEvent.ts"

/**
 * The one shape of a configuration error across Redflow, carrying the option's path.
 *
 * @since 0.1.0
 */
export * as ConfigError from "./ConfigError.ts"

/**
 * The metrics of a Redflow pipeline, as Effect `Metric`s.
 *
 * @since 0.1.0
 */
export * as Metrics from "./Metrics.ts"

/**
 * Checkpoints: the last position a pipeline has delivered, so a restart resumes after it.
 *
 * @since 0.1.0
 */
export * as CheckpointStore from "./CheckpointStore.ts"

/**
 * Envelopes: how an event is encoded in a stream entry (native, Debezium, CloudEvents).
 *
 * @since 0.1.0
 */
export * as Envelope from "./Envelope.ts"

/**
 * Positions: byte-comparable strings that order the events of one source.
 *
 * @since 0.1.0
 */
export * as Position from "./Position.ts"

/**
 * Routing templates: the stream an event goes to, and its key.
 *
 * @since 0.1.0
 */
export * as Routing from "./Routing.ts"

/**
 * The contract every change source fulfils: a named, resumable stream of change events.
 *
 * @since 0.1.0
 */
export * as Source from "./Source.ts"

/**
 * A deterministic, replayable source of table changes for demos, tests and benchmarks.
 *
 * @since 0.1.0
 */
export * as SyntheticSource from "./SyntheticSource.ts"

/**
 * The monitoring endpoint: `/metrics`, `/health` and `/ready` over HTTP.
 *
 * @since 0.1.0
 */
export * as MetricsServer from "./MetricsServer.ts"

/**
 * The health of a running application: component states, conditions and readiness checks.
 *
 * @since 0.1.0
 */
export * as PipelineHealth from "./PipelineHealth.ts"
