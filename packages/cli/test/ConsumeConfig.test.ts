/**
 * `redflow consume` with options that cannot work: refused with exit 2 and one line naming the flag, before
 * anything is read or written (and before connecting).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { run, unique, withClient } from "./support.ts"

let server: Awaited<ReturnType<typeof RedisTestServer.start>>

beforeAll(async () => {
  server = await RedisTestServer.start()
})

afterAll(async () => {
  await server?.stop()
})

describe("redflow consume: configuration errors", () => {
  it("--dead-letter equal to --stream exits 2 with one line, and dead-letters nothing into the stream", async () => {
    const stream = unique("dlq-loop")
    await withClient(server.url, (c) => c.xadd(stream, "*", "event", "{not json", "id", "bad-1"))
    const free = await RedisTestServer.freePort()
    const [reachable, unreachable] = await Promise.all(
      [server.url, `redis://127.0.0.1:${free}`].map((url) =>
        run(
          ["consume", "--redis", url, "--stream", stream, "--group", "g", "--consumer", "w1", "--dead-letter", stream],
          {
            timeoutMs: 60_000
          }
        )
      )
    )
    for (const r of [reachable!, unreachable!]) {
      expect(r.code, r.stderr).toBe(2)
      expect(r.stderr).toMatch(/^redflow: error: --dead-letter: must not be the stream it consumes/)
      expect(r.stderr).toContain(JSON.stringify(stream))
      expect(r.stderr.trim().split("\n")).toHaveLength(1)
    }
    // The bad entry is still the only one, and no group was created.
    await withClient(server.url, async (c) => {
      expect(await c.xlen(stream)).toBe(1)
      expect(await c.xinfo("GROUPS", stream)).toEqual([])
    })
  })
})
