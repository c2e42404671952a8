/**
 * The kinds of option Redflow's Redis components take, as `Schema`s: every options object (the connection, the
 * consumer, Idempotency, the checkpoint store, the sink) is a `Schema.Struct` of these, decoded with
 * `ConfigError.decoder`, so one kind of option has one rule and one wording everywhere.
 *
 * - a count ({@link PositiveInt}): a whole number of at least 1;
 * - a duration that must elapse ({@link PositiveMillis}: timeouts, `block`, `minIdle`, intervals, leases, ttls): a
 *   finite duration above 0, in whole milliseconds (at least 1). Zero cannot work for these: `BLOCK 0` blocks for
 *   ever, a `minIdle` of 0 claims every entry at once, a timeout of 0 fails every call;
 * - a wait that may be skipped ({@link Millis}: a linger, a least time between checkpoints): a finite duration of 0
 *   or more, in milliseconds, 0 meaning "do not wait";
 * - a name ({@link NonEmptyString}).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import * as SchemaTransformation from "effect/SchemaTransformation"

const show = (u: unknown): string => {
  if (typeof u === "string") return JSON.stringify(u)
  if (typeof u === "number") return String(u)
  if (typeof u === "bigint") return `${u}n`
  if (Duration.isDuration(u)) return String(u)
  try {
    return JSON.stringify(u) ?? String(u)
  } catch {
    return String(u)
  }
}

/** A whole number of at least 1 (a count, a size, a limit). */
export const PositiveInt = Schema.Number.check(
  Schema.makeFilter((n: number) => (Number.isSafeInteger(n) && n > 0) || `must be a positive integer, got ${show(n)}`)
)

/** A string that is not empty (a stream, a group, a key prefix). */
export const NonEmptyString = Schema.String.check(
  Schema.makeFilter((s: string) => s !== "" || "must be a non-empty string")
)

/** The milliseconds of a `Duration.Input`, or `undefined` when it is not a duration at all. */
const millisOf = (input: unknown): number | undefined => {
  let d: Option.Option<Duration.Duration>
  try {
    d = Duration.fromInput(input as Duration.Input)
  } catch {
    return undefined
  }
  return Option.isSome(d) ? Duration.toMillis(d.value) : undefined
}

const durationMillis = (accepts: (ms: number) => boolean, expected: string, round: (ms: number) => number) =>
  Schema.Unknown.pipe(
    Schema.decodeTo(
      Schema.Number,
      SchemaTransformation.transformEffect<number, unknown>({
        decode: (input) => {
          const ms = millisOf(input)
          return ms !== undefined && Number.isFinite(ms) && accepts(ms)
            ? Effect.succeed(round(ms))
            : Effect.fail(new SchemaIssue.InvalidValue({ message: `must be ${expected}, got ${show(input)}` }))
        },
        encode: (ms) => Effect.succeed(ms)
      })
    )
  )

/**
 * A duration that must elapse (a timeout, a blocking read, an idle time, an interval, a lease): a finite
 * `Duration.Input` above 0, decoded to whole milliseconds, at least 1.
 */
export const PositiveMillis = durationMillis(
  (ms) => ms > 0,
  `a positive finite duration such as "5 seconds"`,
  (ms) => Math.max(1, Math.round(ms))
)

/** A wait that may be skipped (a linger, a least time between two writes): a finite `Duration.Input` of 0 or more. */
export const Millis = durationMillis(
  (ms) => ms >= 0,
  `a finite duration of 0 or more such as "5 millis"`,
  (ms) => ms
)
