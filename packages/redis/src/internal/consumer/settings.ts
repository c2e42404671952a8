/**
 * The consumer's options, checked and resolved once before anything is read: {@link decode} decodes the public
 * `Options` with one `Schema` ({@link OptionsSchema}) into {@link ConsumerSettings} (durations in milliseconds,
 * defaults applied), or fails with the `ConfigError` (component `RedisStreamConsumer`) whose path names the option.
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as ConfigError from "@redflow/core/ConfigError"
import * as Envelope from "@redflow/core/Envelope"
import type * as Duration from "effect/Duration"
import type * as FailurePolicy from "../../FailurePolicy.ts"
import type { RedisError } from "../../RedisError.ts"
import type { Options, RunOptions } from "../../RedisStreamConsumer.ts"
import { NonEmptyString, PositiveInt, PositiveMillis } from "../options.ts"

/** The component named by the consumer's configuration errors. */
export const COMPONENT = "RedisStreamConsumer"

/**
 * @since 0.1.0
 * @category errors
 */
export type ConsumerError = RedisError | ConfigError.ConfigError

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

/** `$`, `0` or an entry id (`ms` or `ms-seq`). */
export const START_ID = /^(\$|0|\d+(-\d+)?)$/

const StartId = Schema.String.check(
  Schema.makeFilter(
    (s: string) => START_ID.test(s) || `must be "$", "0" or an entry id (ms or ms-seq), got ${JSON.stringify(s)}`
  )
)

const EnvelopeFormat = Schema.Literals(Envelope.formats).annotate({
  message: `must be one of ${Envelope.formats.join(", ")}`
})

/**
 * The consumer's options as a Schema: what each option accepts. `policies` is not decoded here: its type is its
 * check, and its schedules are values no Schema describes.
 */
export const OptionsSchema = Schema.Struct({
  stream: NonEmptyString,
  group: NonEmptyString,
  consumer: NonEmptyString,
  startId: Schema.optionalKey(StartId),
  envelope: Schema.optionalKey(EnvelopeFormat),
  count: Schema.optionalKey(PositiveInt),
  block: Schema.optionalKey(PositiveMillis),
  minIdle: Schema.optionalKey(PositiveMillis),
  claimInterval: Schema.optionalKey(PositiveMillis),
  claim: Schema.optionalKey(Schema.Boolean),
  maxDeliveries: Schema.optionalKey(PositiveInt),
  deadLetterStream: Schema.optionalKey(NonEmptyString),
  recoverPending: Schema.optionalKey(Schema.Boolean)
})

/** The options of `run` beyond the consumer's, as a Schema. */
export const RunOptionsSchema = Schema.Struct({
  concurrency: Schema.optionalKey(PositiveInt),
  shutdownTimeout: Schema.optionalKey(PositiveMillis),
  limit: Schema.optionalKey(PositiveInt)
})

const decodeOptions = ConfigError.decoder(COMPONENT, OptionsSchema)
const decodeRunOptions = ConfigError.decoder(COMPONENT, RunOptionsSchema)

/** Checks and resolves the consumer's options. */
export const decode = (options: Options): Effect.Effect<ConsumerSettings, ConfigError.ConfigError> =>
  Effect.flatMap(decodeOptions(options), (decoded) => {
    const stream = decoded.stream
    const deadLetterStream = decoded.deadLetterStream ?? `${stream}.dead-letter`
    if (deadLetterStream === stream) {
      // An entry dead-lettered into the stream it came from is read again, fails again and is copied again: one bad
      // entry would become an endless flood of copies.
      return Effect.fail(
        ConfigError.make(
          COMPONENT,
          ["deadLetterStream"],
          `must not be the stream it consumes (${JSON.stringify(stream)}): a dead-lettered entry ` +
            `would be read and dead-lettered again for ever`,
          `leave it unset for ${JSON.stringify(`${stream}.dead-letter`)} or name another stream`
        )
      )
    }
    const minIdleMs = decoded.minIdle ?? 30_000
    return Effect.succeed({
      stream,
      group: decoded.group,
      consumer: decoded.consumer,
      startId: decoded.startId ?? "0",
      envelope: Envelope.make(decoded.envelope ?? "native"),
      count: decoded.count ?? 100,
      blockMs: decoded.block ?? 2_000,
      minIdleMs,
      claimIntervalMs: decoded.claimInterval ?? Math.max(1, Math.round(minIdleMs / 2)),
      claim: decoded.claim ?? true,
      maxDeliveries: decoded.maxDeliveries ?? 5,
      deadLetterStream,
      recoverPending: decoded.recoverPending ?? true,
      policies: options.policies ?? {},
      errorsKey: `redflow:consumer-errors:${stream}:${decoded.group}`
    })
  })

/** The options of `run` beyond the consumer's, checked, with their defaults. */
export interface RunSettings {
  readonly concurrency: number
  readonly shutdownMs: number
  readonly limit: number | undefined
}

/** Checks the options of `run` beyond the consumer's (before anything is opened). */
export const decodeRun = <E, R>(options: RunOptions<E, R>): Effect.Effect<RunSettings, ConfigError.ConfigError> =>
  Effect.map(decodeRunOptions(options), (decoded) => ({
    concurrency: decoded.concurrency ?? 1,
    shutdownMs: decoded.shutdownTimeout ?? 10_000,
    limit: decoded.limit
  }))

/** The log annotations of one consumer. */
export const annotations = (settings: ConsumerSettings) => ({
  stream: settings.stream,
  group: settings.group,
  consumer: settings.consumer
})

// TODO(issue 14): the helpers below keep `internal/consumer/workers.ts` and `RedisStreamSubscription.ts` compiling
// until they decode with `decodeRun` and a Schema of their own; delete them (and ConsumerConfigError) then.

const checked = <S extends Schema.ConstraintDecoder<unknown>>(schema: S) => {
  const decodeField = Schema.decodeUnknownResult(schema)
  return (field: string, value: unknown): Effect.Effect<S["Type"], ConfigError.ConfigError> => {
    const result = decodeField(value)
    return Result.isSuccess(result)
      ? Effect.succeed(result.success)
      : Effect.fail(ConfigError.fromIssue(COMPONENT, result.failure.issue, field.split(".")))
  }
}
const positiveIntField = checked(PositiveInt)
const millisField = checked(PositiveMillis)
const nonEmptyField = checked(NonEmptyString)

/** @deprecated decode with a Schema of {@link PositiveInt} instead. */
export const positiveInt = (
  field: string,
  value: number | undefined,
  fallback: number
): Effect.Effect<number, ConfigError.ConfigError> =>
  value === undefined ? Effect.succeed(fallback) : positiveIntField(field, value)

/** @deprecated decode with a Schema of {@link PositiveMillis} instead. */
export const durationMs = (
  field: string,
  value: Duration.Input | undefined,
  fallback: number
): Effect.Effect<number, ConfigError.ConfigError> =>
  value === undefined ? Effect.succeed(fallback) : millisField(field, value)

/** @deprecated decode with a Schema of {@link NonEmptyString} instead. */
export const nonEmpty = (field: string, value: string | undefined): Effect.Effect<string, ConfigError.ConfigError> =>
  nonEmptyField(field, value)

/** @deprecated the consumer's configuration errors are `ConfigError`s (component `RedisStreamConsumer`). */
export type ConsumerConfigError = ConfigError.ConfigError

/**
 * @deprecated builds the `ConfigError` (component `RedisStreamSubscription`) that `RedisStreamSubscription.ts` still
 * makes under the old name; `reason` drops the option's name that the old messages began with.
 */
export const ConsumerConfigError: new (fields: {
  readonly field: string
  readonly message: string
}) => ConfigError.ConfigError = class {
  constructor(fields: { readonly field: string; readonly message: string }) {
    const reason = fields.message.startsWith(`${fields.field} `)
      ? fields.message.slice(fields.field.length + 1)
      : fields.message
    // A constructor may return another object: `new` then gives the ConfigError itself.
    return ConfigError.make("RedisStreamSubscription", fields.field.split("."), reason)
  }
} as never
