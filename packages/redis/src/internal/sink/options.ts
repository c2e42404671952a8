/**
 * The sink's options, checked once before anything is written: {@link decode} decodes the public `Options` with one
 * `Schema` ({@link OptionsSchema}) and resolves them into the {@link SinkSettings} the write path runs on: defaults
 * applied, durations in milliseconds, templates compiled, and the rules that span options checked. Every rejection is
 * a `ConfigError` (component `RedisStreamSink`) whose `path` is the option's (`["batch", "maxEvents"]`,
 * `["stream", "tables", "orders"]`).
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as ConfigError from "@redflow/core/ConfigError"
import * as Envelope from "@redflow/core/Envelope"
import * as Routing from "@redflow/core/Routing"
import type * as FailurePolicy from "../../FailurePolicy.ts"
import type { Options } from "../../RedisStreamSink.ts"
import type * as MemoryGuard from "../../MemoryGuard.ts"
import type * as StreamRetention from "../../StreamRetention.ts"
import { highWaterKey } from "../highWater.ts"
import { Millis, NonEmptyString, PositiveInt, PositiveMillis } from "../options.ts"

/** The component named in the sink's configuration errors. */
export const COMPONENT = "RedisStreamSink"

/** Every default in one place. */
export const defaults = {
  guarantee: "at-least-once",
  envelope: "native",
  pipeline: "redflow",
  sinkName: "redis",
  deadLetterStream: "redflow.dead-letter",
  onDataLoss: "fail",
  maxEvents: 4000,
  maxBytes: 4 * 1024 * 1024,
  /** Times `maxBytes`. */
  bufferedBatches: 8,
  lingerMs: 0,
  checkpointIntervalMs: 50,
  maxEventBytes: 1024 * 1024,
  largeEvents: "dead-letter",
  largeEventTtlMs: 7 * 24 * 3600 * 1000
} as const

// ---------------------------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------------------------

/** A stream entry id, `ms` or `ms-seq`. */
const StreamId = Schema.String.check(
  Schema.makeFilter(
    (s: string) => /^\d+(-\d+)?$/.test(s) || `must be a stream id such as "1700000000000-0", got ${JSON.stringify(s)}`
  )
)

/**
 * The sink's options as a Schema: what each option accepts (the public `Options` documents them). `policies` is not
 * decoded here: its type is its check, and its schedules are values no Schema describes. Rules that span options, or
 * need a default of another, are checked by {@link decode}.
 */
export const OptionsSchema = Schema.Struct({
  stream: Routing.Config,
  key: Schema.optionalKey(Schema.String),
  envelope: Schema.optionalKey(Envelope.Format),
  guarantee: Schema.optionalKey(Schema.Literals(["at-least-once", "exactly-once"])),
  pipeline: Schema.optionalKey(NonEmptyString),
  sinkName: Schema.optionalKey(Schema.String),
  batch: Schema.optionalKey(
    Schema.Struct({
      maxEvents: Schema.optionalKey(PositiveInt),
      maxBytes: Schema.optionalKey(PositiveInt),
      maxBufferedBytes: Schema.optionalKey(PositiveInt),
      linger: Schema.optionalKey(Millis),
      checkpointInterval: Schema.optionalKey(Millis)
    })
  ),
  trim: Schema.optionalKey(
    Schema.Struct({
      maxLen: Schema.optionalKey(PositiveInt),
      minId: Schema.optionalKey(Schema.Union([StreamId, Schema.Struct({ maxAge: PositiveMillis })])),
      exact: Schema.optionalKey(Schema.Boolean),
      acked: Schema.optionalKey(Schema.Boolean),
      onLag: Schema.optionalKey(Schema.Literals(["hold", "trim"]))
    })
  ),
  maxLag: Schema.optionalKey(Schema.Struct({ group: NonEmptyString, entries: PositiveInt })),
  publish: Schema.optionalKey(Schema.Struct({ channel: Routing.Config })),
  deadLetterStream: Schema.optionalKey(NonEmptyString),
  maxEventBytes: Schema.optionalKey(PositiveInt),
  largeEvents: Schema.optionalKey(Schema.Literals(["dead-letter", "reference"])),
  largeEventTtl: Schema.optionalKey(PositiveMillis),
  waitForReplicas: Schema.optionalKey(Schema.Struct({ replicas: PositiveInt, timeout: PositiveMillis })),
  onDataLoss: Schema.optionalKey(Schema.Literals(["fail", "continue"])),
  // Checked in full by MemoryGuard.make (its own Schema, same ConfigError shape) when the sink starts.
  durability: Schema.optionalKey(Schema.Literals(["warn", "require", "ignore"])),
  memoryGuard: Schema.optionalKey(Schema.Union([Schema.Literal(false), Schema.Record(Schema.String, Schema.Unknown)])),
  lease: Schema.optionalKey(Schema.Struct({ ttl: PositiveMillis, renewEvery: Schema.optionalKey(PositiveMillis) }))
})

// ---------------------------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------------------------

/** The sink's options once checked and resolved, with their defaults. */
export interface SinkSettings {
  readonly pipeline: string
  readonly sinkName: string
  readonly guarantee: "at-least-once" | "exactly-once"
  readonly envelope: Envelope.Envelope
  readonly route: Routing.Router
  readonly key: Routing.Template | undefined
  readonly maxEvents: number
  readonly maxBytes: number
  readonly maxBufferedBytes: number
  readonly lingerMs: number
  readonly checkpointIntervalMs: number
  readonly trim: {
    readonly strategy: "" | "MAXLEN" | "MINID"
    readonly operator: "~" | "="
    readonly threshold: (now: number) => string
  }
  readonly deadLetterStream: string
  /** The largest event written inline; a larger one by `largeEvents`. */
  readonly maxEventBytes: number
  readonly largeEvents: "dead-letter" | "reference"
  readonly largeEventTtlMs: number
  readonly policies: Partial<FailurePolicy.FailurePolicies>
  readonly waitForReplicas: { readonly replicas: number; readonly timeoutMs: number } | undefined
  readonly onDataLoss: "fail" | "continue"
  readonly durability: "warn" | "require" | "ignore"
  /** `trim.acked`: trimming below what every consumer group has processed, run after each write; or `undefined`. */
  readonly retention: StreamRetention.AckedTrim | undefined
  /** `maxLag`: hold writes while this group is this far behind; or `undefined`. */
  readonly maxLag: StreamRetention.MaxLag | undefined
  /** `publish`: the channel router of the notices sent after each write; or `undefined`. */
  readonly publish: Routing.Router | undefined
  /** The pipeline lease, in milliseconds, or `undefined` when it is off. */
  readonly lease: { readonly ttlMs: number; readonly renewEveryMs: number } | undefined
  /** The memory guard's options, or `undefined` when it is off. */
  readonly memoryGuard: Omit<MemoryGuard.Options, "pipeline"> | undefined
  /** Stream names known before any event: constant templates and the dead-letter stream, checked at start. */
  readonly fixedStreams: ReadonlyArray<string>
}

type Path = ReadonlyArray<string | number>

const fail = (path: Path, reason: string, fix?: string) => Effect.fail(ConfigError.make(COMPONENT, path, reason, fix))

const at = (input: unknown, path: Path): { readonly found: boolean; readonly value?: unknown } => {
  let value = input
  for (const part of path) {
    if (typeof value !== "object" || value === null || !(part in value)) return { found: false }
    value = (value as Record<string | number, unknown>)[part]
  }
  return { found: true, value }
}

/** Schema's type mismatches say what was expected; the value found is added, so a reason says both. */
const withFound = (error: ConfigError.ConfigError, input: unknown): ConfigError.ConfigError => {
  if (error.reason.includes(", got ")) return error
  const found = at(input, error.path)
  if (!found.found) return error
  return ConfigError.make(
    COMPONENT,
    error.path,
    `${error.reason}, got ${JSON.stringify(found.value) ?? String(found.value)}`,
    error.fix
  )
}

/** A `RoutingConfigError`'s place in the routing options (`route` as `Routing` names it), under `root`. */
const routePath = (root: Path, route: string | undefined): Path => {
  if (route === undefined) return root
  const table = /^tables\[(.*)\]$/.exec(route)
  if (table !== null) return [...root, "tables", JSON.parse(table[1]!) as string]
  return [...root, route]
}

/** A routing template's rejection, as a `ConfigError` at the template's path. */
const compileRouting = <A>(
  root: Path,
  compiled: Effect.Effect<A, Routing.RoutingConfigError>
): Effect.Effect<A, ConfigError.ConfigError> =>
  Effect.mapError(compiled, (e) => ConfigError.make(COMPONENT, routePath(root, e.route), e.message))

/** The stream names a router gives whatever the event: its constant templates. */
const constantStreams = (route: Routing.Router): Array<string> =>
  [route.default, ...route.tables.values()].filter((t) => t.isConstant).map((t) => t.template)

const decodeOptions = ConfigError.decoder(COMPONENT, OptionsSchema)

/** Checks and resolves the sink's options: the one check of them, before anything is written. */
export const decode = (options: Options): Effect.Effect<SinkSettings, ConfigError.ConfigError> =>
  decodeOptions(options).pipe(
    Effect.mapError((error) => withFound(error, options)),
    Effect.flatMap((decoded) => resolve(decoded, options.policies ?? {}))
  )

/** Defaults, compiled templates, and the rules that span options (or need a default of another option). */
const resolve = (
  options: typeof OptionsSchema.Type,
  policies: Partial<FailurePolicy.FailurePolicies>
): Effect.Effect<SinkSettings, ConfigError.ConfigError> =>
  Effect.gen(function* () {
    const route = yield* compileRouting(["stream"], Routing.make(options.stream))
    // A constant name that no high-water key can share a slot with would dead-letter every event at run time.
    const templates: Array<readonly [Path, Routing.Template]> = [
      [typeof options.stream === "string" ? ["stream"] : ["stream", "default"], route.default],
      ...[...route.tables].map(([table, template]) => [["stream", "tables", table], template] as const)
    ]
    for (const [path, template] of templates) {
      if (template.isConstant && highWaterKey(template.template) === undefined) {
        return yield* fail(
          path,
          `stream name "${template.template}" has "}" without a hash tag before it, so no high-water key can live ` +
            `in its hash slot`,
          `use a name without "}", or give it a hash tag such as "{orders}.events"`
        )
      }
    }
    const key = options.key === undefined ? undefined : yield* compileRouting(["key"], Routing.compile(options.key))

    const batch = options.batch ?? {}
    const maxBytes = batch.maxBytes ?? defaults.maxBytes
    const maxBufferedBytes = batch.maxBufferedBytes ?? defaults.bufferedBatches * maxBytes
    if (maxBufferedBytes < maxBytes) {
      return yield* fail(
        ["batch", "maxBufferedBytes"],
        `must be at least batch.maxBytes (${maxBytes}), got ${maxBufferedBytes}: no full batch could be held`,
        "raise it or lower batch.maxBytes"
      )
    }

    const maxEventBytes = options.maxEventBytes ?? Math.min(defaults.maxEventBytes, maxBytes)
    if (maxEventBytes > maxBytes) {
      return yield* fail(
        ["maxEventBytes"],
        `must be at most batch.maxBytes (${maxBytes}), got ${maxEventBytes}: no batch could carry such an event`,
        "raise batch.maxBytes or lower maxEventBytes"
      )
    }

    const t = options.trim ?? {}
    if (t.maxLen !== undefined && t.minId !== undefined) {
      return yield* fail(["trim"], "takes maxLen or minId, not both", "remove one of trim.maxLen and trim.minId")
    }
    if (t.acked === false) {
      return yield* fail(
        ["trim", "acked"],
        "must be true when given, got false",
        "remove trim.acked, or set it to true"
      )
    }
    const acked = t.acked === true
    if (acked && t.minId !== undefined) {
      return yield* fail(
        ["trim", "minId"],
        "cannot be combined with trim.acked: acked trimming chooses the id below which entries go (what every " +
          "consumer group has processed)",
        "remove trim.minId, or trim.acked"
      )
    }
    if (!acked && t.onLag !== undefined) {
      return yield* fail(
        ["trim", "onLag"],
        "only applies with trim.acked (what a lagging consumer group gets when the stream is past maxLen)",
        "add trim.acked: true, or remove trim.onLag"
      )
    }
    if (acked && t.onLag !== undefined && t.maxLen === undefined) {
      return yield* fail(
        ["trim", "onLag"],
        "needs trim.maxLen: without it nothing a group has not processed is ever trimmed, and nothing holds",
        "add trim.maxLen, or remove trim.onLag"
      )
    }
    const operator = t.exact === true ? "=" : "~"
    let trim: SinkSettings["trim"] = { strategy: "", operator, threshold: () => "" }
    // With acked, the write script does not trim: StreamRetention does it after the write, knowing the groups.
    const retention: StreamRetention.AckedTrim | undefined = acked
      ? {
          acked: true,
          ...(t.maxLen === undefined ? {} : { maxLen: t.maxLen }),
          ...(t.onLag === undefined ? {} : { onLag: t.onLag }),
          ...(t.exact === undefined ? {} : { exact: t.exact })
        }
      : undefined
    if (acked) {
      // no XADD trimming
    } else if (t.maxLen !== undefined) {
      const maxLen = String(t.maxLen)
      trim = { strategy: "MAXLEN", operator, threshold: () => maxLen }
    } else if (typeof t.minId === "string") {
      const minId = t.minId
      trim = { strategy: "MINID", operator, threshold: () => minId }
    } else if (t.minId !== undefined) {
      const maxAge = t.minId.maxAge
      trim = { strategy: "MINID", operator, threshold: (now) => String(Math.max(0, Math.floor(now - maxAge))) }
    }

    const deadLetterStream = options.deadLetterStream ?? defaults.deadLetterStream
    if (highWaterKey(deadLetterStream) === undefined) {
      return yield* fail(
        ["deadLetterStream"],
        `"${deadLetterStream}" has "}" without a hash tag: no high-water key can share its slot`,
        `use a name without "}", or give it a hash tag such as "{redflow}.dead-letter"`
      )
    }
    const publish =
      options.publish === undefined
        ? undefined
        : yield* compileRouting(["publish", "channel"], Routing.make(options.publish.channel))
    let lease: SinkSettings["lease"] = undefined
    if (options.lease !== undefined) {
      const ttlMs = options.lease.ttl
      const renewEveryMs = options.lease.renewEvery ?? Math.max(1, Math.floor(ttlMs / 3))
      if (!(renewEveryMs < ttlMs)) {
        return yield* fail(
          ["lease", "renewEvery"],
          `must be shorter than lease.ttl (${ttlMs} ms), got ${renewEveryMs} ms: the lease would expire between renewals`,
          "renew a few times per ttl, e.g. ttl 10 seconds and renewEvery 3 seconds (the default is ttl / 3)"
        )
      }
      lease = { ttlMs, renewEveryMs }
    }
    const wait = options.waitForReplicas
    return {
      pipeline: options.pipeline ?? defaults.pipeline,
      sinkName: options.sinkName ?? defaults.sinkName,
      guarantee: options.guarantee ?? defaults.guarantee,
      envelope: Envelope.make(options.envelope ?? defaults.envelope),
      route,
      key,
      maxEvents: batch.maxEvents ?? defaults.maxEvents,
      maxBytes,
      maxBufferedBytes,
      lingerMs: batch.linger ?? defaults.lingerMs,
      checkpointIntervalMs: batch.checkpointInterval ?? defaults.checkpointIntervalMs,
      trim,
      deadLetterStream,
      maxEventBytes,
      largeEvents: options.largeEvents ?? defaults.largeEvents,
      largeEventTtlMs: options.largeEventTtl ?? defaults.largeEventTtlMs,
      policies,
      waitForReplicas: wait === undefined ? undefined : { replicas: wait.replicas, timeoutMs: wait.timeout },
      onDataLoss: options.onDataLoss ?? defaults.onDataLoss,
      durability: options.durability ?? "warn",
      retention,
      maxLag: options.maxLag,
      publish,
      lease,
      memoryGuard: options.memoryGuard === undefined || options.memoryGuard === false ? undefined : options.memoryGuard,
      fixedStreams: [...new Set([...constantStreams(route), deadLetterStream])]
    }
  })
