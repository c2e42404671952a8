/**
 * Routing templates: where an event goes (the stream name) and under which key.
 *
 * A template is literal text with `${variable}` placeholders: `orders.events`, `cdc.${source.db}.${source.table}`,
 * `${after.id}`. It is parsed and checked once, at construction, into a function that concatenates literals and
 * field reads (no regular expression runs per event). An unknown variable or a malformed template is a
 * {@link RoutingConfigError} at construction; a template that cannot be resolved for one event (a missing schema, a
 * null, absent or empty value, hence never an empty name) gives a {@link RoutingUnresolved} failure value, not an exception, so a
 * sink can dead-letter that event and go on.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as CdcEvent from "./CdcEvent.ts"

/**
 * The variables a template may use, besides row columns.
 *
 * @since 0.1.0
 * @category constants
 */
export const variables = [
  "op",
  "id",
  "position",
  "source.connector",
  "source.name",
  "source.db",
  "source.schema",
  "source.table",
  "table",
  "schema",
  "db"
] as const

/**
 * Row-column variables: `after.<column>`, `before.<column>`, and `key.<column>` (read from `after ?? before`).
 *
 * @since 0.1.0
 * @category constants
 */
export const rowVariables = ["after.<column>", "before.<column>", "key.<column>"] as const

const ALLOWED = [...variables, ...rowVariables].join(", ")

/**
 * A template that is malformed or uses an unknown variable.
 *
 * @since 0.1.0
 * @category errors
 */
export class RoutingConfigError extends Schema.TaggedError<RoutingConfigError>()("RoutingConfigError", {
  template: Schema.String,
  /** Where the template sits in a routing configuration, e.g. `tables["orders"]`. */
  route: Schema.optionalKey(Schema.String),
  variable: Schema.optionalKey(Schema.String),
  reason: Schema.String
}) {
  override get message(): string {
    const where = this.route === undefined ? "" : ` at ${this.route}`
    return `invalid routing template ${JSON.stringify(this.template)}${where}: ${this.reason}. Allowed variables: ${ALLOWED}`
  }
}

/**
 * A template that cannot be resolved for one event.
 *
 * @since 0.1.0
 * @category errors
 */
export class RoutingUnresolved extends Schema.TaggedError<RoutingUnresolved>()("RoutingUnresolved", {
  template: Schema.String,
  variable: Schema.String,
  eventId: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot route event ${this.eventId} with template ${JSON.stringify(this.template)}: ${this.reason}`
  }
}

/**
 * A compiled template.
 *
 * @since 0.1.0
 * @category models
 */
export interface Template {
  /** The template text. */
  readonly template: string
  /** The variables it uses, in order of appearance. */
  readonly variables: ReadonlyArray<string>
  /** The same text for every event (no variables). */
  readonly isConstant: boolean
  render(event: CdcEvent.CdcEvent): Result.Result<string, RoutingUnresolved>
}

/** Why a variable could not be resolved; allocated only on failure. */
interface Miss {
  readonly reason: string
}

type Resolver = (event: CdcEvent.CdcEvent) => string | Miss

const scalar = (value: unknown): string | undefined => {
  switch (typeof value) {
    case "string":
      return value
    case "number":
      return Number.isFinite(value) ? String(value) : undefined
    case "bigint":
    case "boolean":
      return String(value)
    default:
      return undefined
  }
}

const sourceField =
  (field: "connector" | "name" | "db" | "schema" | "table"): Resolver =>
  (event) => {
    const value = event.source[field]
    if (value === undefined) return { reason: `the event has no source.${field}` }
    if (value === "") return { reason: `source.${field} is empty` }
    return value
  }

const rowField = (image: "after" | "before" | "key", column: string): Resolver => {
  const describe = (value: unknown): Miss => ({
    reason:
      value === undefined
        ? `column ${column} is absent from the ${image} image`
        : value === null
          ? `column ${column} is null in the ${image} image`
          : value === ""
            ? `column ${column} is empty in the ${image} image`
            : `column ${column} of the ${image} image is not a scalar (${Array.isArray(value) ? "array" : typeof value})`
  })
  const read = (row: CdcEvent.Row | null, event: CdcEvent.CdcEvent): string | Miss => {
    if (row === null) {
      return {
        reason:
          image === "key"
            ? `the event has no row image (op ${event.op})`
            : `the event has no ${image} image (op ${event.op})`
      }
    }
    const value = row[column]
    const text = scalar(value)
    return text === undefined || text === "" ? describe(value) : text
  }
  return image === "after"
    ? (event) => read(event.after, event)
    : image === "before"
      ? (event) => read(event.before, event)
      : (event) => read(CdcEvent.row(event), event)
}

const resolvers: Record<(typeof variables)[number], Resolver> = {
  op: (event) => event.op,
  id: (event) => event.id,
  position: (event) => event.position,
  "source.connector": sourceField("connector"),
  "source.name": sourceField("name"),
  "source.db": sourceField("db"),
  "source.schema": sourceField("schema"),
  "source.table": sourceField("table"),
  table: sourceField("table"),
  schema: sourceField("schema"),
  db: sourceField("db")
}

const resolverOf = (name: string): Resolver | string => {
  if (Object.hasOwn(resolvers, name)) return resolvers[name as keyof typeof resolvers]
  const dot = name.indexOf(".")
  if (dot > 0) {
    const image = name.slice(0, dot)
    if (image === "after" || image === "before" || image === "key") {
      const column = name.slice(dot + 1)
      return column === "" ? `variable \${${name}} names no column` : rowField(image, column)
    }
  }
  return `unknown variable \${${name}}`
}

const compileResult = (template: string, route?: string): Result.Result<Template, RoutingConfigError> => {
  const fail = (reason: string, variable?: string) =>
    Result.fail(
      new RoutingConfigError({
        template,
        reason,
        ...(route === undefined ? {} : { route }),
        ...(variable === undefined ? {} : { variable })
      })
    )
  if (template === "") return fail("a template cannot be empty")
  const literals: Array<string> = []
  const names: Array<string> = []
  const parts: Array<Resolver> = []
  let i = 0
  for (;;) {
    const open = template.indexOf("${", i)
    if (open < 0) {
      literals.push(template.slice(i))
      break
    }
    literals.push(template.slice(i, open))
    const close = template.indexOf("}", open + 2)
    if (close < 0) return fail(`unclosed \${ at offset ${open}`)
    const name = template.slice(open + 2, close)
    if (name === "") return fail(`empty variable name \${} at offset ${open}`)
    if (name.includes("${")) return fail(`unclosed \${ at offset ${open}`)
    const resolver = resolverOf(name)
    if (typeof resolver === "string") return fail(resolver, name)
    names.push(name)
    parts.push(resolver)
    i = close + 1
  }

  if (parts.length === 0) {
    const constant = Result.succeed(template)
    return Result.succeed({ template, variables: names, isConstant: true, render: () => constant })
  }
  const unresolved = (event: CdcEvent.CdcEvent, variable: string, reason: string) =>
    Result.fail(new RoutingUnresolved({ template, eventId: event.id, reason, variable }))
  const head = literals[0]!
  const count = parts.length
  const render = (event: CdcEvent.CdcEvent): Result.Result<string, RoutingUnresolved> => {
    let out = head
    for (let k = 0; k < count; k++) {
      const value = parts[k]!(event)
      // Variables never resolve empty (that is a miss), so neither does the whole name.
      if (typeof value !== "string") return unresolved(event, names[k]!, `\${${names[k]}}: ${value.reason}`)
      out += value + literals[k + 1]!
    }
    return Result.succeed(out)
  }
  return Result.succeed({ template, variables: names, isConstant: false, render })
}

/**
 * Compiles a template.
 *
 * @example
 * ```ts
 * const stream = yield* Routing.compile("cdc.${source.db}.${source.table}")
 * stream.render(event) // Result.succeed("cdc.shop.orders")
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const compile = (template: string): Effect.Effect<Template, RoutingConfigError> =>
  Effect.suspend(() => Effect.fromResult(compileResult(template)))

/**
 * Compiles a template, throwing {@link RoutingConfigError}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const compileSync = (template: string): Template => Result.getOrThrow(compileResult(template))

/**
 * A routing configuration: one template for every event, or a template per table with a default. A table key is a
 * table name or `qualifier.table`, where the qualifier matches `source.schema`, or `source.db` for sources without
 * schemas (MySQL); a qualified match wins over a plain one.
 *
 * @since 0.1.0
 * @category models
 */
export const Config = Schema.Union([
  Schema.String,
  Schema.Struct({
    default: Schema.String,
    tables: Schema.optionalKey(Schema.Record(Schema.String, Schema.String))
  })
])

/**
 * A routing configuration, as decoded by the {@link Config} schema.
 *
 * @since 0.1.0
 * @category models
 */
export type Config = typeof Config.Type

/**
 * A compiled routing configuration.
 *
 * @since 0.1.0
 * @category models
 */
export interface Router {
  readonly default: Template
  /** The per-table templates by their configuration key. */
  readonly tables: ReadonlyMap<string, Template>
  /** The template that applies to an event. */
  templateFor(event: CdcEvent.CdcEvent): Template
  render(event: CdcEvent.CdcEvent): Result.Result<string, RoutingUnresolved>
}

const makeResult = (config: Config): Result.Result<Router, RoutingConfigError> => {
  const spec = typeof config === "string" ? { default: config } : config
  const fallback = compileResult(spec.default, typeof config === "string" ? undefined : "default")
  if (Result.isFailure(fallback)) return Result.fail(fallback.failure)
  const defaultTemplate = fallback.success
  const tables = new Map<string, Template>()
  const plain = new Map<string, Template>()
  const qualified = new Map<string, Map<string, Template>>()
  for (const [key, text] of Object.entries(spec.tables ?? {})) {
    const route = `tables[${JSON.stringify(key)}]`
    const compiled = compileResult(text, route)
    if (Result.isFailure(compiled)) return Result.fail(compiled.failure)
    const dot = key.indexOf(".")
    if (key === "" || dot === 0 || dot === key.length - 1) {
      return Result.fail(
        new RoutingConfigError({
          template: text,
          route,
          reason: `${JSON.stringify(key)} is not a table or schema.table`
        })
      )
    }
    tables.set(key, compiled.success)
    if (dot < 0) plain.set(key, compiled.success)
    else {
      const qualifier = key.slice(0, dot)
      const byTable = qualified.get(qualifier) ?? new Map<string, Template>()
      byTable.set(key.slice(dot + 1), compiled.success)
      qualified.set(qualifier, byTable)
    }
  }
  const templateFor =
    tables.size === 0
      ? () => defaultTemplate
      : (event: CdcEvent.CdcEvent): Template => {
          const source = event.source
          if (qualified.size > 0) {
            const byTable = qualified.get(source.schema ?? source.db)
            const hit = byTable?.get(source.table)
            if (hit !== undefined) return hit
          }
          return plain.get(source.table) ?? defaultTemplate
        }
  return Result.succeed({
    default: defaultTemplate,
    tables,
    templateFor,
    render: (event) => templateFor(event).render(event)
  })
}

/**
 * Compiles a routing configuration.
 *
 * @example
 * ```ts
 * const streams = yield* Routing.make({ default: "cdc.${table}", tables: { orders: "orders.events" } })
 * const keys = yield* Routing.make("${key.id}")
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (config: Config): Effect.Effect<Router, RoutingConfigError> =>
  Effect.suspend(() => Effect.fromResult(makeResult(config)))

/**
 * Compiles a routing configuration, throwing {@link RoutingConfigError}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeSync = (config: Config): Router => Result.getOrThrow(makeResult(config))
