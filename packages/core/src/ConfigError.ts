/**
 * The one shape of a configuration error across Redflow: options that cannot work, found before anything is read or
 * written. Every component (the sink, the consumer, the connection, Idempotency, the PostgreSQL source) decodes its
 * options with a `Schema` and reports the first problem as a {@link ConfigError} carrying the option's path, so a
 * caller (the CLI, an application) can map the path to its own name for the option (a flag, a YAML key).
 *
 * @example
 * ```ts
 * import * as ConfigError from "@redflow/core/ConfigError"
 * import * as Schema from "effect/Schema"
 *
 * const Options = Schema.Struct({ batch: Schema.Struct({ maxEvents: Schema.Int.check(Schema.isGreaterThan(0)) }) })
 * const decode = ConfigError.decoder("MySink", Options)
 * // decode({ batch: { maxEvents: 0 } }) fails with
 * //   ConfigError { component: "MySink", path: ["batch", "maxEvents"], reason: "Expected a value greater than 0, got 0" }
 * ```
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"

/**
 * Options that cannot work. `path` locates the option inside the options object (`["batch", "maxEvents"]`; empty for
 * the object as a whole), `reason` says what is wrong, `fix` (when known) what to do.
 *
 * @since 0.1.0
 * @category errors
 */
export class ConfigError extends Schema.TaggedError<ConfigError>()("ConfigError", {
  /** What was being configured, e.g. `RedisStreamSink`, `RedisStreamConsumer`, `RedisConnection`. */
  component: Schema.String,
  path: Schema.Array(Schema.Union([Schema.String, Schema.Number])),
  reason: Schema.String,
  fix: Schema.optionalKey(Schema.String)
}) {
  /** The path as one name, e.g. `batch.maxEvents` or `stream.tables["orders"]`; `""` for the whole object. */
  get field(): string {
    return formatPath(this.path)
  }

  override get message(): string {
    const where = this.path.length === 0 ? "" : ` ${this.field}`
    const fix = this.fix === undefined ? "" : `. Fix: ${this.fix}`
    return `${this.component} option${where}: ${this.reason}${fix}`
  }
}

/**
 * Formats a path the way a user writes it in code: `batch.maxEvents`, `tables[2]`, `stream.tables["a.b"]`.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatPath = (path: ReadonlyArray<string | number>): string => {
  let out = ""
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`
    else if (/^[A-Za-z_$][\w$]*$/.test(part)) out += out === "" ? part : `.${part}`
    else out += `[${JSON.stringify(part)}]`
  }
  return out
}

/**
 * Builds a {@link ConfigError}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  component: string,
  path: ReadonlyArray<string | number> | string,
  reason: string,
  fix?: string
): ConfigError =>
  new ConfigError({
    component,
    path: typeof path === "string" ? (path === "" ? [] : path.split(".")) : [...path],
    reason,
    ...(fix === undefined ? {} : { fix })
  })

const standard = SchemaIssue.makeFormatterStandardSchemaV1()

const pathPart = (segment: PropertyKey | { readonly key: PropertyKey }): string | number => {
  const key = typeof segment === "object" ? segment.key : segment
  return typeof key === "number" ? key : typeof key === "symbol" ? key.toString() : key
}

/**
 * The first problem of a Schema issue as a {@link ConfigError}, with its path.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromIssue = (component: string, issue: SchemaIssue.Issue, prefix: ReadonlyArray<string | number> = []) => {
  const first = standard(issue).issues[0]
  const path = [...prefix, ...(first?.path ?? []).map(pathPart)]
  return make(component, path, first?.message ?? String(issue))
}

/**
 * A decoder of unknown input into a Schema's type that fails with a {@link ConfigError}: the one way Redflow's
 * components check their options.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decoder = <S extends Schema.ConstraintDecoder<unknown>>(component: string, schema: S) => {
  const decode = Schema.decodeUnknownResult(schema)
  return (input: unknown): Effect.Effect<S["Type"], ConfigError> => {
    const result = decode(input)
    return Result.isSuccess(result)
      ? Effect.succeed(result.success)
      : Effect.fail(fromIssue(component, result.failure.issue))
  }
}
