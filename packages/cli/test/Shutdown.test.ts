/**
 * The drain that the first SIGTERM / Ctrl-C starts is bounded: against a Redis that went away it says what it is
 * waiting for, and gives up after `--drain-timeout` (exit 4) or at a second signal (exit 130), saying what is left.
 * And a run whose scopes do not close once it is told to stop still exits: after the close grace, or at a third
 * signal at once.
 */
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
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

const STUCK = fileURLToPath(new URL("./fixtures/stuck.ts", import.meta.url))

/** The fixture whose work never ends and whose scope never closes, once it says its handlers are installed. */
const stuck = async (mode: "drain" | "plain") => {
  const child = spawn(process.execPath, [STUCK, mode], { stdio: ["ignore", "pipe", "pipe"] })
  const out = { stdout: "", stderr: "" }
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out.stdout += d))
  child.stderr.setEncoding("utf8").on("data", (d: string) => (out.stderr += d))
  const done = new Promise<number | null>((resolve) => child.on("exit", (code) => setImmediate(() => resolve(code))))
  await waitFor(() => {
    if (child.exitCode !== null) throw new Error(`the fixture exited ${child.exitCode}: ${out.stderr}`)
    return out.stdout.includes("ready") ? true : undefined
  }, 60_000)
  return { child, out, done }
}

describe("a run whose scopes do not close", () => {
  it("without a drain: the first signal stops it, and it exits 130 once the close grace is over", async () => {
    const run = await stuck("plain")
    run.child.kill("SIGTERM")
    expect(await run.done, run.out.stderr).toBe(130)
    expect(run.out.stderr).toContain(
      "redflow: error: still closing (acknowledgements in flight, connections, servers) 5 s after stopping; exiting now"
    )
  })

  it("a drain cut short by a second signal: says what it waited for, exits 130 after the close grace", async () => {
    const run = await stuck("drain")
    run.child.kill("SIGTERM")
    await waitFor(() => (run.out.stderr.includes("redflow: draining") ? true : undefined), 60_000)
    run.child.kill("SIGTERM")
    expect(await run.done, run.out.stderr).toBe(130)
    expect(run.out.stderr).toContain(
      "stopping at once (second signal) without finishing the drain: it was still waiting for the fixture, which never finishes (exit 130)."
    )
    expect(run.out.stderr).toContain("still closing")
  })

  it("a third signal stops at once, without waiting for the scopes: exit 130", async () => {
    const run = await stuck("drain")
    run.child.kill("SIGTERM")
    await waitFor(() => (run.out.stderr.includes("redflow: draining") ? true : undefined), 60_000)
    run.child.kill("SIGTERM")
    await waitFor(() => (run.out.stderr.includes("second signal") ? true : undefined), 60_000)
    run.child.kill("SIGTERM")
    expect(await run.done, run.out.stderr).toBe(130)
    expect(run.out.stderr).toContain("redflow: stopped at once (third signal), without closing connections and servers")
  })
})
