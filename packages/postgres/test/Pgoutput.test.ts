import { describe, expect, it } from "@effect/vitest"
import * as Pgoutput from "../src/internal/Pgoutput.ts"
import * as Protocol from "../src/internal/ReplicationProtocol.ts"

/** An INSERT of relation 16385 with the values `7`, NULL and an unchanged TOAST value. */
const insert = Buffer.concat([
  Buffer.from([0x49, 0, 0, 0x40, 0x01, 0x4e, 0, 3, 0x74, 0, 0, 0, 1]),
  Buffer.from("7"),
  Buffer.from([0x6e, 0x75])
])

/** The XLogData frame the server sends it in: `w`, walStart, walEnd, send time, then the payload. */
const xlogData = (payload: Buffer, walStart: bigint, walEnd: bigint) => {
  const header = Buffer.alloc(Protocol.XLOG_DATA_OFFSET)
  header[0] = 0x77
  header.writeBigUInt64BE(walStart, 1)
  header.writeBigUInt64BE(walEnd, 9)
  return Buffer.concat([header, payload])
}

describe("the pgoutput decoder", () => {
  it("decodes a payload in place in its XLogData frame as it decodes the payload alone", () => {
    const frame = xlogData(insert, 0x153b318n, 0x153b400n)
    expect(Protocol.isXLogData(frame)).toBe(true)
    expect(Protocol.walStartOf(frame)).toBe(0x153b318n)
    expect(Protocol.walEndOf(frame)).toBe(0x153b400n)
    const alone = Pgoutput.decode(insert)
    expect(alone).toEqual({ _tag: "Insert", relationId: 16385, new: ["7", null, Pgoutput.UnchangedToast] })
    expect(Pgoutput.decode(frame, Protocol.XLOG_DATA_OFFSET)).toEqual(alone)
    expect(Protocol.parseServerMessage(frame)).toMatchObject({ _tag: "XLogData", walStart: 0x153b318n })
  })

  it("reports a malformed payload at its offset within the payload, in place or alone", () => {
    const truncated = insert.subarray(0, insert.length - 1)
    for (const [buffer, start] of [
      [truncated, 0],
      [xlogData(truncated, 0n, 0n), Protocol.XLOG_DATA_OFFSET]
    ] as const) {
      expect(() => Pgoutput.decode(buffer, start)).toThrow(
        expect.objectContaining({
          _tag: "PgoutputDecodeError",
          messageType: "I",
          offset: truncated.length,
          message: `malformed pgoutput message 'I' at byte ${truncated.length} of ${truncated.length}: needs 1 more bytes`
        })
      )
    }
    expect(() => Pgoutput.decode(xlogData(Buffer.alloc(0), 0n, 0n), Protocol.XLOG_DATA_OFFSET)).toThrow(/empty payload/)
  })
})
