/**
 * What the `redflow` commands say, as a user runs them: a child process per command, against a real Redis (split
 * from Cli.test.ts so the two files run side by side).
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { inTerminal, run, start, unique, waitFor, withClient } from "./support.ts"

let server: Awaited<ReturnType<typeof RedisTestServer.start>>
let secured: RedisTestServer.SpawnedServer
let dir: string

beforeAll(async () => {
  ;[server, secured] = await Promise.all([
    RedisTestServer.start(),
    RedisTestServer.spawnRedisServer({ args: ["--requirepass", "s3cret"] })
  ])
  dir = mkdtempSync(join(tmpdir(), "redflow-cli-"))
})

afterAll(async () => {
  await Promise.all([server?.stop(), secured?.stop()])
  if (dir) rmSync(dir, { recursive: true, force: true })
})

describe("redflow: what the commands say", () => {
  it("produce without --checkpoint says the checkpoint was not saved; with one, names the file", async () => {
    const stream = unique("no-ckpt")
    const file = join(dir, `${stream}.json`)
    const [memory, saved] = await Promise.all([
      run(["produce", "--redis", server.url, "--stream", stream, "--events", "200"]),
      run(["produce", "--redis", server.url, "--stream", `${stream}.f`, "--events", "200", "--checkpoint", file])
    ])
    expect(memory.code, memory.stderr).toBe(0)
    expect(memory.stdout).not.toMatch(/^checkpoint: event/m)
    expect(memory.stdout).toContain(
      "checkpoint: not saved (no --checkpoint FILE: running the command again starts from the first event); delivered through event 200 of 200"
    )
    expect(saved.code, saved.stderr).toBe(0)
    expect(saved.stdout).toContain(`checkpoint: event 200 of 200 (${file})`)
  })

  it("a missing consumer group is said plainly, with how to list or create one", async () => {
    const stream = unique("nogroup")
    await withClient(server.url, (c) => c.xadd(stream, "*", "a", "1"))
    const [pending, claim, claimIds, noStream] = await Promise.all([
      run(["stream", "pending", stream, "nope", "--redis", server.url]),
      run(["stream", "claim", stream, "nope", "w2", "--redis", server.url]),
      run(["stream", "claim", stream, "nope", "w2", "0-1", "--redis", server.url]),
      run(["stream", "pending", `${stream}.missing`, "nope", "--redis", server.url])
    ])
    for (const r of [pending, claim, claimIds]) {
      expect(r.code, r.stderr).toBe(1)
      expect(r.stderr).toBe(
        `redflow: error: consumer group "nope" does not exist on stream "${stream}": \`redflow stream groups ${stream}\` lists its groups; \`redflow consume --stream ${stream} --group nope …\` (or XGROUP CREATE ${stream} nope 0) creates it\n`
      )
      expect(r.stderr).not.toContain("NOGROUP")
    }
    expect(noStream.code).toBe(1)
    expect(noStream.stderr).toBe(`redflow: error: stream "${stream}.missing" does not exist\n`)
  })

  it("stream trim --maxlen (approximate) reaches about the bound on a long stream, past Redis's per-call limit", async () => {
    const stream = unique("trim-long")
    await withClient(server.url, async (c) => {
      for (let i = 0; i < 25; i++) {
        const pipeline = c.pipeline()
        for (let j = 0; j < 1000; j++) pipeline.xadd(stream, "*", "n", String(i * 1000 + j))
        await pipeline.exec()
      }
    })
    const r = await run(["stream", "trim", stream, "--maxlen", "1000", "--redis", server.url, "--json"])
    expect(r.code, r.stderr).toBe(0)
    const out = JSON.parse(r.stdout)
    const length = await withClient(server.url, (c) => c.xlen(stream))
    expect(out).toMatchObject({ lengthBefore: 25_000, length, removed: 25_000 - length })
    // Within one radix-tree node (stream-node-max-entries, 100 by default) of the bound; it took several calls.
    expect(length).toBeGreaterThanOrEqual(1000)
    expect(length).toBeLessThan(1100)
    expect(out.calls).toBeGreaterThan(1)
  })

  it("an unknown subcommand prints one error, not a second one about the flags after it", async () => {
    const r = await run(["stream", "frob", "--redis", server.url])
    expect(r.code).toBe(2)
    expect(r.stderr).toBe(
      'redflow: error: Unknown subcommand "frob" for "redflow stream"\nRun `redflow stream --help` for the flags and what they expect.\n'
    )
  })

  it("the demo without any Redis says what to do, not what the tests need", async () => {
    // No redis-server on PATH, no REDIS_URL, no Docker engine (DOCKER_HOST points nowhere).
    const r = await run(["demo", "--source", "synthetic", "--events", "10"], {
      env: { PATH: dirname(process.execPath), DOCKER_HOST: "unix:///nonexistent/docker.sock" }
    })
    expect(r.code, r.stderr).toBe(1)
    expect(r.stderr).toMatch(/^redflow: error: no Redis to run the demo on: pass --redis URL or set REDIS_URL/)
    expect(r.stderr).not.toMatch(/\btests?\b/i)
    expect(r.stderr.trim().split("\n")).toHaveLength(1)
    // The default source (auto): as root, PostgreSQL cannot be started here either (no runuser on PATH), so it says
    // so and falls back to the synthetic source; either way the error is the missing Redis, not PostgreSQL's.
    const auto = await run(["demo", "--events", "10"], {
      env: { PATH: dirname(process.execPath), DOCKER_HOST: "unix:///nonexistent/docker.sock" }
    })
    expect(auto.code, auto.stderr).toBe(1)
    expect(auto.stdout).toMatch(
      process.getuid?.() === 0
        ? /^PostgreSQL could not be started \(.+\): running the synthetic source instead/
        : /^(PostgreSQL could not be started|PostgreSQL \S+ started|No PostgreSQL binaries found)/
    )
    expect(auto.stderr).toMatch(/^redflow: error: no Redis to run the demo on/)
  })

  it("the demo's closing hint is a command that can be pasted: no redacted password in it", async () => {
    const { host, port } = secured
    const r = await run([
      "demo",
      "--source",
      "synthetic",
      "--redis",
      `redis://:s3cret@${host}:${port}`,
      "--events",
      "100",
      "--metrics-port",
      "0"
    ])
    expect(r.code, r.stderr).toBe(0)
    const hint = r.stdout.split("\n").find((l) => l.startsWith("Inspect them with: "))!
    expect(hint).toBeDefined()
    expect(hint).not.toContain("***")
    expect(hint).not.toContain("s3cret")
    // Pasted as it says (with REDIS_URL set to the URL), it works.
    const command = /^Inspect them with: redflow (stream info \S+)/.exec(hint)![1]!.split(" ")
    const pasted = await run(command, { env: { REDIS_URL: `redis://:s3cret@${host}:${port}` } })
    expect(pasted.code, pasted.stderr).toBe(0)
    expect(pasted.stdout).toMatch(/length\s+\d+/)
    // Without a password, the hint carries --redis as is.
    const plain = await run([
      "demo",
      "--source",
      "synthetic",
      "--redis",
      server.url,
      "--events",
      "100",
      "--metrics-port",
      "0"
    ])
    expect(plain.stdout).toMatch(
      new RegExp(`Inspect them with: redflow stream info \\S+ --redis redis://${server.host}:${server.port}\\n`)
    )
  })

  it("consume: events/s is the recent rate (0 while idle), and the summary's rate is over the time spent consuming", async () => {
    const stream = unique("idle-rate")
    const produced = await run(["produce", "--redis", server.url, "--stream", stream, "--events", "500"])
    expect(produced.code, produced.stderr).toBe(0)
    const worker = start([
      "consume",
      "--redis",
      server.url,
      "--stream",
      stream,
      "--group",
      "g",
      "--consumer",
      "c",
      "--json"
    ])
    const lines = () => worker.out.stderr.split("\n").filter((l) => l.startsWith("redflow: consumed "))
    // A line once all 500 are consumed, then the next one (5 s later): the worker was idle in between.
    const all = await waitFor(() => {
      const i = lines().findIndex((l) => l.startsWith("redflow: consumed 500 events"))
      return i >= 0 ? i : undefined
    }, 120_000)
    const idle = await waitFor(() => lines()[all + 1], 60_000)
    expect(idle).toMatch(/^redflow: consumed 500 events · 0 events\/s · pending 0$/)
    worker.child.kill("SIGTERM")
    const done = await worker.done
    expect(done.code, done.stderr).toBe(0)
    const summary = JSON.parse(done.stdout)
    expect(summary.processed).toBe(500)
    // The rate counts the time until the last event, not the idle seconds after it.
    expect(summary.busyMs).toBeLessThan(summary.durationMs)
    expect(summary.eventsPerSecond).toBe(Math.round((500 * 1000) / summary.busyMs))
    expect(summary.eventsPerSecond * (summary.durationMs / 1000)).toBeGreaterThan(500)
  })

  it("produce: events/s is the recent rate, 0 while Redis is stopped (not a fading average)", async () => {
    const own = await RedisTestServer.spawnRedisServer()
    const args = ["produce", "--redis", own.url, "--stream", unique("stall"), "--events", "1000000", "--rate", "500"]
    const producer = start(args)
    const lines = () => producer.out.stderr.split("\n").filter((l) => l.startsWith("redflow: produced "))
    try {
      await waitFor(() => (lines().some((l) => !l.includes("· 0 events/s")) ? true : undefined), 120_000)
      process.kill(own.pid, "SIGSTOP")
      const stoppedAt = lines().length
      // The first line after the stop may count batches committed just before it; the next one counts none.
      const stalled = await waitFor(() => lines()[stoppedAt + 1], 120_000)
      expect(stalled).toMatch(/^redflow: produced [\d,]+\/1,000,000 events · 0 events\/s · \d+ batches$/)
    } finally {
      process.kill(own.pid, "SIGCONT")
      producer.child.kill("SIGKILL")
      await producer.done
      await own.stop()
    }
  })

  it("produce --metrics-port: /ready is 503 while Redis is down and 200 again once the sink writes again", async () => {
    // A server whose fsync'ed AOF survives its SIGKILL, restarted on the same port.
    const data = mkdtempSync(join(tmpdir(), "redflow-ready-"))
    const port = await RedisTestServer.freePort()
    const serve = () =>
      RedisTestServer.spawnRedisServer({
        port,
        args: ["--dir", data, "--appendonly", "yes", "--appendfsync", "always"]
      })
    let redis = await serve()
    const stream = unique("ready")
    const producer = start(
      ["produce", "--redis", redis.url, "--stream", stream, "--events", "1000000", "--rate", "200"].concat([
        "--metrics-port",
        "0"
      ])
    )
    const ready = async () => {
      const url = /Metrics: (http:\/\/\S+)\/metrics/.exec(producer.out.stdout)?.[1]
      if (url === undefined) return undefined
      const response = await fetch(`${url}/ready`).catch(() => undefined)
      if (response === undefined) return undefined
      const body = (await response.json()) as { status: string; reasons: Array<string> }
      return { status: response.status, body }
    }
    try {
      await waitFor(async () => ((await ready())?.status === 200 ? true : undefined), 120_000)
      process.kill(redis.pid, "SIGKILL")
      const down = await waitFor(async () => {
        const r = await ready()
        return r?.status === 503 && r.body.reasons.some((x: string) => x.startsWith("redflow is retrying after Redis"))
          ? r
          : undefined
      }, 120_000)
      expect(down.body.status).toBe("not-ready")
      await redis.stop()
      redis = await serve()
      const back = await waitFor(async () => {
        const r = await ready()
        return r?.status === 200 ? r : undefined
      }, 120_000)
      expect(back.body).toMatchObject({ status: "ready", reasons: [] })
      // It is the sink writing again: entries keep landing.
      const length = await withClient(redis.url, (c) => c.xlen(stream))
      await waitFor(
        async () => ((await withClient(redis.url, (c) => c.xlen(stream))) > length ? true : undefined),
        60_000
      )
    } finally {
      producer.child.kill("SIGKILL")
      await producer.done
      await redis.stop()
      rmSync(data, { recursive: true, force: true })
    }
  })

  it("demo: the live line never shows more consumed than produced (unthrottled, where the consumer is right behind)", async () => {
    const terminal = await inTerminal([
      "demo",
      "--source",
      "synthetic",
      "--redis",
      server.url,
      "--events",
      "300000",
      "--rate",
      "0",
      "--metrics-port",
      "0"
    ])
    try {
      const samples: Array<{ produced: number; consumed: number }> = []
      const number = (s: string) => Number(s.replaceAll(",", ""))
      await waitFor(async () => {
        const screen = await terminal.screen()
        const m = /produced ([\d,]+)\/[\d,]+ [\d,]+\/s · consumed ([\d,]+)/.exec(screen)
        if (m !== null) samples.push({ produced: number(m[1]!), consumed: number(m[2]!) })
        return (await terminal.stdout()).includes("Consumed ") ? true : undefined
      }, 120_000)
      expect(samples.length).toBeGreaterThan(10)
      expect(samples.some((s) => s.consumed > 0)).toBe(true)
      for (const s of samples) expect(s.consumed).toBeLessThanOrEqual(s.produced)
      expect(await terminal.exitCode(60_000)).toBe(0)
    } finally {
      await terminal.close()
    }
  })
})
