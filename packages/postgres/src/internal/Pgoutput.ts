/**
 * A decoder for the messages of PostgreSQL's built-in `pgoutput` plugin, protocol version 1: the payload of one
 * XLogData message in, one {@link Message} out. Pure functions over Buffers: one pass, text values decoded straight
 * from the payload into strings (the only allocation per value). Binary values and message contents are copied, as
 * the payload may be a view into a buffer the protocol parser reuses.
 *
 * Protocol: https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
 *
 * @internal
 */
import * as Schema from "effect/Schema"

/** A log sequence number: a 64-bit byte position in the server's WAL. */
export type Lsn = bigint

/**
 * An unchanged TOASTed value (tuple kind `u`): the server did not send it because the update did not change it and
 * it is stored out of line. It is a value of its own, never `null`: the column keeps whatever it held before.
 */
export const UnchangedToast: unique symbol = Symbol.for("@redflow/postgres/UnchangedToast")
export type UnchangedToast = typeof UnchangedToast

/**
 * One column value of a tuple: `null` (kind `n`), {@link UnchangedToast} (kind `u`), the value in text form (kind
 * `t`), or its bytes in binary form (kind `b`, only when the `binary` option is on).
 */
export type Value = string | null | UnchangedToast | Uint8Array

export type Tuple = ReadonlyArray<Value>

export interface Column {
  readonly name: string
  readonly typeOid: number
  readonly typeModifier: number
  /** Part of the replica identity (the primary key by default). */
  readonly isKey: boolean
}

/** `d` default (primary key), `n` nothing, `f` full, `i` index. */
export type ReplicaIdentity = "d" | "n" | "f" | "i"

export interface Begin {
  readonly _tag: "Begin"
  /** The LSN of the commit record: the transaction's place in commit order. */
  readonly finalLsn: Lsn
  /** Commit time, microseconds since 2000-01-01 UTC (see {@link toEpochMillis}). */
  readonly commitTime: bigint
  readonly xid: number
}

export interface Commit {
  readonly _tag: "Commit"
  readonly flags: number
  readonly commitLsn: Lsn
  /** The end of the commit record: where streaming resumes after this transaction. */
  readonly endLsn: Lsn
  readonly commitTime: bigint
}

export interface Origin {
  readonly _tag: "Origin"
  readonly commitLsn: Lsn
  readonly name: string
}

export interface Relation {
  readonly _tag: "Relation"
  readonly relationId: number
  readonly schema: string
  readonly table: string
  readonly replicaIdentity: ReplicaIdentity
  readonly columns: ReadonlyArray<Column>
}

export interface Type {
  readonly _tag: "Type"
  readonly typeOid: number
  readonly schema: string
  readonly name: string
}

export interface Insert {
  readonly _tag: "Insert"
  readonly relationId: number
  readonly new: Tuple
}

export interface Update {
  readonly _tag: "Update"
  readonly relationId: number
  /**
   * `key`: the old key columns (sent when the key changed), `full`: the whole old row (`REPLICA IDENTITY FULL`),
   * absent: the key did not change and identity is not full.
   */
  readonly oldKind: "key" | "full" | undefined
  /** With `oldKind: "key"`, non-key columns are `null`. */
  readonly old: Tuple | undefined
  readonly new: Tuple
}

export interface Delete {
  readonly _tag: "Delete"
  readonly relationId: number
  readonly oldKind: "key" | "full"
  readonly old: Tuple
}

export interface Truncate {
  readonly _tag: "Truncate"
  readonly relationIds: ReadonlyArray<number>
  readonly cascade: boolean
  readonly restartIdentity: boolean
}

/** A logical decoding message (`pg_logical_emit_message`), sent only with the `messages` option. */
export interface LogicalMessage {
  readonly _tag: "Message"
  readonly transactional: boolean
  readonly lsn: Lsn
  readonly prefix: string
  readonly content: Uint8Array
}

export type Message = Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | LogicalMessage

/** A payload that is not a well-formed pgoutput v1 message. */
export class PgoutputDecodeError extends Schema.TaggedError<PgoutputDecodeError>()("PgoutputDecodeError", {
  messageType: Schema.String,
  offset: Schema.Number,
  reason: Schema.String,
  message: Schema.String
}) {}

/** A malformed payload: the one that starts at `start` of `buffer`; `offset` is counted from `buffer`'s start too. */
const fail = (buffer: Buffer, offset: number, reason: string, start = 0): never => {
  const messageType = buffer.length > start ? String.fromCharCode(buffer[start]!) : ""
  throw new PgoutputDecodeError({
    messageType,
    offset: offset - start,
    reason,
    message: `malformed pgoutput message '${messageType}' at byte ${offset - start} of ${buffer.length - start}: ${reason}`
  })
}

/** A cursor over one payload. Plain mutable state, reused for the whole message: no per-field allocation. */
class Reader {
  offset: number
  readonly buffer: Buffer
  readonly start: number
  constructor(buffer: Buffer, start: number) {
    this.buffer = buffer
    this.start = start
    this.offset = start + 1
  }
  fail(offset: number, reason: string): never {
    return fail(this.buffer, offset, reason, this.start)
  }
  need(bytes: number) {
    if (this.offset + bytes > this.buffer.length) this.fail(this.offset, `needs ${bytes} more bytes`)
  }
  u8(): number {
    this.need(1)
    return this.buffer[this.offset++]!
  }
  i16(): number {
    this.need(2)
    const value = this.buffer.readInt16BE(this.offset)
    this.offset += 2
    return value
  }
  u32(): number {
    this.need(4)
    const value = this.buffer.readUInt32BE(this.offset)
    this.offset += 4
    return value
  }
  i32(): number {
    this.need(4)
    const value = this.buffer.readInt32BE(this.offset)
    this.offset += 4
    return value
  }
  u64(): bigint {
    this.need(8)
    const value = this.buffer.readBigUInt64BE(this.offset)
    this.offset += 8
    return value
  }
  i64(): bigint {
    this.need(8)
    const value = this.buffer.readBigInt64BE(this.offset)
    this.offset += 8
    return value
  }
  /** A NUL-terminated string. */
  cstring(): string {
    const end = this.buffer.indexOf(0, this.offset)
    if (end < 0) this.fail(this.offset, "unterminated string")
    const value = this.buffer.toString("utf8", this.offset, end)
    this.offset = end + 1
    return value
  }
  tuple(): Tuple {
    const count = this.i16()
    const values = new Array<Value>(count)
    for (let i = 0; i < count; i++) {
      const kind = this.u8()
      switch (kind) {
        case 0x6e: // n
          values[i] = null
          break
        case 0x75: // u
          values[i] = UnchangedToast
          break
        case 0x74: // t
        case 0x62: {
          // b
          const length = this.i32()
          this.need(length)
          const start = this.offset
          this.offset += length
          values[i] =
            kind === 0x74
              ? this.buffer.toString("utf8", start, this.offset)
              : new Uint8Array(this.buffer.subarray(start, this.offset))
          break
        }
        default:
          this.fail(this.offset - 1, `unknown tuple data kind 0x${kind.toString(16)}`)
      }
    }
    return values
  }
  end() {
    if (this.offset !== this.buffer.length) {
      this.fail(this.offset, `${this.buffer.length - this.offset} bytes left over`)
    }
  }
}

const replicaIdentities: Record<number, ReplicaIdentity> = { 0x64: "d", 0x6e: "n", 0x66: "f", 0x69: "i" }

const oldKindOf = (reader: Reader, byte: number): "key" | "full" =>
  byte === 0x4b ? "key" : byte === 0x4f ? "full" : reader.fail(reader.offset - 1, "expected 'K' or 'O'")

const expectNew = (reader: Reader, byte: number) => {
  if (byte !== 0x4e) reader.fail(reader.offset - 1, "expected 'N' (new tuple)")
}

/**
 * Decodes one pgoutput v1 message (the payload of an XLogData message): all of `buffer` from `start` on (the
 * XLogData's own bytes, without a view made for the payload).
 *
 * @throws PgoutputDecodeError when the payload is malformed: callers turn it into a failure where it enters Effect.
 */
export const decode = (buffer: Buffer, start = 0): Message => {
  if (buffer.length <= start) return fail(buffer, start, "empty payload", start)
  const reader = new Reader(buffer, start)
  let message: Message
  switch (buffer[start]) {
    case 0x42: // B
      message = { _tag: "Begin", finalLsn: reader.u64(), commitTime: reader.i64(), xid: reader.u32() }
      break
    case 0x43: // C
      message = {
        _tag: "Commit",
        flags: reader.u8(),
        commitLsn: reader.u64(),
        endLsn: reader.u64(),
        commitTime: reader.i64()
      }
      break
    case 0x4f: // O
      message = { _tag: "Origin", commitLsn: reader.u64(), name: reader.cstring() }
      break
    case 0x52: {
      // R
      const relationId = reader.u32()
      const schema = reader.cstring()
      const table = reader.cstring()
      const identityByte = reader.u8()
      const replicaIdentity =
        replicaIdentities[identityByte] ?? reader.fail(reader.offset - 1, `unknown replica identity ${identityByte}`)
      const count = reader.i16()
      const columns = new Array<Column>(count)
      for (let i = 0; i < count; i++) {
        const flags = reader.u8()
        columns[i] = {
          name: reader.cstring(),
          typeOid: reader.u32(),
          typeModifier: reader.i32(),
          isKey: (flags & 1) === 1
        }
      }
      message = { _tag: "Relation", relationId, schema, table, replicaIdentity, columns }
      break
    }
    case 0x59: // Y
      message = { _tag: "Type", typeOid: reader.u32(), schema: reader.cstring(), name: reader.cstring() }
      break
    case 0x49: {
      // I
      const relationId = reader.u32()
      expectNew(reader, reader.u8())
      message = { _tag: "Insert", relationId, new: reader.tuple() }
      break
    }
    case 0x55: {
      // U
      const relationId = reader.u32()
      let byte = reader.u8()
      let oldKind: "key" | "full" | undefined
      let old: Tuple | undefined
      if (byte === 0x4b || byte === 0x4f) {
        oldKind = oldKindOf(reader, byte)
        old = reader.tuple()
        byte = reader.u8()
      }
      expectNew(reader, byte)
      message = { _tag: "Update", relationId, oldKind, old, new: reader.tuple() }
      break
    }
    case 0x44: {
      // D
      const relationId = reader.u32()
      const oldKind = oldKindOf(reader, reader.u8())
      message = { _tag: "Delete", relationId, oldKind, old: reader.tuple() }
      break
    }
    case 0x54: {
      // T
      const count = reader.u32()
      const options = reader.u8()
      const relationIds = new Array<number>(count)
      for (let i = 0; i < count; i++) relationIds[i] = reader.u32()
      message = { _tag: "Truncate", relationIds, cascade: (options & 1) === 1, restartIdentity: (options & 2) === 2 }
      break
    }
    case 0x4d: {
      // M
      const transactional = (reader.u8() & 1) === 1
      const lsn = reader.u64()
      const prefix = reader.cstring()
      const length = reader.u32()
      reader.need(length)
      const content = new Uint8Array(buffer.subarray(reader.offset, reader.offset + length))
      reader.offset += length
      message = { _tag: "Message", transactional, lsn, prefix, content }
      break
    }
    default:
      return reader.fail(start, "unknown message type (protocol version 1 knows B C O R Y I U D T M)")
  }
  reader.end()
  return message
}

/** Microseconds between 1970-01-01 and 2000-01-01, PostgreSQL's epoch. */
const PG_EPOCH_MICROS = 946_684_800_000_000n

/** A PostgreSQL timestamp (microseconds since 2000-01-01 UTC) as milliseconds since the Unix epoch. */
export const toEpochMillis = (pgMicros: bigint): number => Number((pgMicros + PG_EPOCH_MICROS) / 1000n)

/** Milliseconds since the Unix epoch as a PostgreSQL timestamp (microseconds since 2000-01-01 UTC). */
export const fromEpochMillis = (millis: number): bigint => BigInt(Math.trunc(millis)) * 1000n - PG_EPOCH_MICROS

const TWO_32 = 2 ** 32

/** `0/153B318`, the form PostgreSQL prints and parses. Once per change (`source.lsn`): in numbers when it fits one. */
export const formatLsn = (lsn: Lsn): string => {
  if (lsn <= 9_007_199_254_740_991n) {
    const n = Number(lsn)
    const high = Math.floor(n / TWO_32)
    return `${high.toString(16)}/${(n - high * TWO_32).toString(16)}`.toUpperCase()
  }
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`
}

/** Parses `0/153B318`; `undefined` when it is not an LSN. */
export const parseLsn = (text: string): Lsn | undefined => {
  const match = /^([0-9a-fA-F]{1,8})\/([0-9a-fA-F]{1,8})$/.exec(text)
  return match === null ? undefined : (BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`)
}
