/**
 * The framing of the streaming replication protocol inside CopyData: XLogData (`w`) and the primary keepalive (`k`)
 * from the server, the standby status update (`r`) from the client.
 *
 * Protocol: https://www.postgresql.org/docs/15/protocol-replication.html
 *
 * @internal
 */
import type { Lsn } from "./Pgoutput.ts"
import { PgoutputDecodeError } from "./Pgoutput.ts"

export interface XLogData {
  readonly _tag: "XLogData"
  /** Where this message's WAL data starts (0 for pgoutput's transaction-level messages such as Commit). */
  readonly walStart: Lsn
  /** The server's current end of WAL. */
  readonly walEnd: Lsn
  /** The server's clock at send time, microseconds since 2000-01-01. */
  readonly sendTime: bigint
  /** The plugin's payload: a view into the received chunk, not a copy. */
  readonly data: Buffer
}

export interface Keepalive {
  readonly _tag: "Keepalive"
  readonly walEnd: Lsn
  readonly sendTime: bigint
  /** The server asks for a status update now (or it ends the connection after `wal_sender_timeout`). */
  readonly replyRequested: boolean
}

export type ServerMessage = XLogData | Keepalive

const XLOG_HEADER = 1 + 8 + 8 + 8
const KEEPALIVE_LENGTH = 1 + 8 + 8 + 1
const STATUS_LENGTH = 1 + 8 + 8 + 8 + 8 + 1

const malformed = (chunk: Buffer, reason: string): never => {
  const messageType = chunk.length > 0 ? String.fromCharCode(chunk[0]!) : ""
  throw new PgoutputDecodeError({
    messageType,
    offset: 0,
    reason,
    message: `malformed replication message '${messageType}' (${chunk.length} bytes): ${reason}`
  })
}

/**
 * Parses one CopyData payload of a replication stream.
 *
 * @throws PgoutputDecodeError for a message that is neither XLogData nor keepalive, or too short.
 */
export const parseServerMessage = (chunk: Buffer): ServerMessage => {
  switch (chunk[0]) {
    case 0x77: // w
      if (chunk.length < XLOG_HEADER) return malformed(chunk, `XLogData needs at least ${XLOG_HEADER} bytes`)
      return {
        _tag: "XLogData",
        walStart: chunk.readBigUInt64BE(1),
        walEnd: chunk.readBigUInt64BE(9),
        sendTime: chunk.readBigInt64BE(17),
        data: chunk.subarray(XLOG_HEADER)
      }
    case 0x6b: // k
      if (chunk.length < KEEPALIVE_LENGTH) return malformed(chunk, `keepalive needs ${KEEPALIVE_LENGTH} bytes`)
      return {
        _tag: "Keepalive",
        walEnd: chunk.readBigUInt64BE(1),
        sendTime: chunk.readBigInt64BE(9),
        replyRequested: chunk[17] === 1
      }
    default:
      return malformed(chunk, "expected XLogData ('w') or primary keepalive ('k')")
  }
}

/** Where an XLogData's payload starts in its chunk, for a caller that decodes it in place (no view, no frame object). */
export const XLOG_DATA_OFFSET = XLOG_HEADER

/** An XLogData message with its whole header: `walStartOf`, `walEndOf` and the payload at {@link XLOG_DATA_OFFSET}. */
export const isXLogData = (chunk: Buffer): boolean => chunk[0] === 0x77 && chunk.length >= XLOG_HEADER

/** The `walStart` of an XLogData chunk ({@link isXLogData}). */
export const walStartOf = (chunk: Buffer): Lsn => chunk.readBigUInt64BE(1)

/** The `walEnd` of an XLogData chunk ({@link isXLogData}). */
export const walEndOf = (chunk: Buffer): Lsn => chunk.readBigUInt64BE(9)

export interface StandbyStatus {
  /** The last WAL position received and written (informational for a logical slot). */
  readonly written: Lsn
  /**
   * What the caller has made durable downstream. The server moves the slot's `confirmed_flush_lsn` to this value
   * and may recycle WAL before it, so it must never be a position that was merely received.
   */
  readonly flushed: Lsn
  readonly applied: Lsn
  /** The client's clock, microseconds since 2000-01-01. */
  readonly clientTime: bigint
  /** Ask the server to answer with a keepalive at once. */
  readonly replyRequested: boolean
}

/** Encodes a standby status update (`r`), the payload of one CopyData message. */
export const encodeStandbyStatus = (status: StandbyStatus): Buffer => {
  const buffer = Buffer.allocUnsafe(STATUS_LENGTH)
  buffer[0] = 0x72 // r
  buffer.writeBigUInt64BE(status.written, 1)
  buffer.writeBigUInt64BE(status.flushed, 9)
  buffer.writeBigUInt64BE(status.applied, 17)
  buffer.writeBigInt64BE(status.clientTime, 25)
  buffer[33] = status.replyRequested ? 1 : 0
  return buffer
}
