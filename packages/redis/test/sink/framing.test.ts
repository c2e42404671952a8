/**
 * The sink's framing of entry values into RESP bulk strings (`$<UTF-8 length>\r\n<bytes>\r\n` each): the one-pass
 * framer gives the same bytes as measuring each value first, for ASCII and for text whose UTF-8 length has more
 * digits than its length in UTF-16 units, and Redis stores exactly the values framed.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Net from "node:net"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Commands from "../../src/internal/commands.ts"
import { withClient } from "../support.ts"

/** The reference framing: each value measured, then written. */
const reference = (values: ReadonlyArray<string>): Buffer =>
  Buffer.concat(values.map((v) => Buffer.from(`$${Buffer.byteLength(v)}\r\n${v}\r\n`, "utf8")))

const samples: ReadonlyArray<ReadonlyArray<string>> = [
  ["0000000000000001", "0190a3c2-1b2c-8d3e-9f4a-000000000001", "c", "orders", "", '{"id":1}', ""],
  [""],
  ["a".repeat(9), "é".repeat(9), "é".repeat(5)], // 9 bytes; 18 bytes (1 → 2 digits); 10 bytes (1 → 2 digits)
  ["€".repeat(40), "😀".repeat(30), "x".repeat(99), "ü".repeat(50)], // 120 bytes (2 → 3 digits), 120, 99, 100
  ["\ud800", "a\udc00b", "ß".repeat(500) + "ok"], // lone surrogates become U+FFFD (3 bytes each)
  ["x".repeat(3000), "日本語".repeat(1000)], // 3,000 and 9,000 bytes
  ["y".repeat(40_000)] // beyond a slab's share: the measuring path
]

describe("Commands.frameEntry", () => {
  it("frames as measuring each value would, byte for byte", () => {
    for (const values of samples) expect(Commands.frameEntry(values).equals(reference(values))).toBe(true)
    // Many in a row: slices of one slab, then of the next, each still holding its own bytes afterwards.
    const many = Array.from({ length: 500 }, (_, i) => ["ü".repeat(i % 97), String(i), "z".repeat(i * 3)])
    const framed = many.map((values) => Commands.frameEntry(values))
    framed.forEach((buffer, i) => expect(buffer.equals(reference(many[i]!))).toBe(true))
  })

  it.live("Redis stores exactly the values framed", () =>
    Effect.gen(function* () {
      const server = yield* RedisTestServer.make()
      const values = samples.flat()
      // SET k<i> <value> per value, the value framed by frameEntry, sent on a raw socket.
      const parts = values.map((v, i) =>
        Buffer.concat([
          Buffer.from(`*3\r\n$3\r\nSET\r\n$${String(i).length + 1}\r\nk${i}\r\n`),
          Commands.frameEntry([v])
        ])
      )
      const { port } = new URL(server.url)
      const replies = yield* Effect.promise(
        () =>
          new Promise<string>((resolve, reject) => {
            const socket = Net.connect(Number(port), "127.0.0.1")
            let got = ""
            socket.setEncoding("latin1")
            socket.on("data", (d: string) => {
              got += d
              if (got.split("\r\n").length > values.length) {
                socket.end()
                resolve(got)
              }
            })
            socket.on("error", reject)
            socket.write(Buffer.concat(parts))
          })
      )
      expect(replies).toBe("+OK\r\n".repeat(values.length))
      const stored = yield* Effect.promise(() =>
        withClient(server.url, (c) => Promise.all(values.map((_, i) => c.get(`k${i}`))))
      )
      // What Redis holds is each value's UTF-8 (lone surrogates as U+FFFD, as any UTF-8 encoding of them).
      expect(stored).toEqual(values.map((v) => Buffer.from(v, "utf8").toString("utf8")))
    })
  )
})
