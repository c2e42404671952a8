/**
 * The drain that the first SIGTERM / Ctrl-C starts is bounded: against a Redis that went away it says what it is
 * waiting for, and gives up after `--drain-timeout` (exit 4) or at a second signal (exit 130), saying what is left.
 */
import { describe, expect, it } from "vitest"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { start, unique, waitFor } from "./support.ts"

/** A producer writing steadily to a server of its own, that server killed under it. */
const producerWithoutRedis = async (extra: ReadonlyArray<string> = []) => {
  const server = await RedisTestServer.spawnRedisServer()
  const producer = start(
    [
      "produce",
      "--redis",
      server.url,
      "--stream",
      `${unique("drain")}.\${source.table}`,
      "--events",
      "10000000",
      "--rate",
      "2000",
      ...extra
    ],
    { timeoutMs: 120_000 }
  )
  // Started, connected and writing: the plain progress line (every 5 s off a terminal) reports events produced.
  await waitFor(() => {
    if (producer.child.exitCode !== null)
      throw new Error(`produce exited ${producer.child.exitCode}: ${producer.out.stderr}`)
    return /produced [1-9][\d,]*\//.test(producer.out.stderr) ? true : undefined
  }, 60_000)
  process.kill(server.pid, "SIGKILL")
  await server.stop()
  return { server, producer }
}

describe("a drain against a Redis that went away", () => {
  it(
    "says Redis stopped answering, gives up after --drain-timeout saying what it waited for, exits 4",
    { timeout: 240_000 },
    async () => {
      const { producer, server } = await producerWithoutRedis(["--drain-timeout", "3"])
      producer.child.kill("SIGTERM")
      const r = await producer.done
      expect(r.code, r.stderr).toBe(4)
      expect(r.stderr).toContain("draining, for at most 3 s (--drain-timeout)")
      expect(r.stderr).toContain(`Redis at ${server.url} stopped answering during the drain`)
      expect(r.stderr).toMatch(
        new RegExp(
          `the drain did not finish within 3 s \\(--drain-timeout\\): still waiting for .+; Redis at ${server.url.replace(/[./]/g, "\\$&")} does not answer \\(.+\\)\\. Stopping without it \\(exit 4\\)`
        )
      )
    }
  )

  it(
    "a second signal stops at once, saying what the drain still waited for, exits 130",
    { timeout: 240_000 },
    async () => {
      // A drain bound far beyond the test: only the second signal can end it.
      const { producer, server } = await producerWithoutRedis(["--drain-timeout", "600"])
      producer.child.kill("SIGTERM")
      await waitFor(() => (producer.out.stderr.includes("stopped answering") ? true : undefined), 60_000)
      producer.child.kill("SIGTERM")
      const r = await producer.done
      expect(r.code, r.stderr).toBe(130)
      expect(r.stderr).toMatch(
        new RegExp(
          `stopping at once \\(second signal\\) without finishing the drain: it was still waiting for .+; Redis at ${server.url.replace(/[./]/g, "\\$&")} does not answer`
        )
      )
    }
  )
})
