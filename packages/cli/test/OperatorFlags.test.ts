/**
 * The sink's operator flags of `redflow produce` and `redflow run` reach the sink: `--trim acked --maxlen` holds the
 * source while a consumer group has not read (the run ends once the group reads), `--publish` sends one notice per
 * write, and a bad value exits 2 naming its flag, for `run` too (before it connects anywhere).
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as PipelineConfig from "../src/internal/pipelineConfig.ts"
import { run, start, unique, waitFor, withClient } from "./support.ts"

const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "redflow-operator-"))
let files = 0
const file = (text: string) => {
  const path = Path.join(dir, `pipeline-${files++}.yaml`)
  Fs.writeFileSync(path, text)
  return path
}

let server: Awaited<ReturnType<typeof RedisTestServer.start>>

beforeAll(async () => {
  server = await RedisTestServer.start()
})

afterAll(async () => {
  await server?.stop()
  Fs.rmSync(dir, { recursive: true, force: true })
})

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe("redflow produce: --trim acked, --maxlen, --publish", () => {
  it("holds while a group has not read past --maxlen, ends once it reads; one notice per write", async () => {
    const stream = unique("operator")
    const channel = `${stream}.changed`
    await withClient(server.url, (c) => c.xgroup("CREATE", stream, "reader", "0", "MKSTREAM"))
    const subscriber = new Redis(server.url)
    const notices: Array<{ first: string; last: string; count: number }> = []
    try {
      await subscriber.subscribe(channel)
      subscriber.on("message", (_channel, message: string) => notices.push(JSON.parse(message)))
      const produce = start([
        "produce",
        "--redis",
        server.url,
        "--stream",
        stream,
        "--events",
        "1000",
        "--batch-size",
        "100",
        "--trim",
        "acked",
        "--maxlen",
        "200",
        "--publish",
        channel,
        "--memory-guard",
        "--durability",
        "ignore",
        "--json"
      ])
      // held: the stream stays at maxLen plus at most the window (100) while the group reads nothing
      await waitFor(async () => ((await withClient(server.url, (c) => c.xlen(stream))) > 200 ? true : undefined))
      await sleep(1500)
      const held = await withClient(server.url, (c) => c.xlen(stream))
      expect(held).toBeLessThanOrEqual(300)
      expect(produce.child.exitCode).toBeNull()

      const read = new Set<string>()
      const result = await (async () => {
        let exited: Awaited<typeof produce.done> | undefined
        produce.done.then((r) => (exited = r))
        for (;;) {
          const reply = (await withClient(server.url, (c) =>
            c.xreadgroup("GROUP", "reader", "c", "COUNT", 500, "STREAMS", stream, ">")
          )) as Array<[string, Array<[string, Array<string>]>]> | null
          const entries = reply?.[0]?.[1] ?? []
          for (const [, fields] of entries) read.add(fields[fields.indexOf("id") + 1]!)
          if (entries.length > 0) {
            await withClient(server.url, (c) => c.xack(stream, "reader", ...entries.map(([id]) => id)))
          } else if (exited !== undefined) return exited
          else await sleep(20)
        }
      })()
      expect(result.code, result.stderr).toBe(0)
      expect(read.size).toBe(1000)
      await waitFor(() => (notices.reduce((n, x) => n + x.count, 0) >= 1000 ? true : undefined))
      const summary = JSON.parse(result.stdout) as { batches: number }
      expect(notices.length).toBe(summary.batches)
      expect(notices.reduce((n, x) => n + x.count, 0)).toBe(1000)
    } finally {
      subscriber.disconnect()
    }
  }, 120_000)

  it("--max-event-bytes with --large-events reference: bodies stored under keys with the TTL, the entries point at them", async () => {
    const stream = unique("large")
    const result = await run([
      "produce",
      "--redis",
      server.url,
      "--stream",
      stream,
      "--events",
      "20",
      "--payload-bytes",
      "4000",
      "--max-event-bytes",
      "2000",
      "--large-events",
      "reference",
      "--large-event-ttl",
      "2h",
      "--durability",
      "ignore"
    ])
    expect(result.code, result.stderr).toBe(0)
    const entries = await withClient(server.url, (c) => c.xrange(stream, "-", "+"))
    expect(entries).toHaveLength(20)
    for (const [, fields] of entries) {
      expect(fields).not.toContain("event")
      const ref = fields[fields.indexOf("ref") + 1]!
      const [body, ttl] = await withClient(server.url, (c) => Promise.all([c.get(ref), c.pttl(ref)]))
      // The whole event is there, over the bound; it expires within the two hours asked for.
      expect(body?.length ?? 0).toBeGreaterThan(4000)
      expect(ttl).toBeGreaterThan(0)
      expect(ttl).toBeLessThanOrEqual(2 * 3_600_000)
    }
  }, 120_000)

  it("a bad operator flag exits 2 naming it, in produce and in run", async () => {
    const produce = ["produce", "--redis", server.url, "--stream", "s", "--events", "5"]
    const runCommand = [
      "run",
      "--source",
      "postgres://redflow@127.0.0.1:1/db",
      "--tables",
      "public.orders",
      "--redis",
      server.url,
      "--stream",
      "s"
    ]
    const cases: Array<[Array<string>, RegExp]> = [
      [[...produce, "--max-lag", "billing"], /--max-lag: expected GROUP:ENTRIES/],
      [[...produce, "--max-lag", "billing:0"], /--max-lag/],
      [[...produce, "--on-lag", "trim"], /--on-lag: only applies with trim.acked/],
      [[...produce, "--trim", "acked", "--on-lag", "hold"], /--on-lag: needs trim.maxLen/],
      [[...produce, "--memory-guard=0.5:0.7"], /--memory-guard: LOW must be .* below HIGH/],
      [[...produce, "--publish", "cdc.${nope}"], /--publish: .*nope/],
      [[...produce, "--durability", "always"], /--durability/],
      [[...produce, "--large-events", "drop"], /--large-events/],
      [[...produce, "--large-event-ttl", "soon"], /--large-event-ttl: expected a time to live/],
      [[...produce, "--max-event-bytes", "0"], /--max-event-bytes/],
      [[...produce, "--max-event-bytes", "99999999999"], /--max-event-bytes: /],
      [[...runCommand, "--on-lag", "trim"], /--on-lag: only applies with trim.acked/],
      [[...runCommand, "--max-lag", ":5"], /--max-lag: expected GROUP:ENTRIES/],
      [[...runCommand, "--memory-guard=2"], /--memory-guard: HIGH must be/]
    ]
    const results = await Promise.all(cases.map(([args]) => run(args)))
    results.forEach((r, i) => {
      expect(r.code, `${cases[i]![0].join(" ")}: ${r.stderr}`).toBe(2)
      expect(r.stderr).toMatch(cases[i]![1])
    })
  }, 120_000)

  it("--durability require refuses to start against a server that can lose acknowledged writes", async () => {
    const r = await run([
      "produce",
      "--redis",
      server.url,
      "--stream",
      unique("durable"),
      "--events",
      "5",
      "--durability",
      "require"
    ])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/appendonly|AOF/i)
  }, 60_000)
})

describe("redflow run: the operator settings in the pipeline file, and their flags over them", () => {
  const base = [
    "source:",
    "  url: postgres://app@127.0.0.1:1/shop",
    "  tables: [public.orders]",
    "redis:",
    "  url: redis://127.0.0.1:1",
    "sink:",
    "  stream: cdc.${source.table}",
    ""
  ].join("\n")

  it("the file's keys reach the sink's options; a flag given as well wins", async () => {
    const path = file(
      base +
        [
          "  trim:",
          "    maxLen: 1000",
          "    acked: true",
          "    onLag: trim",
          "  maxLag: { group: billing, entries: 5000 }",
          "  publish:",
          "    channel: cdc.${source.table}.changed",
          "  memoryGuard: { highWater: 0.85, lowWater: 0.7 }",
          "  durability: require",
          "  maxEventBytes: 200000",
          "  largeEvents: reference",
          "  largeEventTtl: 12h",
          ""
        ].join("\n")
    )
    const fromFile = await Effect.runPromise(
      PipelineConfig.configure({ ...PipelineConfig.noFlags, config: Option.some(path) })
    )
    expect(fromFile.sink).toMatchObject({
      trim: { maxLen: 1000, acked: true, onLag: "trim" },
      maxLag: { group: "billing", entries: 5000 },
      publish: { channel: "cdc.${source.table}.changed" },
      memoryGuard: { highWater: 0.85, lowWater: 0.7 },
      durability: "require",
      maxEventBytes: 200_000,
      largeEvents: "reference"
    })
    expect(Duration.toMillis(Duration.fromInputUnsafe(fromFile.sink.largeEventTtl!))).toBe(12 * 3600 * 1000)
    const flagged = await Effect.runPromise(
      PipelineConfig.configure({
        ...PipelineConfig.noFlags,
        config: Option.some(path),
        onLag: Option.some("hold"),
        maxLag: Option.some("audit:10"),
        durability: Option.some("warn"),
        maxEventBytes: Option.some(5000),
        largeEventTtl: Option.some("30m")
      })
    )
    expect(flagged.sink).toMatchObject({
      trim: { maxLen: 1000, acked: true, onLag: "hold" },
      maxLag: { group: "audit", entries: 10 },
      durability: "warn",
      maxEventBytes: 5000,
      largeEvents: "reference"
    })
    expect(Duration.toMillis(Duration.fromInputUnsafe(flagged.sink.largeEventTtl!))).toBe(30 * 60 * 1000)
  })

  it("a setting that cannot work names the file's path, or the flag when one gave it (exit 2)", async () => {
    const cases: Array<[Array<string>, RegExp]> = [
      [
        ["--config", file(`${base}  trim:\n    onLag: trim\n`)],
        /\.yaml: sink\.trim\.onLag: only applies with trim\.acked/
      ],
      [["--config", file(`${base}  maxLag: { group: billing, entries: 0 }\n`)], /\.yaml: sink\.maxLag\.entries: /],
      [["--config", file(`${base}  memoryGuard: { lowWater: 0.95 }\n`)], /\.yaml: sink\.memoryGuard: lowWater must/],
      [["--config", file(`${base}  publish: { chanel: x }\n`)], /sink\.publish\.chanel: unknown setting/],
      [["--config", file(`${base}  largeEventTtl: soon\n`)], /\.yaml: sink\.largeEventTtl: expected a time to live/],
      [["--config", file(`${base}  largeEvents: inline\n`)], /\.yaml: sink\.largeEvents: /],
      [
        ["--config", file(`${base}  maxEventBytes: 99999999\n`)],
        /\.yaml: sink\.maxEventBytes: must be at most batch\.maxBytes/
      ],
      [["--config", file(`${base}  trim:\n    maxLen: 10\n`), "--on-lag", "trim"], /--on-lag: only applies/]
    ]
    const results = await Promise.all(cases.map(([args]) => run(["run", ...args])))
    results.forEach((r, i) => {
      expect(r.code, r.stderr).toBe(2)
      expect(r.stderr).toMatch(cases[i]![1])
    })
  }, 120_000)
})
