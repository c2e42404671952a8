/**
 * The `redflow` command line as a user runs it: a child process per command, against a real Redis, checking the
 * exit code, what it prints and what lands in Redis.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { entryIds, run, start, unique, waitFor, withClient } from "./support.ts"

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

    // Nothing is idle for a minute yet: the default --min-idle claims nothing. The spawns above can take a minute on
    // a loaded machine, so the entries' idle time is reset first (XCLAIM … JUSTID to their own consumer).
    await withClient(server.url, async (c) => {
      const ids = ((await c.xpending(stream, "workers", "-", "+", 100)) as Array<[string]>).map(([id]) => id)
      await c.xclaim(stream, "workers", "w1", 0, ...ids, "JUSTID")
    })
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
