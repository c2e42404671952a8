import { describe, expect, it } from "@effect/vitest"
import * as Pgoutput from "../src/internal/Pgoutput.ts"
import * as Positions from "../src/internal/Positions.ts"

describe("PostgreSQL positions", () => {
  it("order as strings the way the events are emitted: snapshot rows, then transactions by commit LSN, then index", () => {
    const cp = 0x1_5442a8n
    const emitted = [
      Positions.snapshotRow(cp, 0),
      Positions.snapshotRow(cp, 1),
      Positions.snapshotRow(cp, 2, true),
      Positions.change(cp, 0),
      Positions.change(cp, 15),
      Positions.change(cp, 16),
      Positions.change(cp + 8n, 0),
      Positions.change(0xffff_ffffn + 1n, 0)
    ]
    expect([...emitted].sort()).toEqual(emitted)
    for (const p of emitted) expect(p).toMatch(/^[0-9a-f]{32}$/)
  })

  it("read back what they were made of, the snapshot's final mark included", () => {
    expect(Positions.parse(Positions.change(0x16b3748n, 41))).toEqual({
      kind: "change",
      commitLsn: 0x16b3748n,
      index: 41n
    })
    expect(Positions.parse(Positions.snapshotRow(0x16b3748n, 7))).toEqual({
      kind: "snapshot",
      consistentPoint: 0x16b3748n,
      index: 7n,
      final: false
    })
    expect(Positions.parse(Positions.snapshotRow(0x16b3748n, 7, true))).toMatchObject({ index: 7n, final: true })
    expect(Positions.change(0x10n, 300)).toBe(Positions.inTransaction(Positions.changePrefix(0x10n), 300))
    for (const index of [0, 1, 15, 16, 0xffff_ffff, Number.MAX_SAFE_INTEGER]) {
      expect(Positions.parse(Positions.change(0x16b3748n, index))).toEqual({
        kind: "change",
        commitLsn: 0x16b3748n,
        index: BigInt(index)
      })
    }
  })

  it("refuse what is not one of theirs", () => {
    expect(Positions.parse("000000000000002a")).toBeUndefined()
    expect(Positions.parse("0".repeat(16) + "2" + "0".repeat(15))).toBeUndefined()
    expect(Positions.parse("g".repeat(32))).toBeUndefined()
  })

  it("give ids made of the source's identity and the position: the same on every replay, distinct per position and source", () => {
    const source = { connector: "postgresql", name: "shop", db: "app" }
    const idOf = Positions.eventIds(source)
    const position = Positions.change(0x16b3748n, 41)
    const id = Positions.eventIds(source)(position)
    expect(id).toBe(idOf(position))
    expect(id).toMatch(/^[0-9a-f]{12}-[0-9a-f]{32}$/)
    expect(id.endsWith(`-${position}`)).toBe(true)
    expect(idOf(Positions.change(0x16b3748n, 42))).not.toBe(id)
    expect(idOf(Positions.snapshotRow(0x16b3748n, 41))).not.toBe(id)
    expect(Positions.eventIds({ ...source, db: "other" })(position)).not.toBe(id)
    expect(Positions.eventIds({ ...source, name: "orders" })(position)).not.toBe(id)
  })

  it("print LSNs as PostgreSQL does, past 2^53 too", () => {
    expect(Pgoutput.formatLsn(0n)).toBe("0/0")
    expect(Pgoutput.formatLsn(0x153b318n)).toBe("0/153B318")
    expect(Pgoutput.formatLsn(0x1_0000_0000n)).toBe("1/0")
    expect(Pgoutput.formatLsn(0x1f_ffff_ffff_ffffn)).toBe("1FFFFF/FFFFFFFF")
    expect(Pgoutput.formatLsn(0x20_0000_0000_0001n)).toBe("200000/1")
    expect(Pgoutput.formatLsn(0xffff_ffff_ffff_ffffn)).toBe("FFFFFFFF/FFFFFFFF")
    for (const lsn of [0x153b318n, 0xabcdef_12345678n, 0xffff_ffff_ffff_ffffn]) {
      expect(Pgoutput.parseLsn(Pgoutput.formatLsn(lsn))).toBe(lsn)
    }
  })
})
