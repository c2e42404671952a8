/**
 * The value mapping: a column value in the server's text form (the only form we ask for, from pgoutput and from a
 * {@link Session.Session} alike) to a JSON-safe JavaScript value, the same for the snapshot and the stream. The text
 * forms are fixed by {@link Session.STARTUP_OPTIONS} (DateStyle ISO, TimeZone UTC, IntervalStyle iso_8601,
 * extra_float_digits 3, bytea_output hex), so each type has one form to read.
 *
 * | PostgreSQL type | JavaScript value | example |
 * |---|---|---|
 * | `int2`, `int4`, `oid` | number | `42` |
 * | `float4`, `float8` | number; `NaN`, `Infinity`, `-Infinity` as those strings (1) | `0.1`, `"NaN"` |
 * | `int8`, `numeric` (any precision; `NaN`, `±Infinity`) | the exact decimal string (2) | `"9223372036854775807"` |
 * | `bool` | boolean | `true` |
 * | `text`, `varchar`, `bpchar` (padding kept), `name`, `"char"` | string | `"ab   "` |
 * | `uuid` | string (lower case) | `"a0eebc99-9c0b-…"` |
 * | `timestamptz` | ISO 8601 in UTC, six fractional digits (3) | `"2026-12-01T10:00:00.123456Z"` |
 * | `timestamp` | the same without `Z` | `"2026-12-01T10:00:00.123456"` |
 * | `date` | `YYYY-MM-DD` | `"2026-12-01"` |
 * | a timestamp or date BC, or after 9999 | ISO 8601 expanded year (4) | `"-000043-03-15"` (44 BC) |
 * | `infinity`, `-infinity` (timestamps, dates) | those strings | `"infinity"` |
 * | `time`, `timetz` | the server's text | `"10:00:00.5+02"` |
 * | `interval` | the server's text: an ISO 8601 duration | `"P1Y2M3DT4H5M6.5S"` |
 * | `json`, `jsonb` | parsed with `JSON.parse` (5) | `{ "a": [1] }` |
 * | `bytea` | base64 of the bytes | `"AP8="` |
 * | arrays (of any type here) | arrays, nested for several dimensions (6) | `[[1, 2], [3, null]]` |
 * | enums | the label | `"happy"` |
 * | domains | as their base type | `42` |
 * | anything else: `citext`, `inet`, ranges, composites, … | the server's text | `"[1,5)"` |
 * | SQL `NULL` (a column's, an array element's) | `null` | `null` |
 *
 * 1. JSON has no such numbers (`JSON.stringify(NaN)` is `null`). A `float4` is read from its shortest exact text,
 *    so `0.1` is the double `0.1`.
 * 2. A JSON number would lose `int8` above 2^53 and `numeric`'s digits. `numeric(p,s)` keeps its scale: `0.0000000000`.
 * 3. Always six digits (the server drops trailing zeros), so values of one type sort as strings do (years 1 to 9999).
 * 4. A sign and six digits, 1 BC being year 0 (as `Date` reads them): `0044-03-15 BC` is `-000043-03-15`,
 *    `10000-01-01 00:00:00` is `+010000-01-01T00:00:00.000000`.
 * 5. Numbers beyond a double's precision are rounded, as by any JSON reader; of duplicate keys in `json` (not
 *    `jsonb`) the last wins; a JSON `null` in a `jsonb[]` and a `NULL` element both become `null`.
 * 6. Explicit lower bounds (`[2:3]={1,2}`) are dropped: `[1, 2]`. Elements are mapped as their type: `jsonb[]`
 *    elements parsed, `timestamptz[]` elements as ISO strings, enum arrays as labels. `int2vector` and `oidvector`
 *    are the server's text (`1 2`).
 *
 * Built-in types are known by their OID (fixed in every PostgreSQL version), so a user type that happens to be
 * called `int4` in another schema is not mistaken for it; other types (enums, domains, arrays of them, extension
 * types) are learned from `pg_type` with {@link loadTypes}.
 *
 * Decoding: {@link decoderFor} builds one function per type, once per column, so the hot path is a plain call. A
 * value that does not fit its type (`abc` for an `int4`, a malformed array literal, JSON that does not parse) is never
 * mapped to a default: the decoder throws a {@link PostgresValueError} naming the type and an excerpt of the value.
 * Throwing costs nothing until a value is bad; {@link columnDecoder} adds the column, and {@link attempt} turns the
 * throw into the typed failure of an Effect.
 *
 * Not handled here: {@link Pgoutput.UnchangedToast}. An unchanged TOASTed value has no text to map; the caller keeps
 * the column's earlier value (or says it is unknown) and must not pass the marker to a decoder. Binary tuple data
 * (`Uint8Array`, pgoutput kind `b`) is never asked for, so it is a {@link PostgresValueError} too.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { PostgresProtocolError } from "../PostgresError.ts"
import type * as Pgoutput from "./Pgoutput.ts"
import type { ReplicationError } from "./ReplicationClient.ts"
import type * as Session from "./Session.ts"

/**
 * A value that does not fit its type, or binary data where text was expected. `typeName` is the SQL type (e.g.
 * `integer`, `mood[]`); `excerpt` is the start of the value, quoted. The source stops on it: a row is never written
 * with a guessed value.
 */
export class PostgresValueError extends Schema.TaggedError<PostgresValueError>()("PostgresValueError", {
  typeName: Schema.String,
  excerpt: Schema.String,
  reason: Schema.String,
  /** The column, when the value was decoded through {@link columnDecoder}. */
  column: Schema.optionalKey(Schema.String),
  /** `schema.table`, when known. */
  table: Schema.optionalKey(Schema.String),
  /** The server as `host:port/db`, when known. */
  server: Schema.optionalKey(Schema.String)
}) {
  override get message(): string {
    const column = this.column === undefined ? "a value" : `column ${JSON.stringify(this.column)}`
    const table = this.table === undefined ? "" : ` of ${this.table}`
    const server = this.server === undefined ? "" : ` (PostgreSQL at ${this.server})`
    return (
      `${column}${table}${server}: type ${this.typeName}: ${this.excerpt} ${this.reason}. ` +
      "Fix: check that nothing overrides the session settings the source sets (DateStyle, TimeZone, IntervalStyle, " +
      "extra_float_digits, bytea_output); otherwise the value mapping lacks this form: report it with the value"
    )
  }
}

/** One row of `pg_type`, as far as the mapping needs it. */
export interface TypeInfo {
  readonly oid: number
  /** `typname`, e.g. `int4`, `_text`, `mood`. */
  readonly name: string
  /** `format_type(oid, NULL)`, e.g. `integer`, `text[]`, `mood`: the name messages use. */
  readonly display: string
  /** `typtype`: `b` base, `c` composite, `d` domain, `e` enum, `p` pseudo, `r` range, `m` multirange. */
  readonly kind: string
  /** `typcategory`: `A` for arrays. */
  readonly category: string
  /** `typelem`: the element type of an array (0 when none). */
  readonly element: number
  /** `typbasetype`: the type a domain is over (0 when not a domain). */
  readonly baseType: number
  /** `typdelim`: the element separator in this type's array literals (`,`; `;` for `box`). */
  readonly delimiter: string
  /** `typlen`: -1 for variable length (a true array type is variable length). */
  readonly length: number
}

/** The types a set of tables uses, closed over array elements and domain base types. */
export interface TypeCatalog {
  readonly types: ReadonlyMap<number, TypeInfo>
}

/** A catalog with no types: built-in types still decode (they are known by OID). */
export const emptyCatalog: TypeCatalog = { types: new Map() }

/** Maps a value's text to its JavaScript value; throws {@link PostgresValueError} when it does not fit the type. */
export type Decoder = (text: string) => unknown

/** A column value as a tuple or a snapshot row carries it (never {@link Pgoutput.UnchangedToast}). */
export type ColumnValue = Exclude<Pgoutput.Value, Pgoutput.UnchangedToast>

const TYPE_COLUMNS = `t.oid::int8 AS oid, t.typname, format_type(t.oid, NULL) AS display, t.typtype, t.typcategory,
  t.typelem::int8 AS typelem, t.typbasetype::int8 AS typbasetype, t.typdelim, t.typlen`

// The requested types and, transitively, the element types of arrays and the base types of domains.
const TYPES_QUERY = `WITH RECURSIVE wanted(oid) AS (
    SELECT unnest($1::oid[])
  UNION
    SELECT v.oid FROM pg_type t JOIN wanted w ON t.oid = w.oid,
      LATERAL (VALUES (t.typelem), (t.typbasetype)) AS v(oid)
    WHERE v.oid <> 0
)
SELECT ${TYPE_COLUMNS} FROM pg_type t JOIN wanted w ON t.oid = w.oid`

/**
 * Reads from `pg_type` the types with these OIDs (the published tables' column types, or the type OIDs of a
 * pgoutput RELATION message), their array element types and domain base types. Types already in `known` are not read
 * again; the result holds both.
 *
 * @example
 * ```ts
 * const catalog = yield* Values.loadTypes(session, table.columns.map((column) => column.typeOid))
 * const decoders = table.columns.map((column) => Values.columnDecoder(catalog, column, { table: table.quoted }))
 * ```
 */
export const loadTypes = (
  session: Session.Session,
  oids: Iterable<number>,
  known: TypeCatalog = emptyCatalog
): Effect.Effect<TypeCatalog, ReplicationError | PostgresProtocolError> =>
  Effect.gen(function* () {
    const wanted = [...new Set(oids)].filter((oid) => !known.types.has(oid))
    if (wanted.length === 0) return known
    const rows = yield* session.query(TYPES_QUERY, [wanted])
    const types = new Map(known.types)
    for (const row of rows) {
      const info: TypeInfo = {
        oid: Number(row.oid),
        name: String(row.typname),
        display: String(row.display),
        kind: String(row.typtype),
        category: String(row.typcategory),
        element: Number(row.typelem),
        baseType: Number(row.typbasetype),
        delimiter: String(row.typdelim),
        length: Number(row.typlen)
      }
      types.set(info.oid, info)
    }
    const missing = wanted.filter((oid) => !types.has(oid))
    if (missing.length > 0) {
      return yield* new PostgresProtocolError({
        server: session.server,
        reason:
          `column type OID ${missing.join(", ")} is not in pg_type (the type was dropped while the source read the ` +
          "tables' description); restart the source to read the tables again"
      })
    }
    return { types }
  })

// ---------------------------------------------------------------------------------------------------------------------
// Failures

const EXCERPT_LENGTH = 40

/** The start of a value, quoted, with its length when cut. */
export const excerpt = (text: string): string =>
  text.length <= EXCERPT_LENGTH
    ? JSON.stringify(text)
    : `${JSON.stringify(text.slice(0, EXCERPT_LENGTH))}… (${text.length} characters)`

const fail = (typeName: string, text: string, reason: string): never => {
  throw new PostgresValueError({ typeName, excerpt: excerpt(text), reason })
}

// ---------------------------------------------------------------------------------------------------------------------
// Scalars

const INTEGER = /^-?[0-9]+$/
const UNSIGNED = /^[0-9]+$/
const FLOAT = /^-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$/
const NUMERIC = /^-?[0-9]+(?:\.[0-9]+)?$/
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/
// `2026-12-01 10:00:00.123456+00`, `0044-03-15 12:00:00+00 BC`, `10000-01-01 00:00:00` (DateStyle ISO).
const TIMESTAMP =
  /^([0-9]{4,})-([0-9]{2}-[0-9]{2}) ([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,6}))?([+-][0-9:]+)?( BC)?$/
const DATE = /^([0-9]{4,})-([0-9]{2}-[0-9]{2})( BC)?$/
const TIME = /^[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?$/
const TIMETZ = /^[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?[+-][0-9]{2}(?::[0-9]{2}){0,2}$/

const integer =
  (typeName: string): Decoder =>
  (text) =>
    INTEGER.test(text) ? Number(text) : fail(typeName, text, "is not an integer")

const unsigned =
  (typeName: string): Decoder =>
  (text) =>
    UNSIGNED.test(text) ? Number(text) : fail(typeName, text, "is not an unsigned integer")

const float =
  (typeName: string): Decoder =>
  (text) => {
    if (FLOAT.test(text)) return Number(text)
    if (text === "NaN" || text === "Infinity" || text === "-Infinity") return text
    return fail(typeName, text, "is not a floating-point number")
  }

const decimalString =
  (typeName: string): Decoder =>
  (text) =>
    INTEGER.test(text) ? text : fail(typeName, text, "is not an integer")

const numeric =
  (typeName: string): Decoder =>
  (text) =>
    NUMERIC.test(text) || text === "NaN" || text === "Infinity" || text === "-Infinity"
      ? text
      : fail(typeName, text, "is not a decimal number")

const bool =
  (typeName: string): Decoder =>
  (text) =>
    text === "t" ? true : text === "f" ? false : fail(typeName, text, "is not t or f")

const identity: Decoder = (text) => text

const uuid =
  (typeName: string): Decoder =>
  (text) =>
    UUID.test(text) ? text : fail(typeName, text, "is not a UUID")

/** The year as ISO 8601 writes it: four digits from 1 to 9999 AD, else a sign and six digits (1 BC is year 0). */
const isoYear = (year: string, bc: boolean): string => {
  if (!bc && year.length === 4) return year
  const astronomical = bc ? 1 - Number(year) : Number(year)
  return (astronomical < 0 ? "-" : "+") + String(Math.abs(astronomical)).padStart(6, "0")
}

const timestamp =
  (typeName: string, zoned: boolean): Decoder =>
  (text) => {
    const match = TIMESTAMP.exec(text)
    if (match === null) {
      if (text === "infinity" || text === "-infinity") return text
      return fail(typeName, text, "is not an ISO timestamp (DateStyle ISO)")
    }
    const [, year, monthDay, time, fraction, offset, bc] = match
    if (zoned ? offset !== "+00" : offset !== undefined) {
      fail(
        typeName,
        text,
        zoned ? `has the UTC offset ${offset ?? "(none)"}, not +00 (TimeZone UTC)` : "has a UTC offset"
      )
    }
    const micros = fraction === undefined ? "000000" : fraction.padEnd(6, "0")
    return `${isoYear(year!, bc !== undefined)}-${monthDay}T${time}.${micros}${zoned ? "Z" : ""}`
  }

const date =
  (typeName: string): Decoder =>
  (text) => {
    const match = DATE.exec(text)
    if (match === null) {
      if (text === "infinity" || text === "-infinity") return text
      return fail(typeName, text, "is not an ISO date (DateStyle ISO)")
    }
    return `${isoYear(match[1]!, match[3] !== undefined)}-${match[2]}`
  }

const matching =
  (typeName: string, pattern: RegExp, form: string): Decoder =>
  (text) =>
    pattern.test(text) ? text : fail(typeName, text, `is not ${form}`)

const interval =
  (typeName: string): Decoder =>
  (text) =>
    text.charCodeAt(0) === 80 /* P */
      ? text
      : fail(typeName, text, "is not an ISO 8601 duration (IntervalStyle iso_8601)")

const json =
  (typeName: string): Decoder =>
  (text) => {
    try {
      return JSON.parse(text)
    } catch (cause) {
      return fail(typeName, text, `is not JSON (${cause instanceof Error ? cause.message : String(cause)})`)
    }
  }

const bytea =
  (typeName: string): Decoder =>
  (text) => {
    // `\x` then two hex digits a byte (bytea_output hex). Buffer.from stops at the first pair that is not hex.
    if (text.charCodeAt(0) !== 92 || text.charCodeAt(1) !== 120 || text.length % 2 !== 0) {
      return fail(typeName, text, "is not \\x followed by hex digits (bytea_output hex)")
    }
    const bytes = Buffer.from(text.slice(2), "hex")
    if (bytes.length * 2 !== text.length - 2) return fail(typeName, text, "has a character that is not a hex digit")
    return bytes.toString("base64")
  }

/** Built-in scalar types by OID (`pg_type.dat`; these OIDs are the same in every PostgreSQL version). */
const SCALARS: ReadonlyMap<number, readonly [name: string, make: (typeName: string) => Decoder]> = new Map([
  [16, ["boolean", bool]],
  [17, ["bytea", bytea]],
  [18, ['"char"', () => identity]],
  [19, ["name", () => identity]],
  [20, ["bigint", decimalString]],
  [21, ["smallint", integer]],
  [23, ["integer", integer]],
  [25, ["text", () => identity]],
  [26, ["oid", unsigned]],
  [114, ["json", json]],
  [700, ["real", float]],
  [701, ["double precision", float]],
  [1042, ["character", () => identity]],
  [1043, ["character varying", () => identity]],
  [1082, ["date", date]],
  [1083, ["time without time zone", (name) => matching(name, TIME, "a time (HH:MM:SS)")]],
  [1114, ["timestamp without time zone", (name) => timestamp(name, false)]],
  [1184, ["timestamp with time zone", (name) => timestamp(name, true)]],
  [1186, ["interval", interval]],
  [1266, ["time with time zone", (name) => matching(name, TIMETZ, "a time with a UTC offset")]],
  [1700, ["numeric", numeric]],
  [2950, ["uuid", uuid]],
  [3802, ["jsonb", json]]
])

/** Built-in array types by OID, with their element type: decodable without the catalog. */
const ARRAYS: ReadonlyMap<number, number> = new Map([
  [1000, 16],
  [1001, 17],
  [1002, 18],
  [1003, 19],
  [1016, 20],
  [1005, 21],
  [1007, 23],
  [1009, 25],
  [1028, 26],
  [199, 114],
  [1021, 700],
  [1022, 701],
  [1014, 1042],
  [1015, 1043],
  [1182, 1082],
  [1183, 1083],
  [1115, 1114],
  [1185, 1184],
  [1187, 1186],
  [1270, 1266],
  [1231, 1700],
  [2951, 2950],
  [3807, 3802]
])

// int2vector and oidvector have an element type but print as `1 2 3`, not as array literals.
const VECTORS = new Set([22, 30])

// ---------------------------------------------------------------------------------------------------------------------
// Array literals

const BACKSLASH = 92
const QUOTE = 34
const OPEN = 123
const CLOSE = 125

/** array_in's whitespace: space, \t, \n, \v, \f, \r. */
const isSpace = (code: number) => code === 32 || (code >= 9 && code <= 13)

const MAX_DIMENSIONS = 6

/**
 * Parses an array literal as `array_out` writes it (and as `array_in` reads it): `{1,2}`, `{{1,2},{3,NULL}}`,
 * `{"a,b","c\"d",NULL}`, `[2:3]={1,2}`, `{}`. Each element's text goes through `element`; `NULL` (unquoted, any case)
 * is `null`. Several dimensions give nested arrays; explicit lower bounds are checked against the elements and
 * dropped. Throws {@link PostgresValueError} (named `typeName`) on a malformed literal, and passes on what `element`
 * throws.
 *
 * @example
 * ```ts
 * parseArray('[0:1]={"a,b",NULL}') // ["a,b", null]
 * parseArray("{{1,2},{3,4}}", Number) // [[1, 2], [3, 4]]
 * parseArray("{(1,1),(0,0);(2,2),(1,1)}", String, ";") // box[]: ["(1,1),(0,0)", "(2,2),(1,1)"]
 * ```
 */
export const parseArray = (
  text: string,
  element: (text: string) => unknown = identity,
  delimiter = ",",
  typeName = "array"
): Array<unknown> => {
  const delim = delimiter.charCodeAt(0)
  const end = text.length
  let i = 0
  const syntax = (reason: string): never =>
    fail(typeName, text, `is not an array literal: ${reason} at character ${Math.min(i, end) + 1}`)
  const skipSpace = () => {
    while (i < end && isSpace(text.charCodeAt(i))) i++
  }

  // Optional dimensions: `[lower:upper]` (or `[upper]`) per dimension, then `=`.
  let bounds: Array<number> | undefined
  skipSpace()
  if (text.charCodeAt(i) === 91 /* [ */) {
    bounds = []
    while (text.charCodeAt(i) === 91) {
      const close = text.indexOf("]", i)
      if (close < 0) syntax("a dimension without ]")
      const match = /^\s*(-?[0-9]+)\s*(?::\s*(-?[0-9]+)\s*)?$/.exec(text.slice(i + 1, close))
      if (match === null) syntax("a dimension that is not [lower:upper]")
      const lower = match![2] === undefined ? 1 : Number(match![1])
      const upper = Number(match![2] ?? match![1])
      if (upper < lower - 1) syntax("a dimension whose upper bound is below its lower bound")
      bounds.push(upper - lower + 1)
      i = close + 1
      skipSpace()
    }
    if (text.charCodeAt(i) !== 61 /* = */) syntax("dimensions not followed by =")
    i++
    skipSpace()
  }
  if (text.charCodeAt(i) !== OPEN) syntax("no {")

  // Every sub-array at one depth has the same length, and every element is at the same depth.
  const lengths: Array<number> = []
  let elementDepth = -1

  /** One element's text from `i`, unescaped; `undefined` for an unquoted NULL. Leaves `i` after it. */
  const scalar = (): string | undefined => {
    if (text.charCodeAt(i) === QUOTE) {
      i++
      let value = ""
      let from = i
      for (;;) {
        if (i >= end) syntax("a quoted element without its closing quote")
        const code = text.charCodeAt(i)
        if (code === QUOTE) break
        if (code === BACKSLASH) {
          value += text.slice(from, i)
          i++
          if (i >= end) syntax("a backslash at the end")
          from = i
        }
        i++
      }
      value += text.slice(from, i)
      i++
      return value
    }
    // Unquoted: up to the delimiter or `}`, leading space skipped already, trailing unescaped space dropped.
    let value = ""
    let from = i
    let keep = i // the end of the value without trailing unescaped space
    let escaped = false
    for (;;) {
      if (i >= end) syntax("an element without a closing }")
      const code = text.charCodeAt(i)
      if (code === delim || code === CLOSE) break
      if (code === QUOTE || code === OPEN) syntax(`an unexpected ${String.fromCharCode(code)} in an unquoted element`)
      if (code === BACKSLASH) {
        value += text.slice(from, i)
        i++
        if (i >= end) syntax("a backslash at the end")
        from = i
        escaped = true
        i++
        keep = i
        continue
      }
      i++
      if (!isSpace(code)) keep = i
    }
    if (keep < from) keep = from
    value += text.slice(from, keep)
    if (!escaped) {
      if (value.length === 0) syntax("an empty element")
      if (value.length === 4 && value.toUpperCase() === "NULL") return undefined
    }
    return value
  }

  const level = (depth: number): Array<unknown> => {
    if (depth >= MAX_DIMENSIONS) syntax(`more than ${MAX_DIMENSIONS} dimensions`)
    i++ // {
    const items: Array<unknown> = []
    skipSpace()
    if (text.charCodeAt(i) === CLOSE) {
      i++
      if (depth > 0) syntax("an empty sub-array")
    } else {
      for (;;) {
        skipSpace()
        if (text.charCodeAt(i) === OPEN) {
          if (elementDepth >= 0 && elementDepth <= depth) syntax("a sub-array where an element was expected")
          items.push(level(depth + 1))
        } else {
          if (elementDepth < 0) elementDepth = depth
          else if (elementDepth !== depth) syntax("an element where a sub-array was expected")
          const value = scalar()
          items.push(value === undefined ? null : element(value))
        }
        skipSpace()
        const code = text.charCodeAt(i)
        i++
        if (code === CLOSE) break
        if (code !== delim)
          syntax(i > end ? "no closing }" : `${String.fromCharCode(code)} where ${delimiter} or } was expected`)
      }
    }
    const expected = lengths[depth]
    if (expected === undefined) lengths[depth] = items.length
    else if (expected !== items.length) syntax("sub-arrays of different lengths")
    return items
  }

  const result = level(0)
  skipSpace()
  if (i < end) syntax("text after the closing }")
  if (bounds !== undefined) {
    const actual = result.length === 0 ? [0] : lengths
    if (bounds.length !== actual.length || bounds.some((length, d) => length !== actual[d])) {
      syntax(`dimensions [${bounds.join("][")}] that do not match the elements`)
    }
  }
  return result
}

const arrayDecoder = (typeName: string, element: Decoder, delimiter: string): Decoder => {
  return (text) => {
    try {
      return parseArray(text, element, delimiter, typeName)
    } catch (error) {
      // An element that does not fit its type: name the array and the element both.
      if (error instanceof PostgresValueError && error.typeName !== typeName) {
        fail(typeName, text, `has an element ${error.excerpt} that ${error.reason} (type ${error.typeName})`)
      }
      throw error
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Decoders

const notInCatalog =
  (oid: number): Decoder =>
  (text) =>
    fail(`OID ${oid}`, text, "has a type the source did not read from pg_type (loadTypes was not given its OID)")

/**
 * The decoder of a type: built once (per column), called per value. Built-in types are known by OID; other types
 * must be in the catalog ({@link loadTypes}), else every value fails naming the OID.
 */
export const decoderFor = (catalog: TypeCatalog, typeOid: number): Decoder => build(catalog, typeOid, undefined, 0)

const build = (catalog: TypeCatalog, oid: number, label: string | undefined, depth: number): Decoder => {
  const info = catalog.types.get(oid)
  const scalar = SCALARS.get(oid)
  if (scalar !== undefined) return scalar[1](label ?? info?.display ?? scalar[0])
  const builtinElement = ARRAYS.get(oid)
  if (builtinElement !== undefined) {
    const name = label ?? info?.display ?? `${SCALARS.get(builtinElement)![0]}[]`
    return arrayDecoder(name, build(catalog, builtinElement, undefined, depth + 1), ",")
  }
  if (info === undefined) return notInCatalog(oid)
  // Domains over domains, arrays of domains over arrays: bounded anyway, a catalog is finite but could be cyclic.
  if (depth > 32) return notInCatalog(oid)
  const name = label ?? info.display
  if (info.kind === "d") {
    const base = catalog.types.get(info.baseType)?.display ?? SCALARS.get(info.baseType)?.[0] ?? `OID ${info.baseType}`
    return build(catalog, info.baseType, `${name} (a domain over ${base})`, depth + 1)
  }
  if (info.category === "A" && info.element !== 0 && info.length === -1 && !VECTORS.has(oid)) {
    const delimiter = catalog.types.get(info.element)?.delimiter ?? ","
    return arrayDecoder(name, build(catalog, info.element, undefined, depth + 1), delimiter)
  }
  return identity
}

/** Where a column's values come from, for messages. */
export interface ColumnContext {
  /** `schema.table`. */
  readonly table?: string | undefined
  /** The server as `host:port/db`. */
  readonly server?: string | undefined
}

/**
 * The decoder of one column: `null` stays `null`, text goes through the type's decoder, binary data (pgoutput kind
 * `b`, never asked for) fails. Throws {@link PostgresValueError} naming the column; run it inside {@link attempt}.
 * Never call it with {@link Pgoutput.UnchangedToast}: the caller decides what an unchanged TOAST column means.
 */
export const columnDecoder = (
  catalog: TypeCatalog,
  column: { readonly name: string; readonly typeOid: number },
  context: ColumnContext = {}
): ((value: ColumnValue) => unknown) => {
  const decode = decoderFor(catalog, column.typeOid)
  const where = {
    column: column.name,
    ...(context.table === undefined ? {} : { table: context.table }),
    ...(context.server === undefined ? {} : { server: context.server })
  }
  const typeName = () =>
    catalog.types.get(column.typeOid)?.display ?? SCALARS.get(column.typeOid)?.[0] ?? `OID ${column.typeOid}`
  return (value) => {
    if (value === null) return null
    if (typeof value !== "string") {
      throw new PostgresValueError({
        typeName: typeName(),
        excerpt: `${value.length} bytes`,
        reason: "arrived in binary form, and the source only asks for text (pgoutput's binary option is off)",
        ...where
      })
    }
    try {
      return decode(value)
    } catch (error) {
      if (error instanceof PostgresValueError) {
        throw new PostgresValueError({
          typeName: error.typeName,
          excerpt: error.excerpt,
          reason: error.reason,
          ...where
        })
      }
      throw error
    }
  }
}

/**
 * Runs decoding (one value, a row, a batch) and turns a thrown {@link PostgresValueError} into the Effect's typed
 * failure. Anything else thrown is a defect (a bug, not a bad value).
 *
 * @example
 * ```ts
 * const row = yield* Values.attempt(() => decoders.map((decode, i) => decode(tuple[i])))
 * ```
 */
export const attempt = <A>(evaluate: () => A): Effect.Effect<A, PostgresValueError> =>
  Effect.suspend(() => {
    try {
      return Effect.succeed(evaluate())
    } catch (error) {
      return error instanceof PostgresValueError ? Effect.fail(error) : Effect.die(error)
    }
  })
