/**
 * Envelopes: the string stored in a stream entry's `event` field, encoded once per event.
 *
 * - `native` (default): the {@link CdcEvent.CdcEvent} as JSON.
 * - `debezium`: `{"schema":null,"payload":{before,after,source,op,ts_ms,transaction?,id,position}}`, the Debezium
 *   JSON converter's shape with schemas disabled; `id` and `position` stay in the payload so it decodes back
 *   losslessly.
 * - `cloudevents`: a CloudEvents 1.0 structured-mode JSON event whose `data` is the native event.
 *
 * Encoding is a plain `JSON.stringify` of a plain object: a `CdcEvent`'s encoded form equals its type, so no Schema
 * encode runs on the hot path. Decoding validates with the `CdcEvent` schema.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Predicate from "effect/Predicate"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as CdcEvent from "./CdcEvent.ts"
import * as Position from "./Position.ts"

/**
 * The envelope formats.
 *
 * @since 0.1.0
 * @category models
 */
export const Format = Schema.Literals(["native", "debezium", "cloudevents"])

/**
 * An envelope format: `native`, `debezium` or `cloudevents`.
 *
 * @since 0.1.0
 * @category models
 */
export type Format = typeof Format.Type

/**
 * The format names, for validating configuration.
 *
 * @since 0.1.0
 * @category constants
 */
export const formats: ReadonlyArray<Format> = Format.literals

/**
 * A stored envelope that is not valid JSON, has the wrong shape, or carries an invalid event.
 *
 * @since 0.1.0
 * @category errors
 */
export class EnvelopeDecodeError extends Schema.TaggedError<EnvelopeDecodeError>()("EnvelopeDecodeError", {
  format: Format,
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot decode a ${this.format} envelope: ${this.reason}`
  }
}

/**
 * An event that JSON cannot represent (a `bigint` or a cycle in a row, a timestamp out of range).
 *
 * @since 0.1.0
 * @category errors
 */
export class EnvelopeEncodeError extends Schema.TaggedError<EnvelopeEncodeError>()("EnvelopeEncodeError", {
  format: Format,
  eventId: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot encode event ${this.eventId} as ${this.format}: ${this.reason}`
  }
}

/**
 * How events are written to and read from a stream entry: one format's encoder and decoder. Get one with
 * {@link make}, or use {@link native}, {@link debezium} or {@link cloudevents}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Envelope {
  readonly format: Format
  /** The MIME type of the encoded text. */
  readonly contentType: string
  /**
   * Encodes an event. Throws {@link EnvelopeEncodeError} for an event JSON cannot represent; use
   * {@link Envelope.encodeResult} where that must not throw.
   */
  encode(event: CdcEvent.CdcEvent): string
  encodeResult(event: CdcEvent.CdcEvent): Result.Result<string, EnvelopeEncodeError>
  decode(text: string): Effect.Effect<CdcEvent.CdcEvent, EnvelopeDecodeError>
  decodeResult(text: string): Result.Result<CdcEvent.CdcEvent, EnvelopeDecodeError>
  /** Decodes or throws {@link EnvelopeDecodeError}. */
  decodeSync(text: string): CdcEvent.CdcEvent
}

const OP_NAMES: Record<CdcEvent.Op, string> = { c: "create", u: "update", d: "delete", r: "read", t: "truncate" }

/**
 * The CloudEvents `type` of an operation: `io.redflow.cdc.create` and so on.
 *
 * @since 0.1.0
 * @category cloudevents
 */
export const cloudEventType = (op: CdcEvent.Op): string => `io.redflow.cdc.${OP_NAMES[op]}`

/**
 * The CloudEvents `source` of an event: `/redflow/<connector>/<name>`.
 *
 * @since 0.1.0
 * @category cloudevents
 */
export const cloudEventSource = (source: CdcEvent.Source): string => `/redflow/${source.connector}/${source.name}`

/**
 * The CloudEvents `subject`: `<db>.<table>`, or `<db>.<schema>.<table>` when the source has a schema.
 *
 * @since 0.1.0
 * @category cloudevents
 */
export const cloudEventSubject = (source: CdcEvent.Source): string =>
  source.schema === undefined ? `${source.db}.${source.table}` : `${source.db}.${source.schema}.${source.table}`

const toDebezium = (event: CdcEvent.CdcEvent): object => ({
  schema: null,
  payload:
    event.transaction === undefined
      ? {
          before: event.before,
          after: event.after,
          source: event.source,
          op: event.op,
          ts_ms: event.ts_ms,
          id: event.id,
          position: event.position
        }
      : {
          before: event.before,
          after: event.after,
          source: event.source,
          op: event.op,
          ts_ms: event.ts_ms,
          transaction: event.transaction,
          id: event.id,
          position: event.position
        }
})

const toCloudEvent = (event: CdcEvent.CdcEvent): object => ({
  specversion: "1.0",
  id: event.id,
  source: cloudEventSource(event.source),
  type: cloudEventType(event.op),
  subject: cloudEventSubject(event.source),
  time: new Date(event.ts_ms).toISOString(),
  datacontenttype: "application/json",
  data: event
})

const decodeEvent = Schema.decodeUnknownResult(CdcEvent.CdcEvent)
const decodeOptions = { errors: "all" } as const

// A fast path: a valid event is checked by hand and rebuilt from the schema's keys in the schema's order (excess keys
// dropped), which is what the schema's decode returns for it. Row images are kept as parsed: the schema's
// `Record(String, Unknown)` copies them key by key, unchanged. Anything the check does not accept is left to the
// schema, so every failure (and its message) is the schema's.

type Obj = Record<string, unknown>

const isPlainObject = (u: unknown): u is Obj => typeof u === "object" && u !== null && !Array.isArray(u)

const isRow = (u: unknown): u is CdcEvent.Row | null => u === null || isPlainObject(u)

const OPS: Record<string, true> = { c: true, u: true, d: true, r: true, t: true }

/** Optional `Source` fields with their `typeof`, in the schema's order (after the required ones). */
const SOURCE_OPTIONAL: ReadonlyArray<readonly [string, string]> = [
  ["snapshot", "boolean"],
  ["lsn", "string"],
  ["txId", "number"],
  ["file", "string"],
  ["pos", "number"],
  ["gtid", "string"],
  ["sequence", "number"]
]

const fastSource = (u: unknown): CdcEvent.Source | undefined => {
  if (!isPlainObject(u)) return undefined
  const { connector, name, db, schema, table, ts_ms } = u
  if (
    typeof connector !== "string" ||
    typeof name !== "string" ||
    typeof db !== "string" ||
    typeof table !== "string" ||
    typeof ts_ms !== "number" ||
    (schema !== undefined && typeof schema !== "string")
  ) {
    return undefined
  }
  const out: Obj = { connector, name, db }
  if (schema !== undefined) out.schema = schema
  out.table = table
  out.ts_ms = ts_ms
  for (const [key, type] of SOURCE_OPTIONAL) {
    const value = u[key]
    if (value === undefined) continue
    if (typeof value !== type) return undefined
    out[key] = value
  }
  return out as CdcEvent.Source
}

const fastTransaction = (u: unknown): CdcEvent.Transaction | undefined => {
  if (!isPlainObject(u)) return undefined
  const { id, total_order, data_collection_order } = u
  return typeof id === "string" && typeof total_order === "number" && typeof data_collection_order === "number"
    ? { id, total_order, data_collection_order }
    : undefined
}

/** The decoded event when `input` is a valid event, else `undefined` (ask the schema). */
const fastEvent = (input: unknown): CdcEvent.CdcEvent | undefined => {
  if (!isPlainObject(input)) return undefined
  const { id, op, before, after, ts_ms, transaction, position } = input
  if (
    typeof id !== "string" ||
    typeof op !== "string" ||
    OPS[op] !== true ||
    !isRow(before) ||
    !isRow(after) ||
    typeof ts_ms !== "number" ||
    typeof position !== "string" ||
    !Position.PATTERN.test(position)
  ) {
    return undefined
  }
  const source = fastSource(input.source)
  if (source === undefined) return undefined
  const unchanged = input.unchanged
  if (transaction === undefined && unchanged === undefined) {
    return { id, op, before, after, source, ts_ms, position } as CdcEvent.CdcEvent
  }
  const out: Obj = { id, op, before, after, source, ts_ms }
  if (transaction !== undefined) {
    const tx = fastTransaction(transaction)
    if (tx === undefined) return undefined
    out.transaction = tx
  }
  if (unchanged !== undefined) {
    if (!Array.isArray(unchanged) || !unchanged.every((c) => typeof c === "string")) return undefined
    out.unchanged = unchanged
  }
  out.position = position
  return out as CdcEvent.CdcEvent
}

const CloudEventAttributes = Schema.Struct({
  specversion: Schema.Literal("1.0"),
  id: Schema.String,
  source: Schema.String,
  type: Schema.String,
  data: Schema.Unknown
})
const decodeCloudEventAttributes = Schema.decodeUnknownResult(CloudEventAttributes)

const indent = (message: string): string => message.replaceAll("\n", "\n  ")

const errorMessage = (e: unknown): string => (Predicate.isError(e) ? e.message : String(e))

/**
 * Builds the envelope of a format.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (format: Format = "native"): Envelope => {
  const fail = (reason: string) => Result.fail(new EnvelopeDecodeError({ format, reason }))

  const parse = (text: string): Result.Result<unknown, EnvelopeDecodeError> => {
    try {
      return Result.succeed(JSON.parse(text))
    } catch (e) {
      return fail(`invalid JSON: ${errorMessage(e)}`)
    }
  }

  const validate = (where: string, input: unknown): Result.Result<CdcEvent.CdcEvent, EnvelopeDecodeError> => {
    const fast = fastEvent(input)
    if (fast !== undefined) return Result.succeed(fast)
    const decoded = decodeEvent(input, decodeOptions)
    return Result.isSuccess(decoded)
      ? Result.succeed(decoded.success)
      : fail(`${where} is not a valid event:\n  ${indent(decoded.failure.message)}`)
  }

  const fromJson: (json: unknown) => Result.Result<CdcEvent.CdcEvent, EnvelopeDecodeError> =
    format === "native"
      ? (json) => validate("the envelope", json)
      : format === "debezium"
        ? (json) => {
            if (!Predicate.isObject(json)) return fail("expected a JSON object")
            // The Debezium JSON converter without schemas emits the bare payload; accept both shapes.
            const payload = "payload" in json ? json.payload : "op" in json ? json : undefined
            if (!Predicate.isObject(payload)) return fail("expected an object at payload")
            // Debezium writes `"transaction": null` outside transactions; the event model leaves the key out.
            if (payload.transaction === null) {
              const { transaction: _, ...rest } = payload
              return validate("payload", rest)
            }
            return validate("payload", payload)
          }
        : (json) => {
            const attributes = decodeCloudEventAttributes(json, { errors: "all" })
            if (Result.isFailure(attributes)) {
              return fail(`not a CloudEvents 1.0 structured event:\n  ${indent(attributes.failure.message)}`)
            }
            const event = validate("data", attributes.success.data)
            if (Result.isSuccess(event) && event.success.id !== attributes.success.id) {
              return fail(`the id attribute ${attributes.success.id} differs from data.id ${event.success.id}`)
            }
            return event
          }

  const toJson: (event: CdcEvent.CdcEvent) => unknown =
    format === "native" ? (event) => event : format === "debezium" ? toDebezium : toCloudEvent

  const encode = (event: CdcEvent.CdcEvent): string => {
    try {
      return JSON.stringify(toJson(event))
    } catch (e) {
      throw new EnvelopeEncodeError({ format, eventId: event.id, reason: errorMessage(e) })
    }
  }

  const encodeResult = (event: CdcEvent.CdcEvent): Result.Result<string, EnvelopeEncodeError> => {
    try {
      return Result.succeed(JSON.stringify(toJson(event)))
    } catch (e) {
      return Result.fail(new EnvelopeEncodeError({ format, eventId: event.id, reason: errorMessage(e) }))
    }
  }

  const decodeResult = (text: string): Result.Result<CdcEvent.CdcEvent, EnvelopeDecodeError> =>
    Result.flatMap(parse(text), fromJson)

  return {
    format,
    contentType: format === "cloudevents" ? "application/cloudevents+json" : "application/json",
    encode,
    encodeResult,
    decodeResult,
    decode: (text) => Effect.fromResult(decodeResult(text)),
    decodeSync: (text) => Result.getOrThrow(decodeResult(text))
  }
}

/**
 * The native envelope.
 *
 * @since 0.1.0
 * @category envelopes
 */
export const native: Envelope = make("native")

/**
 * The Debezium envelope.
 *
 * @since 0.1.0
 * @category envelopes
 */
export const debezium: Envelope = make("debezium")

/**
 * The CloudEvents envelope.
 *
 * @since 0.1.0
 * @category envelopes
 */
export const cloudevents: Envelope = make("cloudevents")
