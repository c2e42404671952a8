/**
 * The change-data-capture event: a Debezium-compatible change record with a deterministic `id` and a
 * byte-comparable `position`.
 *
 * @since 0.1.0
 */
import { createHash } from "node:crypto"
import * as Schema from "effect/Schema"
import { Position } from "./Position.ts"

/**
 * `c` create, `u` update, `d` delete, `r` read (snapshot), `t` truncate.
 *
 * @since 0.1.0
 * @category models
 */
export const Op = Schema.Literals(["c", "u", "d", "r", "t"])

/**
 * The operation of an event: `c` create, `u` update, `d` delete, `r` read (snapshot), `t` truncate.
 *
 * @since 0.1.0
 * @category models
 */
export type Op = typeof Op.Type

/**
 * A row image: column name to value.
 *
 * @since 0.1.0
 * @category models
 */
export const Row = Schema.Record(Schema.String, Schema.Unknown)

/**
 * A row image: column name to value.
 *
 * @since 0.1.0
 * @category models
 */
export type Row = typeof Row.Type

/**
 * Where an event comes from, with the source's own position fields (all optional, per connector).
 *
 * @since 0.1.0
 * @category models
 */
export const Source = Schema.Struct({
  connector: Schema.String,
  name: Schema.String,
  db: Schema.String,
  schema: Schema.optionalKey(Schema.String),
  table: Schema.String,
  ts_ms: Schema.Number,
  snapshot: Schema.optionalKey(Schema.Boolean),
  // Position fields: PostgreSQL (lsn, txId), MySQL (file, pos, gtid), generic sequence.
  lsn: Schema.optionalKey(Schema.String),
  txId: Schema.optionalKey(Schema.Number),
  file: Schema.optionalKey(Schema.String),
  pos: Schema.optionalKey(Schema.Number),
  gtid: Schema.optionalKey(Schema.String),
  sequence: Schema.optionalKey(Schema.Number)
})

/**
 * Where an event comes from, with the source's own position fields.
 *
 * @since 0.1.0
 * @category models
 */
export type Source = typeof Source.Type

/**
 * The transaction an event belongs to (Debezium's `transaction` block): its id, the event's order in the transaction,
 * and its order among the transaction's events of the same table.
 *
 * @since 0.1.0
 * @category models
 */
export const Transaction = Schema.Struct({
  id: Schema.String,
  total_order: Schema.Number,
  data_collection_order: Schema.Number
})

/**
 * The transaction an event belongs to; see {@link Transaction}.
 *
 * @since 0.1.0
 * @category models
 */
export type Transaction = typeof Transaction.Type

/**
 * A change event.
 *
 * @example
 * ```ts
 * const event = CdcEvent.make({ op: "c", before: null, after: { id: 1 }, source, ts_ms: Date.now(), position })
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export const CdcEvent = Schema.Struct({
  id: Schema.String,
  op: Op,
  before: Schema.NullOr(Row),
  after: Schema.NullOr(Row),
  source: Source,
  ts_ms: Schema.Number,
  transaction: Schema.optionalKey(Transaction),
  /**
   * Columns whose value did not change and was not sent, so they are absent from `after` (PostgreSQL's unchanged
   * TOAST values, when the old row is not logged in full). Absent means every column is in `after`.
   */
  unchanged: Schema.optionalKey(Schema.Array(Schema.String)),
  position: Position
})

/**
 * A change event, as decoded by the {@link CdcEvent} schema.
 *
 * @since 0.1.0
 * @category models
 */
export type CdcEvent = typeof CdcEvent.Type

/**
 * A change event as JSON carries it: the encoded side of the {@link CdcEvent} schema.
 *
 * @since 0.1.0
 * @category models
 */
export type CdcEventEncoded = typeof CdcEvent.Encoded

/**
 * The deterministic event id: a UUID (version 5 layout) over the source identity and the position, so a replayed
 * event keeps its id and consumers can dedupe on it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const eventId = (source: Pick<Source, "connector" | "name" | "db">, position: Position): string => {
  const h = createHash("sha1")
    .update(`${source.connector}\u0000${source.name}\u0000${source.db}\u0000${position}`)
    .digest("hex")
  const variant = ((parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16)
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`
}

/**
 * Ids for events numbered by a sequence (the synthetic source), without a hash per event: a UUID (version 8 layout)
 * whose first 60 bits come from the SHA-1 of the source identity, computed once here, and whose last 53 are the
 * sequence. The same on every replay, distinct for distinct sequences (up to `Number.MAX_SAFE_INTEGER`), and never
 * equal to an {@link eventId} (whose version digit is 5).
 *
 * @since 0.1.0
 * @category constructors
 */
export const sequenceEventIds = (source: Pick<Source, "connector" | "name" | "db">): ((sequence: number) => string) => {
  const h = createHash("sha1").update(`${source.connector}\u0000${source.name}\u0000${source.db}`).digest("hex")
  const prefix = `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(13, 16)}-8`
  return (sequence) => {
    const high = Math.floor(sequence / 2 ** 48)
    const low = sequence - high * 2 ** 48
    return `${prefix}${high.toString(16).padStart(3, "0")}-${low.toString(16).padStart(12, "0")}`
  }
}

/**
 * Builds an event, deriving its `id` from the source and position.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (fields: Omit<CdcEvent, "id">): CdcEvent => ({
  id: eventId(fields.source, fields.position),
  ...fields
})

/**
 * The row image a key is taken from: `after`, or `before` for a delete.
 *
 * @since 0.1.0
 * @category utils
 */
export const row = (event: CdcEvent): Row | null => event.after ?? event.before

/**
 * Decodes an unknown value (parsed JSON, say) into a {@link CdcEvent}, failing with a `SchemaError`.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeUnknown = Schema.decodeUnknownEffect(CdcEvent)

/**
 * Decodes an unknown value into a {@link CdcEvent}, throwing on invalid input.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeUnknownSync = Schema.decodeUnknownSync(CdcEvent)
