/**
 * The `redflow` command line as a user runs it: a child process per command, against a real Redis, checking the
 * exit code, what it prints and what lands in Redis.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { entryIds, inTerminal, run, start, unique, waitFor, withClient } from "./support.ts"

const TABLES = ["customers", "orders", "payments"] as const

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

/** Every event id of a run of `count` synthetic events, in order. */
const expectedIds = (count: number) => Array.from({ length: count }, (_, i) => SyntheticSource.eventAt(i + 1).id)

describe("redflow: arguments and exit codes", () => {
  it("--help works on every command and exits 0", async () => {
    const commands = [
      [],
      ["produce"],
      ["consume"],
      ["demo"],
      ["stream"],
      ["stream", "info"],
      ["stream", "groups"],
      ["stream", "pending"],
      ["stream", "trim"],
      ["stream", "claim"]
    ]
    const results = await Promise.all(commands.map((c) => run([...c, "--help"])))
    results.forEach((r, i) => {
      const path = ["redflow", ...commands[i]!].join(" ")
      expect(r.code, `${path} --help: ${r.stderr}`).toBe(0)
      expect(r.stdout).toContain("USAGE")
      expect(r.stdout).toContain(path)
    })
    expect(results[1]!.stdout).toContain("--checkpoint FILE")
    expect(results[3]!.stdout).toContain("--events")
  })

  it("a bad flag exits 2 with one line naming the flag and what it expects", async () => {
    const cases: Array<[Array<string>, RegExp]> = [
      [["produce", "--redis", server.url, "--stream", "s", "--events", "abc"], /--events.*"abc"/],
      [["produce", "--redis", server.url, "--stream", "s", "--events", "-3"], /--events.*integer >= 0.*got -3/],
      [["produce", "--redis", server.url, "--stream", "s", "--events", "5", "--guarantee", "twice"], /--guarantee/],
      [["produce", "--redis", server.url, "--events", "5"], /Missing required flag: --stream/],
      [["produce", "--redis", server.url, "--stream", "s", "--events", "5", "--bogus"], /--bogus/],
      [["produce", "--redis", "http://x", "--stream", "s", "--events", "5"], /--redis: Invalid Redis URL/],
      [["produce", "--stream", "s", "--events", "5"], /--redis: required: a Redis URL/],
      [
        ["produce", "--redis", server.url, "--stream", "s.${nope}", "--events", "5"],
        /--stream: .*unknown variable \$\{nope\}/
      ],
      [["produce", "--redis", server.url, "--stream", "s", "--events", "5", "--rate", "-1"], /--rate.*>= 0.*got -1/],
      [["demo", "--redis", server.url, "--events", "5", "--rate", "-1"], /--rate.*>= 0.*got -1/],
      [["produce", "--redis", server.url, "--stream", "s", "--events", "5", "--envelope", "avro"], /--envelope/],
      [
        ["consume", "--redis", server.url, "--stream", "s", "--group", "g", "--consumer", "c", "--envelope", "x"],
        /--envelope/
      ],
      [["demo", "--events", "5", "--envelope", "avro"], /--envelope/],
      [
        ["produce", "--redis", server.url, "--stream", "s", "--events", "5", "--metrics-port", "70000"],
        /--metrics-port.*0-65535/
      ],
      [
        ["consume", "--redis", server.url, "--stream", "s", "--group", "g", "--consumer", "c", "--metrics-port", "-1"],
        /--metrics-port.*0-65535/
      ],
      [["stream", "trim", "s", "--redis", server.url], /--maxlen: give either --maxlen N or --minid ID/],
      [["consume", "--redis", server.url, "--stream", "s", "--consumer", "c"], /Missing required flag: --group/],
      [["demo", "--events", "many"], /--events.*"many"/]
    ]
    const results = await Promise.all(cases.map(([args]) => run(args)))
    results.forEach((r, i) => {
      const [args, pattern] = cases[i]!
      expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(2)
      expect(r.stderr).toMatch(pattern)
      expect(r.stderr).not.toMatch(/\n\s+at /) // no stack trace
      expect(r.stderr.trim().split("\n").length).toBeLessThanOrEqual(2)
    })
  })

  it("a wrong or missing password exits 3", async () => {
    const { host, port } = secured
    const [wrong, missing, admin] = await Promise.all([
      run(["produce", "--redis", `redis://:nope@${host}:${port}`, "--stream", "s", "--events", "5"]),
      run(["produce", "--stream", "s", "--events", "5"], { env: { REDIS_URL: `redis://${host}:${port}` } }),
      run(["stream", "info", "s", "--redis", `redis://default:nope@${host}:${port}`])
    ])
    for (const r of [wrong, missing, admin]) {
      expect(r.code, r.stderr).toBe(3)
      expect(r.stderr).toMatch(/^redflow: error: authentication failed: (WRONGPASS|NOAUTH)/)
      expect(r.stderr.trim().split("\n")).toHaveLength(1)
    }
    expect(wrong.stderr).not.toContain("nope")
    // The right password works.
    const ok = await run([
      "produce",
      "--redis",
      `redis://:s3cret@${host}:${port}`,
      "--stream",
      unique("auth"),
      "--events",
      "5"
    ])
    expect(ok.code, ok.stderr).toBe(0)
  })

  it("any other fatal error exits 1 with one line; --verbose adds the cause", async () => {
    const key = unique("string-key")
    await withClient(server.url, (c) => c.set(key, "not a stream"))
    const free = await RedisTestServer.freePort()
    const [wrongType, verbose, unreachable, missing] = await Promise.all([
      run(["produce", "--redis", server.url, "--stream", key, "--events", "10"]),
      run(["produce", "--redis", server.url, "--stream", key, "--events", "10", "--verbose"]),
      run(["stream", "info", "s", "--redis", `redis://127.0.0.1:${free}`]),
      run(["stream", "info", unique("missing"), "--redis", server.url])
    ])
    expect(wrongType.code).toBe(1)
    expect(wrongType.stderr).toMatch(/^redflow: error: RedisCommandError: WRONGTYPE/)
    expect(wrongType.stderr.trim().split("\n")).toHaveLength(1)
    expect(verbose.code).toBe(1)
    expect(verbose.stderr.trim().split("\n").length).toBeGreaterThan(1)
    expect(verbose.stderr).toContain("WRONGTYPE")
    expect(unreachable.code).toBe(1)
    expect(unreachable.stderr).toMatch(/redflow: error: Redis is not reachable/)
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/redflow: error: stream ".*" does not exist/)
  })
})

describe("redflow produce", () => {
  it("writes N events across the table streams; --json reports what landed", async () => {
    const prefix = unique("produce")
    const r = await run([
      "produce",
      "--redis",
      server.url,
      "--stream",
      `${prefix}.\${source.table}`,
      "--events",
      "3000",
      "--batch-size",
      "200",
      "--json"
    ])
    expect(r.code, r.stderr).toBe(0)
    const summary = JSON.parse(r.stdout)
    expect(summary).toMatchObject({
      command: "produce",
      events: 3000,
      written: 3000,
      target: 3000,
      complete: true,
      resumedFrom: null,
      checkpoint: { sequence: 3000 }
    })
    expect(summary.batches).toBeGreaterThanOrEqual(15)
    expect(summary.streams.map((s: { stream: string }) => s.stream)).toEqual(TABLES.map((t) => `${prefix}.${t}`))
    let total = 0
    for (const s of summary.streams) {
      const length = await withClient(server.url, (c) => c.xlen(s.stream))
      expect(s.length).toBe(length)
      expect(s.written).toBe(length)
      total += length
    }
    expect(total).toBe(3000)
  })

  it("not on a terminal, a long run prints a plain progress line every 5 s", async () => {
    const prefix = unique("progress")
    const r = await run([
      "produce",
      "--redis",
      server.url,
      "--stream",
      `${prefix}.events`,
      "--events",
      "3000",
      "--rate",
      "500"
    ])
    expect(r.code, r.stderr).toBe(0)
    const lines = r.stderr.split("\n").filter((l) => l.startsWith("redflow: produced "))
    expect(lines.length).toBeGreaterThanOrEqual(1)
    expect(lines[0]).toMatch(/^redflow: produced [\d,]+\/3,000 events · [\d,]+ events\/s · \d+ batches$/)
    // No terminal control codes in a log.
    expect(r.stderr).not.toContain("\x1b[")
  })

  for (const guarantee of ["at-least-once", "exactly-once"] as const) {
    it(`${guarantee}: SIGKILL mid-run, then the same command again, ends with all N events${guarantee === "exactly-once" ? " and no duplicates" : ""}`, async () => {
      const prefix = unique(guarantee)
      const checkpoint = join(dir, `${prefix}.json`)
      const events = 4000
      const args = [
        "produce",
        "--redis",
        server.url,
        "--stream",
        `${prefix}.\${source.table}`,
        "--events",
        String(events),
        "--rate",
        "4000",
        "--batch-size",
        "50",
        "--guarantee",
        guarantee,
        "--checkpoint",
        checkpoint,
        "--json"
      ]
      const first = start(args)
      const sequence = () =>
        existsSync(checkpoint)
          ? Number.parseInt(JSON.parse(readFileSync(checkpoint, "utf8")).checkpoints.redflow, 16)
          : undefined
      const atKill = await waitFor(() => {
        const s = sequence()
        return s !== undefined && s >= 1000 ? s : undefined
      })
      first.child.kill("SIGKILL")
      const killed = await first.done
      expect(killed.signal).toBe("SIGKILL")
      expect(atKill).toBeLessThan(events)
      const before = await Promise.all(TABLES.map((t) => entryIds(server.url, `${prefix}.${t}`)))
      expect(before.flat().length).toBeLessThan(events)

      const second = await run(args)
      expect(second.code, second.stderr).toBe(0)
      const summary = JSON.parse(second.stdout)
      expect(summary.resumedFrom).toBeGreaterThanOrEqual(atKill)
      expect(summary.complete).toBe(true)
      expect(summary.checkpoint.sequence).toBe(events)
      expect(summary.events).toBe(events - summary.resumedFrom)

      const ids = (await Promise.all(TABLES.map((t) => entryIds(server.url, `${prefix}.${t}`)))).flat()
      const expected = expectedIds(events)
      // None missing.
      expect(new Set(ids)).toEqual(new Set(expected))
      if (guarantee === "exactly-once") {
        // None duplicated: entries written between the last checkpoint and the kill were skipped on the re-run.
        expect(ids.length).toBe(events)
        expect(summary.written + before.flat().length).toBe(events)
      } else {
        expect(ids.length).toBeGreaterThanOrEqual(events)
      }
    })
  }
})

describe("redflow stream", () => {
  it("info, groups, pending, claim and trim on a stream with a consumer group", async () => {
    const stream = unique("admin")
    const produced = await run(["produce", "--redis", server.url, "--stream", stream, "--events", "500"])
    expect(produced.code, produced.stderr).toBe(0)
    await withClient(server.url, async (c) => {
      await c.xgroup("CREATE", stream, "workers", "0")
      await c.xreadgroup("GROUP", "workers", "w1", "COUNT", 30, "STREAMS", stream, ">")
    })
    const cli = (...args: Array<string>) => run(["stream", ...args, "--redis", server.url])

    const info = await cli("info", stream, "--json")
    expect(info.code, info.stderr).toBe(0)
    expect(JSON.parse(info.stdout)).toMatchObject({ stream, length: 500, groups: 1, entriesAdded: 500 })
    const infoText = await cli("info", stream)
    expect(infoText.stdout).toMatch(/length\s+500/)

    const groups = await cli("groups", stream, "--json")
    expect(JSON.parse(groups.stdout).groups).toEqual([
      expect.objectContaining({ name: "workers", consumers: 1, pending: 30, lag: 470 })
    ])

    const pending = await cli("pending", stream, "workers", "--count", "5", "--json")
    const p = JSON.parse(pending.stdout)
    expect(p).toMatchObject({ pending: 30, consumers: [{ name: "w1", pending: 30 }] })
    expect(p.entries).toHaveLength(5)
    expect(p.entries[0]).toMatchObject({ consumer: "w1", deliveries: 1 })

    // Nothing is idle for a minute yet: the default --min-idle claims nothing.
    const none = await cli("claim", stream, "workers", "w2", "--json")
    expect(JSON.parse(none.stdout).claimed).toEqual([])
    const two = await cli(
      "claim",
      stream,
      "workers",
      "w2",
      p.entries[0].id,
      p.entries[1].id,
      "--min-idle",
      "0",
      "--json"
    )
    expect(JSON.parse(two.stdout).claimed).toEqual([p.entries[0].id, p.entries[1].id])
    const rest = await cli("claim", stream, "workers", "w3", "--min-idle", "0", "--json")
    expect(JSON.parse(rest.stdout).claimed).toHaveLength(30)
    const after = JSON.parse((await cli("pending", stream, "workers", "--json")).stdout)
    expect(after.consumers).toEqual([{ name: "w3", pending: 30 }])

    const exact = await cli("trim", stream, "--maxlen", "100", "--exact", "--json")
    expect(exact.code, exact.stderr).toBe(0)
    expect(JSON.parse(exact.stdout)).toMatchObject({ removed: 400, lengthBefore: 500, length: 100 })
    expect(await withClient(server.url, (c) => c.xlen(stream))).toBe(100)
    const text = await cli("trim", stream, "--maxlen", "10")
    expect(text.code).toBe(0)
    expect(text.stdout).toMatch(/removed \d+ entries \(approximate\), length 100 → \d+/)
  })
})

/** Listens on a free port (all interfaces, as the metrics server does) until `close`. */
const takePort = async () => {
  const blocker = Net.createServer()
  await new Promise<void>((resolve) => blocker.listen(0, () => resolve()))
  return {
    port: (blocker.address() as Net.AddressInfo).port,
    close: () => new Promise<void>((resolve) => blocker.close(() => resolve()))
  }
}

/** The `redflow …` lines of a command's --help EXAMPLES section. */
const examplesOf = (help: string) =>
  help
    .slice(help.indexOf("EXAMPLES"))
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.startsWith("redflow "))

describe("redflow: one meaning per flag across commands", () => {
  it("every --help example runs in bash as written (single quotes keep ${…} templates)", async () => {
    const commands = [["produce"], ["consume"], ["demo"], ["stream", "trim"], ["stream", "claim"]]
    const helps = await Promise.all(commands.map((c) => run([...c, "--help"])))
    const examples = helps.flatMap((h) => examplesOf(h.stdout))
    expect(examples.length).toBeGreaterThanOrEqual(6)
    for (const example of examples) {
      // bash parses the line as the user's shell would; printf shows the arguments it would pass.
      const shell = spawnSync("bash", ["-c", `printf '%s\\n' ${example}`], { encoding: "utf8" })
      expect(shell.status, `${example}: ${shell.stderr}`).toBe(0)
      expect(shell.stderr).toBe("")
    }
    const produce = examples.find((e) => e.includes("--stream") && e.includes("${"))!
    const args = spawnSync("bash", ["-c", `printf '%s\\n' ${produce}`], { encoding: "utf8" }).stdout.split("\n")
    expect(args[args.indexOf("--stream") + 1]).toBe("cdc.${source.table}")
  })

  it("--rate 0 means as fast as Redis takes them, in produce as in demo", async () => {
    const stream = unique("rate0")
    const [produce, demo] = await Promise.all([
      run(["produce", "--redis", server.url, "--stream", stream, "--events", "2000", "--rate", "0", "--json"]),
      run([
        "demo",
        "--source",
        "synthetic",
        "--redis",
        server.url,
        "--events",
        "1000",
        "--rate",
        "0",
        "--metrics-port",
        "0",
        "--json"
      ])
    ])
    expect(produce.code, produce.stderr).toBe(0)
    expect(JSON.parse(produce.stdout)).toMatchObject({ events: 2000, complete: true })
    expect(await withClient(server.url, (c) => c.xlen(stream))).toBe(2000)
    expect(demo.code, demo.stderr).toBe(0)
    expect(JSON.parse(demo.stdout)).toMatchObject({ produced: 1000, consumed: 1000 })
  })

  it("a --metrics-port that is taken exits 2 naming the flag, in produce, consume and demo", async () => {
    const taken = await takePort()
    try {
      const stream = unique("taken-port")
      const port = String(taken.port)
      const results = await Promise.all([
        run(["produce", "--redis", server.url, "--stream", stream, "--events", "10", "--metrics-port", port]),
        run(
          ["consume", "--redis", server.url, "--stream", stream, "--group", "g", "--consumer", "c"].concat([
            "--metrics-port",
            port
          ])
        ),
        run(["demo", "--source", "synthetic", "--redis", server.url, "--events", "10", "--metrics-port", port])
      ])
      for (const r of results) {
        expect(r.code, r.stderr).toBe(2)
        expect(r.stderr.trim()).toBe(
          `redflow: error: --metrics-port: port ${port} is already in use (pick another port, or 0 for a free one)`
        )
      }
    } finally {
      await taken.close()
    }
  })

  it("--envelope: produce writes it, consume and demo read it back; the wrong one dead-letters", async () => {
    const stream = unique("envelope")
    const produced = await run([
      "produce",
      "--redis",
      server.url,
      "--stream",
      stream,
      "--events",
      "50",
      "--envelope",
      "cloudevents"
    ])
    expect(produced.code, produced.stderr).toBe(0)
    const first = await withClient(server.url, (c) => c.xrange(stream, "-", "+", "COUNT", 1))
    const fields = first[0]![1]
    const event = JSON.parse(fields[fields.indexOf("event") + 1]!)
    expect(event).toMatchObject({ specversion: "1.0", type: expect.stringMatching(/^io\.redflow\.cdc\./) })

    const consume = (group: string, envelope: string) =>
      run(
        [
          "consume",
          "--redis",
          server.url,
          "--stream",
          stream,
          "--group",
          group,
          "--consumer",
          "c",
          "--envelope",
          envelope
        ].concat(["--count", "50", "--json"])
      )
    const right = await consume("right", "cloudevents")
    expect(right.code, right.stderr).toBe(0)
    expect(JSON.parse(right.stdout)).toMatchObject({ processed: 50, acked: 50, deadLettered: 0 })
    // Read as native, no entry decodes: each goes to the dead-letter stream, none is handled.
    const wrong = start(["consume", "--redis", server.url, "--stream", stream, "--group", "wrong", "--consumer", "c"])
    await waitFor(
      async () => ((await withClient(server.url, (c) => c.xlen(`${stream}.dead-letter`))) >= 50 ? true : undefined),
      60_000
    )
    wrong.child.kill("SIGTERM")
    expect((await wrong.done).code).toBe(0)

    const demo = await run([
      "demo",
      "--source",
      "synthetic",
      "--redis",
      server.url,
      "--events",
      "300",
      "--envelope",
      "debezium",
      "--metrics-port",
      "0",
      "--json"
    ])
    expect(demo.code, demo.stderr).toBe(0)
    const summary = JSON.parse(demo.stdout)
    expect(summary).toMatchObject({ produced: 300, consumed: 300, deadLettered: 0 })
    const entry = await withClient(server.url, (c) => c.xrange(summary.streams[0].stream, "-", "+", "COUNT", 1))
    const body = JSON.parse(entry[0]![1][entry[0]![1].indexOf("event") + 1]!)
    expect(body).toMatchObject({ schema: null, payload: expect.objectContaining({ op: expect.any(String) }) })
  })
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
