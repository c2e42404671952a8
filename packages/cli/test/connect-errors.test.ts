/**
 * `--redis` URLs that cannot work, as a user meets them: a database the server does not have, and a server that
 * cannot be reached for each real reason. Every fault is made for real.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Redis } from "ioredis"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { run, unique, withClient } from "./support.ts"

let plain: RedisTestServer.SpawnedServer
let full: RedisTestServer.SpawnedServer
let holder: Redis | undefined

beforeAll(async () => {
  ;[plain, full] = await Promise.all([
    RedisTestServer.spawnRedisServer(),
    RedisTestServer.spawnRedisServer({ args: ["--maxclients", "1"] })
  ])
  // The one client the second server takes.
  holder = new Redis(full.url, { lazyConnect: true })
  await holder.connect()
  await holder.ping()
})

afterAll(async () => {
  holder?.disconnect()
  await Promise.all([plain?.stop(), full?.stop()])
})

const options = { timeoutMs: 90_000 }

describe("redflow --redis with a database the server does not have", () => {
  it("every command exits 2 naming the database and the fix, and nothing lands in db 0", async () => {
    const url = `${plain.url}/20`
    const stream = unique("db20")
    const results = await Promise.all([
      run(["produce", "--redis", url, "--stream", stream, "--events", "50", "--guarantee", "exactly-once"], options),
      run(["consume", "--redis", url, "--stream", stream, "--group", "g", "--consumer", "c", "--count", "1"], options),
      run(["stream", "info", stream, "--redis", url], options),
      run(["demo", "--redis", url, "--events", "50"], options)
    ])
    for (const [i, r] of results.entries()) {
      const command = ["produce", "consume", "stream info", "demo"][i]
      expect(r.code, `${command}: ${r.stderr}`).toBe(2)
      expect(r.stderr).toContain("--redis: database 20")
      expect(r.stderr).toContain(`127.0.0.1:${plain.port}`)
      expect(r.stderr).toContain("ERR DB index is out of range")
      expect(r.stderr).toContain('"databases"')
    }
    // No events, no high-water key, no group: db 0 is as empty as before.
    expect(await withClient(plain.url, (client) => client.dbsize())).toBe(0)
  })
})

describe("redflow against an unreachable Redis names the server and the real cause", () => {
  it("nothing listening, a host that does not resolve, TLS against a plain server, a server at maxclients", async () => {
    const free = await RedisTestServer.freePort()
    const cases = [
      { url: `redis://127.0.0.1:${free}`, where: `127.0.0.1:${free}`, cause: ["ECONNREFUSED", "connection refused"] },
      {
        url: "redis://redflow-missing-host.invalid:6390",
        where: "redflow-missing-host.invalid:6390",
        cause: ["ENOTFOUND", "does not resolve"]
      },
      {
        url: `rediss://127.0.0.1:${plain.port}`,
        where: `127.0.0.1:${plain.port}`,
        cause: ["TLS handshake failed", "is the server speaking TLS"]
      },
      {
        url: full.url,
        where: `127.0.0.1:${full.port}`,
        cause: ["ERR max number of clients reached", "maxclients"]
      }
    ]
    const results = await Promise.all(cases.map((c) => run(["stream", "info", "s", "--redis", c.url], options)))
    for (const [i, r] of results.entries()) {
      const c = cases[i]!
      expect(r.code, `${c.url}: ${r.stderr}`).toBe(1)
      const lines = r.stderr.trim().split("\n")
      expect(lines, r.stderr).toHaveLength(1)
      expect(lines[0]).toMatch(/^redflow: error: Redis is not reachable: /)
      expect(lines[0]).toContain(c.where)
      for (const words of c.cause) expect(lines[0]).toContain(words)
      expect(lines[0]).not.toContain("enableOfflineQueue")
    }
  }, 180_000)
})
