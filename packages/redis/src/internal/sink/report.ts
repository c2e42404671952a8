/**
 * What the sink tells the world while it works: its metrics, its logs, and, when the application tracks health, the
 * pipeline's component (`retrying` from a failed write until a write goes through again, data loss recorded). Also
 * {@link Report.retried}: a Redis call under the failure policies, each failure logged, counted and shown in health.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Metrics from "@redflow/core/Metrics"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import type * as Position from "@redflow/core/Position"
import * as FailurePolicy from "../../FailurePolicy.ts"
import type { RedisConnectionService } from "../../RedisConnection.ts"
import { type RedisError, RedisReadOnly } from "../../RedisError.ts"
import type { SinkSettings } from "./options.ts"

/** What one committed batch adds to the metrics. */
export interface BatchFigures {
  readonly events: number
  readonly bytes: number
  readonly deadLettered: number
  /** Creation time (ms) of the batch's oldest event, as the sink saw it arrive. */
  readonly enqueuedAt: number
  /** From leaving the queue to the checkpoint, in milliseconds. */
  readonly durationMs: number
}

export interface Report {
  /** A Redis call retried by the failure policies; each failure is logged, counted and shown in health. */
  readonly retried: <A, R>(
    what: string,
    annotations: () => Record<string, unknown>,
    effect: Effect.Effect<A, RedisError, R>
  ) => Effect.Effect<A, RedisError, R>
  /** Counts a retry by its reason. */
  readonly onRetry: (error: RedisError) => Effect.Effect<void>
  /** A write went through: health is ready again after a failure. */
  readonly onWritten: Effect.Effect<void>
  /** A stream's mark went back or moved (see `marks.ts`): counted, logged as an error, recorded in health. */
  readonly onDataLoss: (stream: string, message: string) => Effect.Effect<void>
  readonly inFlight: (batches: number) => Effect.Effect<void>
  /** Batches just checkpointed, at `checkpoint`, at time `committedAt` (ms). */
  readonly committed: (
    batches: ReadonlyArray<BatchFigures>,
    checkpoint: Position.Position,
    committedAt: number
  ) => Effect.Effect<void>
}

/** The error a sink fails with when its policy gives up, with the likely fix where there is one. */
const explainGiveUp = (redis: RedisConnectionService, error: RedisError): RedisError =>
  error._tag === "RedisReadOnly" && redis.topology === "standalone"
    ? new RedisReadOnly({
        message:
          `${redis.description} points at a read-only replica (${error.message}). ` +
          "Point the URL at the master, or use redis+sentinel://… so the sink follows the master.",
        cause: error
      })
    : error

/** The checkpoint as a gauge value: its low 53 bits, which is what a float carries exactly. */
const checkpointGauge = (checkpoint: Position.Position) => Number(BigInt(`0x${checkpoint}`) & 0x1fffffffffffffn)

export const make = (
  settings: SinkSettings,
  redis: RedisConnectionService,
  policies: FailurePolicy.FailurePolicies
): Effect.Effect<Report> =>
  Effect.gen(function* () {
    const attributes = Metrics.sinkAttributes(settings.pipeline, settings.sinkName)
    const metric = {
      events: Metric.withAttributes(Metrics.sinkEvents, attributes),
      batches: Metric.withAttributes(Metrics.sinkBatches, attributes),
      latency: Metric.withAttributes(Metrics.sinkLatency, attributes),
      stage: Metric.withAttributes(Metrics.stageLatency, { pipeline: settings.pipeline, stage: "sink" }),
      bytes: Metric.withAttributes(Metrics.sinkBytes, attributes),
      deadLettered: Metric.withAttributes(Metrics.sinkDeadLettered, attributes),
      inFlight: Metric.withAttributes(Metrics.sinkInFlight, attributes),
      checkpoint: Metric.withAttributes(Metrics.checkpointSequence, attributes),
      checkpointAt: Metric.withAttributes(Metrics.checkpointTimestamp, attributes)
    }
    const onRetry = (error: RedisError) =>
      Metric.update(Metric.withAttributes(Metrics.sinkRetries, { ...attributes, reason: error._tag }), 1)
    // The component is named after the pipeline: what `track(pipeline)` reports.
    const health = yield* Effect.serviceOption(PipelineHealth.PipelineHealth)
    const component = settings.pipeline
    let failing = false
    const reportRetrying = (error: RedisError) =>
      Option.isSome(health)
        ? Effect.suspend(() => {
            failing = true
            return health.value.retrying(component, `${error._tag}: ${error.message}`)
          })
        : Effect.void
    const onError = (error: RedisError) =>
      Metric.update(Metric.withAttributes(Metrics.sinkErrors, { ...attributes, kind: error._tag }), 1).pipe(
        Effect.andThen(reportRetrying(error))
      )
    const onWritten = Effect.suspend(() => {
      if (!failing || Option.isNone(health)) return Effect.void
      failing = false
      return health.value.recovered(component)
    })
    return {
      retried: (what, annotations, effect) =>
        effect.pipe(
          Effect.tapError((error) =>
            Effect.logWarning(`${what} failed: ${error._tag}: ${error.message}`).pipe(
              Effect.annotateLogs({ pipeline: settings.pipeline, ...annotations() }),
              Effect.andThen(onError(error))
            )
          ),
          // Backoff by the policies, cut short when the connection comes back (see FailurePolicy.retryWaking).
          (tried) => FailurePolicy.retryWaking(tried, policies, redis.nextReconnect, onRetry),
          Effect.mapError((error) => explainGiveUp(redis, error))
        ),
      onRetry,
      onWritten,
      onDataLoss: (stream, message) =>
        Metric.update(Metric.withAttributes(Metrics.sinkDataLoss, { ...attributes, stream }), 1).pipe(
          Effect.andThen(
            Effect.logError(
              settings.onDataLoss === "fail" ? message : `${message} (onDataLoss: "continue": writing on)`
            )
          ),
          Effect.andThen(
            Option.isSome(health) ? health.value.recordError(component, `data loss: ${message}`) : Effect.void
          )
        ),
      inFlight: (batches) => Metric.update(metric.inFlight, batches),
      committed: (batches, checkpoint, committedAt) =>
        Effect.gen(function* () {
          for (const batch of batches) {
            yield* Metric.update(metric.events, batch.events)
            yield* Metric.update(metric.batches, 1)
            yield* Metric.update(metric.bytes, batch.bytes)
            if (batch.deadLettered > 0) yield* Metric.update(metric.deadLettered, batch.deadLettered)
            yield* Metric.update(metric.latency, (committedAt - batch.enqueuedAt) / 1000)
            yield* Metric.update(metric.stage, batch.durationMs / 1000)
          }
          yield* Metric.update(metric.checkpoint, checkpointGauge(checkpoint))
          yield* Metric.update(metric.checkpointAt, committedAt / 1000)
        })
    }
  })
