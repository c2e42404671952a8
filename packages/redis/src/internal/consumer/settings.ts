/**
 * The consumer's options, checked and resolved once before anything is read: {@link decode} turns the public
 * `Options` into {@link ConsumerSettings} (durations in milliseconds, defaults applied), or fails with the
 * {@link ConsumerConfigError} that names the option.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Envelope from "@redflow/core/Envelope"
import type * as FailurePolicy from "../../FailurePolicy.ts"
import type { RedisError } from "../../RedisError.ts"
import type { Options } from "../../RedisStreamConsumer.ts"

/**
 * Options that cannot work, found before anything is read.
 *
 * @since 0.1.0
 * @category errors
 */
export class ConsumerConfigError extends Schema.TaggedError<ConsumerConfigError>()("ConsumerConfigError", {
  field: Schema.String,
  message: Schema.String
}) {}

/**
 * @since 0.1.0
 * @category errors
 */
export type ConsumerError = RedisError | ConsumerConfigError

/** The consumer's options once checked, with their defaults. */
export interface ConsumerSettings {
  readonly stream: string
  readonly group: string
  readonly consumer: string
  readonly startId: string
  readonly envelope: Envelope.Envelope
  readonly count: number
  readonly blockMs: number
  readonly minIdleMs: number
  readonly claimIntervalMs: number
  readonly claim: boolean
  readonly maxDeliveries: number
  readonly deadLetterStream: string
  readonly recoverPending: boolean
  readonly policies: Partial<FailurePolicy.FailurePolicies>
  /** Hash of the last handler error per pending entry id, for the dead-letter entry. */
  readonly errorsKey: string
}

const configError = (field: string, message: string) => new ConsumerConfigError({ field, message })

/** A positive integer option, or `fallback` when unset. */
export const positiveInt = (
  field: string,
  value: number | undefined,
  fallback: number
): Effect.Effect<number, ConsumerConfigError> =>
  value === undefined
    ? Effect.succeed(fallback)
    : Number.isSafeInteger(value) && value > 0
      ? Effect.succeed(value)
      : Effect.fail(configError(field, `${field} must be a positive integer`))

/** A positive finite duration option in milliseconds (at least 1), or `fallback` when unset. */
export const durationMs = (
  field: string,
  value: Duration.Input | undefined,
  fallback: number
): Effect.Effect<number, ConsumerConfigError> => {
  if (value === undefined) return Effect.succeed(fallback)
  const d = Duration.fromInput(value)
  if (Option.isNone(d) || !Duration.isFinite(d.value) || Duration.toMillis(d.value) <= 0) {
    return Effect.fail(
      configError(field, `${field} must be a positive finite duration such as "5 seconds", got ${String(value)}`)
    )
  }
  return Effect.succeed(Math.max(1, Math.round(Duration.toMillis(d.value))))
}

/** A non-empty string option. */
export const nonEmpty = (field: string, value: string | undefined): Effect.Effect<string, ConsumerConfigError> =>
  typeof value === "string" && value !== ""
    ? Effect.succeed(value)
    : Effect.fail(configError(field, `${field} must be a non-empty string`))

/** `$`, `0` or an entry id (`ms` or `ms-seq`). */
export const START_ID = /^(\$|0|\d+(-\d+)?)$/

/** Checks and resolves the consumer's options. */
export const decode = (options: Options): Effect.Effect<ConsumerSettings, ConsumerConfigError> =>
  Effect.gen(function* () {
    const stream = yield* nonEmpty("stream", options.stream)
    const group = yield* nonEmpty("group", options.group)
    const consumer = yield* nonEmpty("consumer", options.consumer)
    const startId = options.startId ?? "0"
    if (!START_ID.test(startId)) return yield* configError("startId", `startId must be "$", "0" or an entry id`)
    const format = options.envelope ?? "native"
    if (!Envelope.formats.includes(format)) {
      return yield* configError("envelope", `envelope must be one of ${Envelope.formats.join(", ")}`)
    }
    const minIdleMs = yield* durationMs("minIdle", options.minIdle, 30_000)
    const deadLetterStream = yield* nonEmpty("deadLetterStream", options.deadLetterStream ?? `${stream}.dead-letter`)
    if (deadLetterStream === stream) {
      // An entry dead-lettered into the stream it came from is read again, fails again and is copied again: one bad
      // entry would become an endless flood of copies.
      return yield* configError(
        "deadLetterStream",
        `deadLetterStream must not be the stream it consumes (${JSON.stringify(stream)}): a dead-lettered entry ` +
          `would be read and dead-lettered again for ever; leave it unset for ${JSON.stringify(`${stream}.dead-letter`)} ` +
          `or name another stream`
      )
    }
    return {
      stream,
      group,
      consumer,
      startId,
      envelope: Envelope.make(format),
      count: yield* positiveInt("count", options.count, 100),
      blockMs: yield* durationMs("block", options.block, 2_000),
      minIdleMs,
      claimIntervalMs: yield* durationMs(
        "claimInterval",
        options.claimInterval,
        Math.max(1, Math.round(minIdleMs / 2))
      ),
      claim: options.claim ?? true,
      maxDeliveries: yield* positiveInt("maxDeliveries", options.maxDeliveries, 5),
      deadLetterStream,
      recoverPending: options.recoverPending ?? true,
      policies: options.policies ?? {},
      errorsKey: `redflow:consumer-errors:${stream}:${group}`
    }
  })

/** The log annotations of one consumer. */
export const annotations = (settings: ConsumerSettings) => ({
  stream: settings.stream,
  group: settings.group,
  consumer: settings.consumer
})
