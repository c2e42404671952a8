/**
 * `redflow produce --guarantee exactly-once` as an operator meets a write it may not finish or a high-water mark it
 * cannot trust: it exits with the documented code and a message naming the command and the key, and nothing lands.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { run, unique, withClient } from "./support.ts"

let server: RedisTestServer.SpawnedServer
let dir: string

beforeAll(async () => {
  server = await RedisTestServer.spawnRedisServer({ args: [] })
  dir = mkdtempSync(join(tmpdir(), "redflow-hwm-"))
})

afterAll(async () => {
  await server?.stop()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

describe("redflow produce: exactly-once never writes half a script, never skips by a corrupt mark", () => {
  it("a user that may not HSET: every run exits 3 naming the command and the key, and the stream stays empty", async () => {
    const stream = unique("nohset")
    await withClient(server.url, (c) => c.call("ACL", "SETUSER", "nohset", "on", ">pw", "~*", "+@all", "-hset"))
    const checkpoint = join(dir, `${stream}.ckpt`)
    const url = `redis://nohset:pw@${server.host}:${server.port}`
    for (let i = 0; i < 3; i++) {
      const r = await run(
        ["produce", "--redis", url, "--stream", stream, "--events", "100", "--guarantee", "exactly-once"].concat([
          "--checkpoint",
          checkpoint
        ]),
        { timeoutMs: 120_000 }
      )
      expect(r.code, r.stderr).toBe(3)
      expect(r.stderr).toMatch(/^redflow: error: permission denied: NOPERM .*'hset' command/)
      expect(r.stderr).toContain(`{${stream}}:redflow:hwm`)
      expect(r.stderr.trim().split("\n")).toHaveLength(1)
      expect(await withClient(server.url, (c) => c.xlen(stream))).toBe(0)
    }
    expect(existsSync(checkpoint)).toBe(false)
  })

  it("a corrupt high-water mark: exit 1 naming the key, nothing written, the checkpoint not moved", async () => {
    const stream = unique("corrupt")
    await withClient(server.url, (c) => c.hset(`{${stream}}:redflow:hwm`, "redflow", "ffffffffffffffff"))
    const checkpoint = join(dir, `${stream}.ckpt`)
    const r = await run(
      ["produce", "--redis", server.url, "--stream", stream, "--events", "1000", "--guarantee", "exactly-once"].concat([
        "--checkpoint",
        checkpoint
      ]),
      { timeoutMs: 120_000 }
    )
    expect(r.code, r.stderr).toBe(1)
    expect(r.stderr).toContain("HighWaterMarkError")
    expect(r.stderr).toContain(`{${stream}}:redflow:hwm`)
    expect(r.stdout + r.stderr).not.toContain("already written")
    expect(await withClient(server.url, (c) => c.xlen(stream))).toBe(0)
    expect(existsSync(checkpoint)).toBe(false)
  })
})
