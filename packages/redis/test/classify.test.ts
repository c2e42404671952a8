import { describe, expect, it } from "@effect/vitest"
import { classify, connectionFailure, isOutcomeUnknown, serverRefusal } from "../src/RedisError.ts"

const reply = (message: string) => Object.assign(new Error(message), { name: "ReplyError" })
const sys = (code: string) => Object.assign(new Error(`connect ${code} 127.0.0.1:1`), { code })

describe("classify", () => {
  it.each([
    ["NOAUTH Authentication required.", "RedisAuthFailed"],
    ["WRONGPASS invalid username-password pair or user is disabled.", "RedisAuthFailed"],
    ["NOPERM this user has no permissions to run the 'xadd' command", "RedisAuthFailed"],
    ["OOM command not allowed when used memory > 'maxmemory'.", "RedisOutOfMemory"],
    ["READONLY You can't write against a read only replica.", "RedisReadOnly"],
    ["MOVED 13610 127.0.0.1:7103", "RedisClusterRedirect"],
    ["ASK 13610 127.0.0.1:7101", "RedisClusterRedirect"],
    ["LOADING Redis is loading the dataset in memory", "RedisUnavailable"],
    ["CLUSTERDOWN The cluster is down", "RedisUnavailable"],
    ["WRONGTYPE Operation against a key holding the wrong kind of value", "RedisCommandError"],
    ["ERR The ID specified in XADD is equal or smaller than the target stream top item", "RedisCommandError"]
  ])("reply %j is %s", (message, tag) => {
    expect(classify(reply(message))._tag).toBe(tag)
  })

  it("classifies by the leading code, not by a word inside the message", () => {
    // A script error whose text mentions OOM is still a command error.
    expect(classify(reply("ERR user_script:1: OOM mentioned in a key name"))._tag).toBe("RedisCommandError")
  })

  it("reads redirect details", () => {
    const e = classify(reply("MOVED 13610 127.0.0.1:7103"))
    expect(e).toMatchObject({ kind: "MOVED", slot: 13610, address: "127.0.0.1:7103" })
  })

  it("treats refused connections as unavailable with a known outcome, resets as unknown", () => {
    const refused = classify(sys("ECONNREFUSED"))
    expect(refused._tag).toBe("RedisUnavailable")
    expect(isOutcomeUnknown(refused)).toBe(false)
    const reset = classify(sys("ECONNRESET"))
    expect(reset._tag).toBe("RedisUnavailable")
    expect(isOutcomeUnknown(reset)).toBe(true)
  })

  it("treats ioredis timeouts and closed connections as unknown outcomes", () => {
    const timeout = classify(new Error("Command timed out"))
    expect(timeout._tag).toBe("RedisTimeout")
    expect(isOutcomeUnknown(timeout)).toBe(true)
    expect(isOutcomeUnknown(classify(new Error("Connection is closed.")))).toBe(true)
    expect(classify(new Error("Stream isn't writeable and enableOfflineQueue options is false"))._tag).toBe(
      "RedisUnavailable"
    )
    // What ioredis 6 rejects an in-flight pipeline with when the connection closes (seen in a Sentinel failover).
    const aborted = classify(
      Object.assign(new Error("Command aborted due to connection close"), { name: "AbortError" })
    )
    expect(aborted._tag).toBe("RedisUnavailable")
    expect(isOutcomeUnknown(aborted)).toBe(true)
  })

  it("keeps the command and key of a command error", () => {
    const e = classify(reply("WRONGTYPE Operation against a key holding the wrong kind of value"), {
      command: "EVALSHA",
      key: "orders.events"
    })
    expect(e).toMatchObject({ _tag: "RedisCommandError", code: "WRONGTYPE", command: "EVALSHA", key: "orders.events" })
    // The message a user reads names them too, unless the reply already names the key.
    expect(e.message).toBe(
      "WRONGTYPE Operation against a key holding the wrong kind of value (EVALSHA on orders.events)"
    )
    const named = classify(reply("WRONGTYPE … (HGET of the high-water mark {s}:redflow:hwm)"), {
      command: "EVALSHA",
      key: "s"
    })
    expect(named.message).toBe("WRONGTYPE … (HGET of the high-water mark {s}:redflow:hwm)")
  })

  it("treats a cluster client that is not ready as unavailable (nothing sent), not as a fatal command error", () => {
    const e = classify(new Error("Cluster isn't ready and enableOfflineQueue options is false"))
    expect(e._tag).toBe("RedisUnavailable")
    expect(isOutcomeUnknown(e)).toBe(false)
  })
})

describe("connectionFailure", () => {
  it("gives the cause and what to check", () => {
    expect(connectionFailure(sys("ECONNREFUSED"), false)).toBe(
      "connection refused (connect ECONNREFUSED 127.0.0.1:1): nothing listens on that port; " +
        "is the server running, and are the host and port right?"
    )
    expect(connectionFailure(sys("ENOTFOUND"), false)).toContain("does not resolve")
    expect(connectionFailure(sys("ETIMEDOUT"), true)).toContain("is the server speaking TLS")
    expect(connectionFailure(sys("ETIMEDOUT"), false)).not.toContain("TLS")
    const closed = Object.assign(
      new Error("Client network socket disconnected before secure TLS connection was established"),
      { code: "ECONNRESET" }
    )
    expect(connectionFailure(closed, true)).toMatch(/^TLS handshake failed \(Client network socket/)
    expect(connectionFailure(sys("EPIPE"), false)).toBe("connect EPIPE 127.0.0.1:1")
  })

  it("names the fix for a server at maxclients", () => {
    expect(serverRefusal("ERR max number of clients reached")).toContain("raise maxclients")
    expect(serverRefusal("ERR something else")).toBe("the server refused the connection: ERR something else")
  })
})
