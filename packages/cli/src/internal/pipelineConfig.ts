/**
 * The configuration of `redflow run`: the pipeline file (`--config pipeline.yaml`), its `${NAME}` environment
 * references, and the merge with the flags (a flag wins over the file; defaults apply last).
 *
 * The file is YAML, checked by one Schema: an unknown key, a value of the wrong type or out of range is reported
 * with its path and what it expects (`source.tables[1]: expected "schema.table" …, got "a.b.c"`), every problem of
 * the file at once, and the command exits 2 before connecting to anything.
 *
 * Environment references are resolved in the parsed values (never in the YAML text, so a value cannot change the
 * file's structure): `${NAME}`, with NAME of upper-case letters, digits and `_`, is the variable's value, and a
 * variable that is not set is an error naming it and where it is used. `$${` is a literal `${`. The routing
 * templates `sink.stream` and `sink.key` keep their own placeholders (`${source.table}`, `${key.id}`: lower case),
 * which is why environment names are upper case. In a number setting, a value that came from the environment is
 * read as a number.
 */
import * as Fs from "node:fs/promises"
import * as Effect from "effect/Effect"
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import * as YAML from "yaml"
import * as Envelope from "@redflow/core/Envelope"
import type * as PostgresSource from "@redflow/postgres/PostgresSource"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import { ConfigError } from "@redflow/core/ConfigError"
import * as RedisUrl from "@redflow/redis/RedisUrl"
import { UsageError } from "./errors.ts"
import { DEFAULT_CHECKPOINT_HASH, leaseNeedsRedisCheckpoint, leaseTtl, parseMillis } from "./flags.ts"
import * as OperatorFlags from "./operatorFlags.ts"
import * as OptionFlags from "./optionFlags.ts"

// ---------------------------------------------------------------------------------------------------------------
// The file's schema
// ---------------------------------------------------------------------------------------------------------------

const TABLE = /^[^\s."]+(\.[^\s."]+)?$/
const SLOT = /^[a-z0-9_]{1,63}$/

const Text = (expected: string) => Schema.String.check(Schema.isMinLength(1, { expected }))
const Table = Schema.String.check(
  Schema.isPattern(TABLE, { expected: `"schema.table" (or "table", in schema public)` })
)
const Slot = Schema.String.check(
  Schema.isPattern(SLOT, { expected: "a slot name: 1 to 63 lower-case letters, digits and _" })
)
const AtLeastOne = (what: string) =>
  Schema.Int.check(Schema.isGreaterThanOrEqualTo(1, { expected: `${what} (an integer >= 1)` }))
const Port = Schema.Int.check(
  Schema.isBetween({ minimum: 0, maximum: 65535 }, { expected: "a port 0-65535 (0 = a free port)" })
)
const Guarantee = Schema.Literals(["at-least-once", "exactly-once"])
const SnapshotMode = Schema.Literals(["initial", "never"])

const opt = Schema.optionalKey

/** The keys of each section, kept apart so an unknown key's message can list what the section takes. */
const sections = {
  "": {
    pipeline: opt(Text("a pipeline name")),
    source: opt(Schema.Unknown),
    redis: opt(Schema.Unknown),
    sink: opt(Schema.Unknown),
    checkpoint: opt(Schema.Unknown),
    metrics: opt(Schema.Unknown)
  },
  source: {
    url: opt(Text("a URL such as postgres://user@host:5432/db")),
    password: opt(Schema.String),
    tables: opt(Schema.Array(Table).check(Schema.isMinLength(1, { expected: "at least one table" }))),
    slot: opt(Slot),
    publication: opt(Text("a publication name")),
    snapshot: opt(SnapshotMode)
  },
  redis: {
    url: opt(Text("a URL such as redis://localhost:6379"))
  },
  sink: {
    stream: opt(Text("a stream name or template, e.g. cdc.${source.table}")),
    key: opt(Text("a key template, e.g. ${key.id}")),
    guarantee: opt(Guarantee),
    envelope: opt(Envelope.Format),
    batch: opt(Schema.Unknown),
    trim: opt(Schema.Unknown),
    maxLag: opt(Schema.Unknown),
    publish: opt(Schema.Unknown),
    memoryGuard: opt(Schema.Unknown),
    durability: opt(Schema.Literals(["warn", "require", "ignore"])),
    maxEventBytes: opt(AtLeastOne("a size in bytes")),
    largeEvents: opt(Schema.Literals(["dead-letter", "reference"])),
    largeEventTtl: opt(Text("a time to live such as 12h, 7d or 30m"))
  },
  "sink.batch": {
    maxEvents: opt(AtLeastOne("events per batch"))
  },
  "sink.trim": {
    maxLen: opt(AtLeastOne("a stream length")),
    acked: opt(Schema.Literal(true)),
    onLag: opt(Schema.Literals(["hold", "trim"]))
  },
  "sink.maxLag": {
    group: Text("a consumer group name"),
    entries: AtLeastOne("a number of entries")
  },
  "sink.publish": {
    channel: Text("a channel name or template, e.g. cdc.${source.table}.changed")
  },
  "sink.memoryGuard": {
    highWater: opt(Schema.Number),
    lowWater: opt(Schema.Number)
  },
  checkpoint: {
    file: opt(Text("a file path")),
    redis: opt(Text("the name of a Redis hash, e.g. redflow:checkpoints"))
  },
  metrics: {
    port: opt(Port)
  }
} as const

const Batch = Schema.Struct(sections["sink.batch"])
const Trim = Schema.Struct(sections["sink.trim"])

/** The pipeline file, as written (every setting optional: flags may give it). */
export const FileConfig = Schema.Struct({
  ...sections[""],
  source: opt(Schema.Struct(sections.source)),
  redis: opt(Schema.Struct(sections.redis)),
  sink: opt(
    Schema.Struct({
      ...sections.sink,
      batch: opt(Batch),
      trim: opt(Trim),
      maxLag: opt(Schema.Struct(sections["sink.maxLag"])),
      publish: opt(Schema.Struct(sections["sink.publish"])),
      memoryGuard: opt(Schema.Struct(sections["sink.memoryGuard"]))
    })
  ),
  checkpoint: opt(Schema.Struct(sections.checkpoint)),
  metrics: opt(Schema.Struct(sections.metrics))
})
export type FileConfig = typeof FileConfig.Type

/** Settings that are routing templates: their lower-case `${…}` placeholders are the sink's, not the environment's. */
const TEMPLATES = new Set(["sink.stream", "sink.key", "sink.publish.channel"])
/** Number settings: a value that came from the environment is read as a number there. */
const NUMBERS = new Set([
  "metrics.port",
  "sink.batch.maxEvents",
  "sink.trim.maxLen",
  "sink.maxLag.entries",
  "sink.memoryGuard.highWater",
  "sink.memoryGuard.lowWater",
  "sink.maxEventBytes"
])

// ---------------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------------

export interface Issue {
  /** Where in the file, e.g. `source.tables[1]`; empty for the file as a whole. */
  readonly path: string
  readonly message: string
}

/** The pipeline file cannot be read or holds settings that cannot work (exit 2); every problem found is listed. */
export class PipelineConfigError extends Schema.TaggedError<PipelineConfigError>()("PipelineConfigError", {
  /** The file, as given to `--config`. */
  file: Schema.String,
  issues: Schema.Array(Schema.Struct({ path: Schema.String, message: Schema.String }))
}) {
  override get message(): string {
    return `${this.file}: ${this.issues.map((i) => (i.path === "" ? i.message : `${i.path}: ${i.message}`)).join("; ")}`
  }
}

const fileError = (file: string, path: string, message: string) =>
  new PipelineConfigError({ file, issues: [{ path, message }] })

// ---------------------------------------------------------------------------------------------------------------
// Reading the file
// ---------------------------------------------------------------------------------------------------------------

export type Env = Readonly<Record<string, string | undefined>>

const ENV_NAME = /^[A-Z_][A-Z0-9_]*$/

const pathText = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>(
    (text, key) => (typeof key === "number" ? `${text}[${key}]` : text === "" ? String(key) : `${text}.${String(key)}`),
    ""
  )

/** A path without its list indexes, to look a setting up in {@link TEMPLATES} and {@link NUMBERS}. */
const settingOf = (path: ReadonlyArray<PropertyKey>) => pathText(path.filter((k) => typeof k !== "number"))

/** Resolves the `${NAME}` references of one string value. */
const substituteString = (
  text: string,
  path: ReadonlyArray<PropertyKey>,
  env: Env
): Result.Result<{ readonly value: string; readonly referenced: boolean }, Issue> => {
  const template = TEMPLATES.has(settingOf(path))
  const at = pathText(path)
  let out = ""
  let referenced = false
  let i = 0
  while (i < text.length) {
    if (text.startsWith("$${", i)) {
      out += "${"
      i += 3
      continue
    }
    if (!text.startsWith("${", i)) {
      out += text[i]
      i += 1
      continue
    }
    const end = text.indexOf("}", i + 2)
    if (end < 0) {
      if (template) {
        out += text.slice(i)
        break
      }
      return Result.fail({ path: at, message: `unterminated "\${" (write $\${ for a literal \${)` })
    }
    const name = text.slice(i + 2, end)
    if (ENV_NAME.test(name)) {
      const value = env[name]
      if (value === undefined) {
        return Result.fail({
          path: at,
          message: `environment variable ${name} is not set (referenced as \${${name}}): set it, or write $\${ for a literal \${`
        })
      }
      out += value
      referenced = true
    } else if (template) {
      out += text.slice(i, end + 1)
    } else {
      return Result.fail({
        path: at,
        message: `"\${${name}}" is not an environment variable reference: names are upper-case letters, digits and _ (e.g. \${PGPASSWORD}); write $\${ for a literal \${`
      })
    }
    i = end + 1
  }
  return Result.succeed({ value: out, referenced })
}

/** Resolves the environment references of every string in the parsed file (keys are left as they are). */
export const substitute = (value: unknown, env: Env): Result.Result<unknown, ReadonlyArray<Issue>> => {
  const issues: Array<Issue> = []
  const walk = (v: unknown, path: ReadonlyArray<PropertyKey>): unknown => {
    if (typeof v === "string") {
      const r = substituteString(v, path, env)
      if (Result.isFailure(r)) {
        issues.push(r.failure)
        return v
      }
      const { referenced, value: s } = r.success
      return referenced && NUMBERS.has(settingOf(path)) && /^\s*-?\d+\s*$/.test(s) ? Number(s) : s
    }
    if (Array.isArray(v)) return v.map((item, i) => walk(item, [...path, i]))
    if (v !== null && typeof v === "object") {
      return Object.fromEntries(Object.entries(v).map(([k, item]) => [k, walk(item, [...path, k])]))
    }
    return v
  }
  const out = walk(value, [])
  return issues.length === 0 ? Result.succeed(out) : Result.fail(issues)
}

/** The closest known key, when a key looks like a typo of one. */
const closest = (key: string, known: ReadonlyArray<string>): string | undefined => {
  const distance = (a: string, b: string) => {
    const row = Array.from({ length: b.length + 1 }, (_, j) => j)
    for (let i = 1; i <= a.length; i++) {
      let previous = row[0]!
      row[0] = i
      for (let j = 1; j <= b.length; j++) {
        const current = row[j]!
        row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1))
        previous = current
      }
    }
    return row[b.length]!
  }
  const lower = key.toLowerCase()
  let best: { key: string; d: number } | undefined
  for (const k of known) {
    const d = distance(lower, k.toLowerCase())
    if (d <= Math.max(1, Math.floor(k.length / 3)) && (best === undefined || d < best.d)) best = { key: k, d }
  }
  return best?.key
}

const TYPE_NAMES: Record<string, string> = {
  Objects: "a mapping (key: value)",
  Arrays: "a list",
  String: "a string",
  Number: "a number",
  Boolean: "true or false"
}

const formatter = SchemaIssue.makeFormatterStandardSchemaV1({
  leafHook: (issue) => {
    if (issue._tag === "InvalidType" && TYPE_NAMES[issue.ast._tag] !== undefined) {
      const got = !SchemaIssue.hasInput(issue)
        ? ""
        : `, got ${issue.input === null ? "nothing (null)" : JSON.stringify(issue.input)}`
      return `expected ${TYPE_NAMES[issue.ast._tag]}${got}`
    }
    return SchemaIssue.defaultLeafHook(issue)
  }
})

const lowerFirst = (s: string) => (s.startsWith("Expected ") ? `e${s.slice(1)}` : s)

/** The issues of a failed decode, each with its path and what the setting expects. */
const issuesOf = (issue: SchemaIssue.Issue): Array<Issue> =>
  formatter(issue).issues.map(({ message, path }) => {
    const keys = (path ?? []).map((k) => (typeof k === "object" ? k.key : k))
    if (message.startsWith("Unexpected key")) {
      const key = String(keys[keys.length - 1])
      const section = pathText(keys.slice(0, -1))
      const known = Object.keys((sections as Record<string, object>)[section] ?? {})
      const guess = closest(key, known)
      const where = section === "" ? "the file's top level" : section
      return {
        path: pathText(keys),
        message:
          `unknown setting${guess === undefined ? "" : ` (did you mean "${guess}"?)`}; ` +
          `${where} takes ${known.join(", ")}`
      }
    }
    return { path: pathText(keys), message: lowerFirst(message) }
  })

const decodeFile = Schema.decodeUnknownResult(FileConfig)

/** Parses and checks the text of a pipeline file; `file` names it in messages. */
export const parse = (text: string, file: string, env: Env): Result.Result<FileConfig, PipelineConfigError> => {
  const lines = new YAML.LineCounter()
  const doc = YAML.parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true })
  if (doc.errors.length > 0) {
    return Result.fail(
      new PipelineConfigError({
        file,
        issues: doc.errors.map((e) => {
          const { col, line } = lines.linePos(e.pos[0])
          return { path: "", message: `not valid YAML at line ${line}, column ${col}: ${e.message.split("\n")[0]}` }
        })
      })
    )
  }
  const raw = doc.toJS({ maxAliasCount: 100 }) ?? {}
  const substituted = substitute(raw, env)
  if (Result.isFailure(substituted))
    return Result.fail(new PipelineConfigError({ file, issues: [...substituted.failure] }))
  const decoded = decodeFile(substituted.success, { onExcessProperty: "error", errors: "all", reportInput: true })
  if (Result.isFailure(decoded)) {
    return Result.fail(new PipelineConfigError({ file, issues: issuesOf(decoded.failure.issue) }))
  }
  const config = decoded.success
  if (config.checkpoint?.file !== undefined && config.checkpoint.redis !== undefined) {
    return Result.fail(fileError(file, "checkpoint", "takes file or redis, not both"))
  }
  return Result.succeed(config)
}

/** Reads, parses and checks a pipeline file. */
export const load = (file: string, env: Env): Effect.Effect<FileConfig, PipelineConfigError> =>
  Effect.tryPromise({
    try: () => Fs.readFile(file, "utf8"),
    catch: (cause) => {
      const code = (cause as NodeJS.ErrnoException | null)?.code
      const reason =
        code === "ENOENT"
          ? "no such file (check the --config path)"
          : code === "EACCES"
            ? "permission denied (EACCES)"
            : code === "EISDIR"
              ? "a directory, not a file"
              : cause instanceof Error
                ? cause.message
                : String(cause)
      return fileError(file, "", `cannot read the pipeline file: ${reason}`)
    }
  }).pipe(Effect.flatMap((text) => Effect.fromResult(parse(text, file, env))))

// ---------------------------------------------------------------------------------------------------------------
// Flags over the file
// ---------------------------------------------------------------------------------------------------------------

/** The flags of `redflow run` (all optional: the file may give each setting). */
export interface RunFlags extends OperatorFlags.OperatorFlags {
  readonly config: Option.Option<string>
  readonly source: Option.Option<string>
  readonly tables: Option.Option<ReadonlyArray<string>>
  readonly redis: Option.Option<string>
  readonly stream: Option.Option<string>
  readonly key: Option.Option<string>
  readonly guarantee: Option.Option<"at-least-once" | "exactly-once">
  readonly envelope: Option.Option<Envelope.Format>
  readonly checkpoint: Option.Option<string>
  readonly pipeline: Option.Option<string>
  readonly slot: Option.Option<string>
  readonly publication: Option.Option<string>
  readonly snapshot: Option.Option<"initial" | "never">
  readonly batchSize: Option.Option<number>
  readonly maxlen: Option.Option<number>
  readonly metricsPort: Option.Option<number>
  /** `--lease TTL`: hold the pipeline's lease; a second `run` waits as a standby before it opens the slot. */
  readonly lease: Option.Option<string>
}

/** No flags given: the file decides. */
export const noFlags: RunFlags = {
  ...OperatorFlags.none,
  config: Option.none(),
  source: Option.none(),
  tables: Option.none(),
  redis: Option.none(),
  stream: Option.none(),
  key: Option.none(),
  guarantee: Option.none(),
  envelope: Option.none(),
  checkpoint: Option.none(),
  pipeline: Option.none(),
  slot: Option.none(),
  publication: Option.none(),
  snapshot: Option.none(),
  batchSize: Option.none(),
  maxlen: Option.none(),
  metricsPort: Option.none(),
  lease: Option.none()
}

/** Where the checkpoints are kept. */
export type Checkpoint =
  | { readonly _tag: "file"; readonly path: string }
  | { readonly _tag: "redis"; readonly key: string }
  | { readonly _tag: "memory" }

/** The hash `--checkpoint redis` keeps checkpoints in (the library's default). */
export const DEFAULT_PIPELINE = "redflow"

/** Everything `redflow run` needs, flags and file merged, defaults applied and checked. */
export interface RunConfig {
  readonly pipeline: string
  /** The source's options: the URL without its password, the password (if any) as `Redacted`. */
  readonly source: PostgresSource.Options & {
    readonly slot: string
    readonly publication: string
    readonly snapshot: "initial" | "never"
  }
  /** The source URL as it may be printed: a password shows as `***`. */
  readonly sourceUrl: string
  /** Where the password came from, when there is one (for the start-up line). */
  readonly passwordFrom: Option.Option<string>
  readonly redisUrl: string
  readonly sink: RedisStreamSink.Options & { readonly pipeline: string; readonly stream: string }
  readonly checkpoint: Checkpoint
  readonly metricsPort: Option.Option<number>
  /** How a setting is named in a message: the flag when it came from one, else its path in the file. */
  readonly origin: Readonly<Record<string, string>>
}

/** `postgres://user:secret@host/db` → `postgres://user:***@host/db`, also when the URL does not parse. */
export const redactUrl = (url: string): string => {
  try {
    const parsed = new URL(url)
    if (parsed.password === "") return url
    parsed.password = "***"
    return parsed.toString()
  } catch {
    return url.replace(/\/\/([^/@:]*):.*@/, "//$1:***@")
  }
}

/** The default slot and publication of a pipeline: its name as a PostgreSQL identifier. */
export const identifierOf = (pipeline: string): string =>
  pipeline
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, "_")
    .slice(0, 63)

type Failure = UsageError | PipelineConfigError

/**
 * Merges the flags over the file (`None` when there is no `--config`), applies the defaults and checks what can be
 * checked without connecting. A failure names the flag or the file's path of the setting at fault.
 */
export const resolve = (
  flags: RunFlags,
  file: Option.Option<FileConfig>,
  env: Env
): Result.Result<RunConfig, Failure> => {
  const fileName = Option.getOrElse(flags.config, () => "")
  const f = Option.getOrElse(file, (): FileConfig => ({}))
  const origin: Record<string, string> = {}

  /** Picks the flag, else the file's value; records which, for messages. */
  const pick = <A>(
    field: string,
    flag: string,
    flagValue: Option.Option<A>,
    path: string,
    fileValue: A | undefined
  ) => {
    if (Option.isSome(flagValue)) {
      origin[field] = `--${flag}`
      return flagValue.value
    }
    if (fileValue !== undefined) {
      origin[field] = `${path} in ${fileName}`
      return fileValue
    }
    origin[field] = `--${flag}`
    return undefined
  }
  /** An error about a setting, as a flag's or as the file's. */
  const fault = (field: string, flag: string, path: string, message: string): Failure =>
    origin[field]?.startsWith("--") === false ? fileError(fileName, path, message) : new UsageError({ flag, message })

  const pipeline = pick("pipeline", "pipeline", flags.pipeline, "pipeline", f.pipeline) ?? DEFAULT_PIPELINE
  if (pipeline === "") return Result.fail(fault("pipeline", "pipeline", "pipeline", "must not be empty"))

  // The source.
  const url = pick("source.url", "source", flags.source, "source.url", f.source?.url)
  if (url === undefined) {
    return Result.fail(
      new UsageError({
        flag: "source",
        message: `required: a PostgreSQL URL such as postgres://user@host:5432/db (or source.url in the --config file)`
      })
    )
  }
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return Result.fail(
      fault(
        "source.url",
        "source",
        "source.url",
        `expected a URL such as postgres://user@host:5432/db, got ${JSON.stringify(redactUrl(url))}`
      )
    )
  }
  if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:") {
    return Result.fail(
      fault(
        "source.url",
        "source",
        "source.url",
        `expected a postgres:// or postgresql:// URL, got ${JSON.stringify(redactUrl(url))}`
      )
    )
  }
  if (parsed.hostname === "") {
    return Result.fail(
      fault(
        "source.url",
        "source",
        "source.url",
        `has no host: ${JSON.stringify(redactUrl(url))} (e.g. postgres://user@host:5432/db)`
      )
    )
  }
  const urlPassword = parsed.password === "" ? undefined : decodeURIComponent(parsed.password)
  if (urlPassword !== undefined && f.source?.password !== undefined && Option.isNone(flags.source)) {
    return Result.fail(
      fileError(fileName, "source.password", "the password is given twice, here and in source.url: keep one")
    )
  }
  const password: { value: string; from: string } | undefined =
    urlPassword !== undefined
      ? { value: urlPassword, from: Option.isSome(flags.source) ? "--source" : `source.url in ${fileName}` }
      : f.source?.password !== undefined
        ? { value: f.source.password, from: `source.password in ${fileName}` }
        : env.PGPASSWORD !== undefined && env.PGPASSWORD !== ""
          ? { value: env.PGPASSWORD, from: "PGPASSWORD" }
          : undefined
  parsed.password = ""
  const bareUrl = parsed.toString()

  const tables = pick("source.tables", "tables", flags.tables, "source.tables", f.source?.tables)
  if (tables === undefined) {
    return Result.fail(
      new UsageError({
        flag: "tables",
        message:
          "required: the tables to capture, e.g. public.orders,public.customers (or source.tables in the --config file)"
      })
    )
  }
  const badTable = tables.findIndex((t) => !TABLE.test(t))
  if (badTable >= 0) {
    return Result.fail(
      fault(
        "source.tables",
        "tables",
        `source.tables[${badTable}]`,
        `expected "schema.table" (or "table", in schema public), got ${JSON.stringify(tables[badTable])}`
      )
    )
  }
  const slot = pick("source.slot", "slot", flags.slot, "source.slot", f.source?.slot) ?? identifierOf(pipeline)
  if (!SLOT.test(slot)) {
    return Result.fail(
      fault(
        "source.slot",
        "slot",
        "source.slot",
        `expected a slot name: 1 to 63 lower-case letters, digits and _, got ${JSON.stringify(slot)}`
      )
    )
  }
  const publication =
    pick("source.publication", "publication", flags.publication, "source.publication", f.source?.publication) ??
    identifierOf(pipeline)
  if (publication === "") {
    return Result.fail(fault("source.publication", "publication", "source.publication", "must not be empty"))
  }
  const snapshot =
    pick("source.snapshot", "snapshot", flags.snapshot, "source.snapshot", f.source?.snapshot) ?? "initial"

  // Redis: the flag, else the file, else REDIS_URL.
  const redisGiven = pick("redis.url", "redis", flags.redis, "redis.url", f.redis?.url)
  const fromEnv = redisGiven === undefined && env.REDIS_URL !== undefined && env.REDIS_URL !== ""
  const redisUrl = redisGiven ?? (fromEnv ? env.REDIS_URL : undefined)
  if (redisUrl === undefined) {
    return Result.fail(
      new UsageError({
        flag: "redis",
        message:
          "required: a Redis URL such as redis://localhost:6379 (or redis.url in the --config file, or REDIS_URL)"
      })
    )
  }
  const redisParsed = RedisUrl.parse(redisUrl)
  if (redisParsed instanceof ConfigError) {
    return Result.fail(
      fromEnv
        ? new UsageError({ flag: "redis", message: `${redisParsed.reason} (from REDIS_URL)` })
        : fault("redis.url", "redis", "redis.url", redisParsed.reason)
    )
  }

  // The sink.
  const stream = pick("sink.stream", "stream", flags.stream, "sink.stream", f.sink?.stream)
  if (stream === undefined) {
    return Result.fail(
      new UsageError({
        flag: "stream",
        message: "required: a stream name or template, e.g. 'cdc.${source.table}' (or sink.stream in the --config file)"
      })
    )
  }
  const key = pick("sink.key", "key", flags.key, "sink.key", f.sink?.key)
  const guarantee = pick("sink.guarantee", "guarantee", flags.guarantee, "sink.guarantee", f.sink?.guarantee)
  const envelope = pick("sink.envelope", "envelope", flags.envelope, "sink.envelope", f.sink?.envelope)
  const maxEvents = pick(
    "sink.batch.maxEvents",
    "batch-size",
    flags.batchSize,
    "sink.batch.maxEvents",
    f.sink?.batch?.maxEvents
  )
  const maxLen = pick("sink.trim.maxLen", "maxlen", flags.maxlen, "sink.trim.maxLen", f.sink?.trim?.maxLen)
  // The operator settings from the file; their flags are laid over them by `run` (see operatorFlags.ts).
  const fromFile = (field: string, value: unknown) => {
    if (value !== undefined) origin[field] = `${field} in ${fileName}`
  }
  const acked = f.sink?.trim?.acked
  const onLag = f.sink?.trim?.onLag
  fromFile("sink.trim.acked", acked)
  fromFile("sink.trim.onLag", onLag)
  fromFile("sink.maxLag", f.sink?.maxLag)
  fromFile("sink.publish.channel", f.sink?.publish)
  fromFile("sink.memoryGuard", f.sink?.memoryGuard)
  fromFile("sink.durability", f.sink?.durability)
  fromFile("sink.maxEventBytes", f.sink?.maxEventBytes)
  fromFile("sink.largeEvents", f.sink?.largeEvents)
  fromFile("sink.largeEventTtl", f.sink?.largeEventTtl)
  let largeEventTtl: number | undefined
  if (f.sink?.largeEventTtl !== undefined) {
    largeEventTtl = parseMillis(f.sink.largeEventTtl, 1)
    if (largeEventTtl === undefined) {
      return Result.fail(
        fileError(
          fileName,
          "sink.largeEventTtl",
          `expected a time to live such as 12h, 7d or 30m, got "${f.sink.largeEventTtl}"`
        )
      )
    }
  }
  const guard = f.sink?.memoryGuard
  if (guard !== undefined) {
    const wrong = OperatorFlags.guardProblem(guard.highWater, guard.lowWater)
    if (wrong !== undefined) return Result.fail(fileError(fileName, "sink.memoryGuard", wrong))
  }
  const trim = {
    ...(maxLen === undefined ? {} : { maxLen }),
    ...(acked === undefined ? {} : { acked }),
    ...(onLag === undefined ? {} : { onLag })
  }
  origin.pipeline ??= "--pipeline"

  // Checkpoints: the flag (a path, or `redis`), else the file, else in memory.
  let checkpoint: Checkpoint
  if (Option.isSome(flags.checkpoint)) {
    origin.checkpoint = "--checkpoint"
    const value = flags.checkpoint.value
    if (value === "")
      return Result.fail(new UsageError({ flag: "checkpoint", message: "expected a file path or redis" }))
    checkpoint = value === "redis" ? { _tag: "redis", key: DEFAULT_CHECKPOINT_HASH } : { _tag: "file", path: value }
  } else if (f.checkpoint?.file !== undefined) {
    origin.checkpoint = `checkpoint.file in ${fileName}`
    checkpoint = { _tag: "file", path: f.checkpoint.file }
  } else if (f.checkpoint?.redis !== undefined) {
    origin.checkpoint = `checkpoint.redis in ${fileName}`
    checkpoint = { _tag: "redis", key: f.checkpoint.redis }
  } else {
    checkpoint = { _tag: "memory" }
  }

  const metricsPort = pick("metrics.port", "metrics-port", flags.metricsPort, "metrics.port", f.metrics?.port)

  return Result.succeed({
    pipeline,
    source: {
      url: bareUrl,
      ...(password === undefined ? {} : { password: Redacted.make(password.value) }),
      tables,
      slot,
      publication,
      snapshot
    },
    sourceUrl: redactUrl(urlPassword === undefined ? bareUrl : url),
    passwordFrom: Option.fromUndefinedOr(password?.from),
    redisUrl,
    sink: {
      stream,
      pipeline,
      ...(key === undefined ? {} : { key }),
      ...(guarantee === undefined ? {} : { guarantee }),
      ...(envelope === undefined ? {} : { envelope }),
      ...(maxEvents === undefined ? {} : { batch: { maxEvents } }),
      ...(Object.keys(trim).length === 0 ? {} : { trim }),
      ...(f.sink?.maxLag === undefined ? {} : { maxLag: f.sink.maxLag }),
      ...(f.sink?.publish === undefined ? {} : { publish: f.sink.publish }),
      ...(guard === undefined ? {} : { memoryGuard: guard }),
      ...(f.sink?.durability === undefined ? {} : { durability: f.sink.durability }),
      ...(f.sink?.maxEventBytes === undefined ? {} : { maxEventBytes: f.sink.maxEventBytes }),
      ...(f.sink?.largeEvents === undefined ? {} : { largeEvents: f.sink.largeEvents }),
      ...(largeEventTtl === undefined ? {} : { largeEventTtl: Duration.millis(largeEventTtl) })
    },
    checkpoint,
    metricsPort: Option.fromUndefinedOr(metricsPort),
    origin
  })
}

/** The setting of a sink option, for naming it when the sink rejects its value. */
const SETTING_OF_SINK_FIELD: Record<string, { readonly field: string; readonly flag: string; readonly path: string }> =
  {
    stream: { field: "sink.stream", flag: "stream", path: "sink.stream" },
    key: { field: "sink.key", flag: "key", path: "sink.key" },
    guarantee: { field: "sink.guarantee", flag: "guarantee", path: "sink.guarantee" },
    envelope: { field: "sink.envelope", flag: "envelope", path: "sink.envelope" },
    pipeline: { field: "pipeline", flag: "pipeline", path: "pipeline" },
    "batch.maxEvents": { field: "sink.batch.maxEvents", flag: "batch-size", path: "sink.batch.maxEvents" },
    "trim.maxLen": { field: "sink.trim.maxLen", flag: "maxlen", path: "sink.trim.maxLen" },
    "trim.acked": { field: "sink.trim.acked", flag: "trim", path: "sink.trim.acked" },
    "trim.onLag": { field: "sink.trim.onLag", flag: "on-lag", path: "sink.trim.onLag" },
    "maxLag.group": { field: "sink.maxLag", flag: "max-lag", path: "sink.maxLag.group" },
    "maxLag.entries": { field: "sink.maxLag", flag: "max-lag", path: "sink.maxLag.entries" },
    "publish.channel": { field: "sink.publish.channel", flag: "publish", path: "sink.publish.channel" },
    durability: { field: "sink.durability", flag: "durability", path: "sink.durability" },
    maxEventBytes: { field: "sink.maxEventBytes", flag: "max-event-bytes", path: "sink.maxEventBytes" },
    largeEvents: { field: "sink.largeEvents", flag: "large-events", path: "sink.largeEvents" },
    largeEventTtl: { field: "sink.largeEventTtl", flag: "large-event-ttl", path: "sink.largeEventTtl" }
  }

/**
 * The error for a sink option the sink rejected (`field`: the option's path as `ConfigError.field` formats it),
 * naming the flag or the file's setting it came from.
 */
export const sinkFault = (
  config: RunConfig,
  file: Option.Option<string>,
  rejected: { readonly field: string; readonly reason: string }
): Failure => {
  const setting = SETTING_OF_SINK_FIELD[rejected.field]
  const text = rejected.reason
  if (setting === undefined) return new UsageError({ flag: OptionFlags.sinkFlagOf(rejected.field), message: text })
  return config.origin[setting.field]?.startsWith("--") === false
    ? fileError(
        Option.getOrElse(file, () => ""),
        setting.path,
        text
      )
    : new UsageError({ flag: setting.flag, message: text })
}

/** The settings in force: flags over the file, checked before anything connects. */
export const configure = (flags: RunFlags) =>
  Effect.gen(function* () {
    const env = process.env
    const file = Option.isSome(flags.config)
      ? Option.some(yield* load(flags.config.value, env))
      : Option.none<FileConfig>()
    const resolved = yield* Effect.fromResult(resolve(flags, file, env))
    const operator = yield* OperatorFlags.sinkOptions(flags, resolved.sink.trim)
    // A standby resumes from the checkpoint the active process left: one both read, in Redis.
    const leaseMs = Option.isSome(flags.lease) ? Option.some(yield* leaseTtl(flags.lease.value)) : Option.none<number>()
    if (Option.isSome(leaseMs) && resolved.checkpoint._tag !== "redis") return yield* leaseNeedsRedisCheckpoint
    const config: RunConfig = {
      ...resolved,
      sink: {
        ...resolved.sink,
        ...operator,
        ...Option.match(leaseMs, { onNone: () => ({}), onSome: (ms) => ({ lease: { ttl: Duration.millis(ms) } }) })
      },
      origin: { ...resolved.origin, ...OperatorFlags.origins(flags) }
    }
    yield* RedisStreamSink.validateOptions(config.sink).pipe(
      Effect.mapError((e) => sinkFault(config, flags.config, OptionFlags.sinkRejection(e)))
    )
    return config
  })
