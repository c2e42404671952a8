import { describe, expect, it } from "@effect/vitest"
import { Redacted } from "effect"
import { ConfigError } from "@redflow/core/ConfigError"
import * as RedisUrl from "../src/RedisUrl.ts"

const ok = (url: string) => {
  const parsed = RedisUrl.parse(url)
  if (parsed instanceof ConfigError) throw new Error(`expected ${url} to parse: ${parsed.message}`)
  return parsed
}
const bad = (url: string) => {
  const parsed = RedisUrl.parse(url)
  if (!(parsed instanceof ConfigError)) throw new Error(`expected ${url} to be rejected`)
  return parsed
}

describe("RedisUrl.parse", () => {
  it("reads user, password, host, port and db, keeping the password redacted", () => {
    const u = ok("redis://app:s3cr%40t@cache.internal:6380/2")
    expect(u.kind).toBe("standalone")
    expect(u.tls).toBe(false)
    expect(u.hosts).toEqual([{ host: "cache.internal", port: 6380 }])
    expect(u.username).toBe("app")
    expect(Redacted.value(u.password!)).toBe("s3cr@t")
    expect(String(u.password)).not.toContain("s3cr")
    expect(u.db).toBe(2)
    expect(RedisUrl.describe(u)).toBe("redis://app:***@cache.internal:6380/2")
  })

  it("defaults the port and accepts a password without a user", () => {
    const u = ok("rediss://:pw@localhost")
    expect(u.tls).toBe(true)
    expect(u.hosts).toEqual([{ host: "localhost", port: 6379 }])
    expect(u.username).toBeUndefined()
    expect(Redacted.value(u.password!)).toBe("pw")
  })

  it("reads sentinel and cluster forms", () => {
    const s = ok("redis+sentinel://10.0.0.1:26379,10.0.0.2/mymaster/1")
    expect(s.kind).toBe("sentinel")
    expect(s.hosts).toEqual([
      { host: "10.0.0.1", port: 26379 },
      { host: "10.0.0.2", port: 26379 }
    ])
    expect(s.masterName).toBe("mymaster")
    expect(s.db).toBe(1)
    const c = ok("redis+cluster://a:7000,b:7001,[::1]:7002")
    expect(c.kind).toBe("cluster")
    expect(c.hosts.map((h) => h.host)).toEqual(["a", "b", "::1"])
  })

  it.each([
    ["", "empty"],
    ["localhost:6379", "missing scheme"],
    ["http://localhost", "unknown scheme"],
    ["redis://localhost:99999", "port 99999"],
    ["redis://localhost/x", 'database "x"'],
    ["redis://a:1,b:2", "several hosts"],
    ["redis+sentinel://a:26379", "master name"],
    ["redis+cluster://a:7000/3", "only database 0"]
  ])("rejects %j naming what is wrong (%s)", (url, what) => {
    const e = bad(url)
    expect(e).toMatchObject({ _tag: "ConfigError", component: "RedisConnection", path: ["url"] })
    expect(e.reason).toContain(what)
    expect(e.message).toContain("expected redis://")
  })

  it("never puts the password in a rejection message", () => {
    expect(bad("redis://u:hunter2@host:0").message).not.toContain("hunter2")
  })
})
