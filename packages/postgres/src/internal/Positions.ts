/**
 * The positions of PostgreSQL events: 32 lowercase hex digits, `LSN (16) · kind (1) · index (15)`.
 *
 * - A change: the commit LSN of its transaction, kind `1`, its index in the transaction (0-based). Transactions
 *   are decoded in commit order, so positions increase in emission order; per-change LSNs do not (POSTGRES-FACTS).
 * - A snapshot row: the slot's consistent point minus one, kind `0`, the row's index in the whole snapshot. Every
 *   transaction streamed after the snapshot commits at or after the consistent point, so the snapshot sorts first.
 *   (WAL records are 8-byte aligned: no commit record starts at `consistent point - 1`.) The snapshot's last row
 *   also has the top bit of its index set (`FINAL`): a checkpoint there says the snapshot finished, and it still
 *   sorts after every other row of it.
 *
 * Equal widths make string order the numeric order, so the sink's high-water compare needs nothing new.
 *
 * @internal
 */
import type * as CdcEvent from "@redflow/core/CdcEvent"
import type * as Position from "@redflow/core/Position"
import { createHash } from "node:crypto"
import type { Lsn } from "./Pgoutput.ts"

export const WIDTH = 32
const INDEX_LIMIT = 16n ** 15n
/** The final mark of a snapshot's last row: the index field's top bit (rows never count that high). */
const FINAL = 1n << 59n

const hex = (n: bigint, width: number): string => n.toString(16).padStart(width, "0")

export const change = (commitLsn: Lsn, index: number): Position.Position =>
  inTransaction(changePrefix(commitLsn), index)

/** The part of a change's position its whole transaction shares: formatted once per transaction. */
export const changePrefix = (commitLsn: Lsn): string => `${hex(commitLsn, 16)}1`

/** `ZEROS[n]` is `n` zeros: the padding of an index, without a `padStart` per change. */
const ZEROS = Array.from({ length: 16 }, (_, n) => "0".repeat(n))

/** A change's position from its transaction's prefix ({@link changePrefix}) and its index (a safe integer). */
export const inTransaction = (prefix: string, index: number): Position.Position => {
  const digits = index.toString(16)
  return `${prefix}${ZEROS[15 - digits.length]}${digits}` as Position.Position
}

export const snapshotRow = (consistentPoint: Lsn, index: number, final = false): Position.Position =>
  `${hex(consistentPoint - 1n, 16)}0${hex(final ? BigInt(index) | FINAL : BigInt(index), 15)}` as Position.Position

export type Parsed =
  | { readonly kind: "change"; readonly commitLsn: Lsn; readonly index: bigint }
  | { readonly kind: "snapshot"; readonly consistentPoint: Lsn; readonly index: bigint; readonly final: boolean }

/** Reads a position back; `undefined` when it is not one this source makes (another source's checkpoint). */
export const parse = (position: string): Parsed | undefined => {
  if (position.length !== WIDTH || !/^[0-9a-f]+$/.test(position)) return undefined
  const lsn = BigInt(`0x${position.slice(0, 16)}`)
  const index = BigInt(`0x${position.slice(17)}`)
  if (index >= INDEX_LIMIT) return undefined
  switch (position[16]) {
    case "1":
      return { kind: "change", commitLsn: lsn, index }
    case "0":
      return { kind: "snapshot", consistentPoint: lsn + 1n, index: index & ~FINAL, final: (index & FINAL) !== 0n }
    default:
      return undefined
  }
}

/**
 * The events' ids, without a hash per event: `<12 hex digits>-<position>`, the 12 digits being the start of the
 * SHA-1 of the source's identity (connector, name, database), computed once here, and the position the event's own
 * (32 hex digits, above). A position is unique within a source and the same on every replay, so the id is too; two
 * sources' ids differ in their first part (unless their identities' hashes share 48 bits). It is never a UUID (the
 * ids of `CdcEvent.eventId` and of the synthetic source), whose first group has 8 digits.
 */
export const eventIds = (
  source: Pick<CdcEvent.Source, "connector" | "name" | "db">
): ((position: Position.Position) => string) => {
  const prefix = `${createHash("sha1")
    .update(`${source.connector}\u0000${source.name}\u0000${source.db}`)
    .digest("hex")
    .slice(0, 12)}-`
  return (position) => prefix + position
}
