/**
 * The examples and the README's "Using it" program run as a user runs them, as processes
 * (`pnpm exec node examples/<name>.ts`): a configuration error (no `REDIS_URL`, a malformed one) ends in one readable
 * line naming the variable and exit code 1, not an `UnhandledPromiseRejection … "[object Object]"` or a stack trace;
 * with a server they run to the end and exit 0.
 */
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { expect, it, layer } from "@effect/vitest"
import { Effect } from "effect"
import { Redis } from "ioredis"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"

const here = import.meta.dirname

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs `examples/<file>` on this Node (24, as `pnpm exec node` does), REDIS_URL unset unless given, until it exits. */
const run = (file: string, env: Record<string, string> = {}, cwd = here) =>
  Effect.callback<Run>((resume) => {
    const { REDIS_URL: _, ...inherited } = process.env
    const child = spawn(process.execPath, [Path.join(here, file)], { cwd, env: { ...inherited, ...env } })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("close", (code) => resume(Effect.succeed({ code, stdout, stderr })))
    return Effect.sync(() => {
      if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, "SIGKILL")
    })
  }).pipe(Effect.timeout("120 seconds"))

const lines = (text: string) => text.split("\n").filter((line) => line.trim() !== "")

const malformed = "redis://nohost:notaport"

it('examples/using-it.ts is the README\'s "Using it" program, line for line', () => {
  const readme = Fs.readFileSync(Path.join(here, "..", "README.md"), "utf8")
  const section = readme.slice(readme.indexOf("\n## Using it\n"))
  const snippet = /```ts\n([\s\S]*?)\n```/.exec(section)?.[1]
  const file = Fs.readFileSync(Path.join(here, "using-it.ts"), "utf8")
  expect(snippet).toBeDefined()
  expect(file.replace(/^\/\*\*[\s\S]*?\*\/\n/, "")).toBe(`${snippet}\n`)
})

it.effect(
  "using-it without REDIS_URL: one line saying REDIS_URL is not set and how to set it, exit code 1",
  () =>
    Effect.gen(function* () {
      const result = yield* run("using-it.ts")
      expect(result.code).toBe(1)
      const output = `${result.stdout}${result.stderr}`
      expect(output).not.toContain("UnhandledPromiseRejection")
      expect(output).not.toContain("[object Object]")
      // `NodeRuntime.runMain` logs the failure (the error's line, then where it was raised).
      expect(lines(output)[0]).toMatch(
        /ConfigError: RedisConnection option url: REDIS_URL is not set\. Fix: set it to the server's URL, e\.g\. REDIS_URL=redis:\/\/localhost:6379$/
      )
    }),
  { timeout: 150_000 }
)

it.effect(
  "using-it with a malformed REDIS_URL: one line naming what is wrong and the expected forms, exit code 1",
  () =>
    Effect.gen(function* () {
      const result = yield* run("using-it.ts", { REDIS_URL: malformed })
      expect(result.code).toBe(1)
      expect(lines(`${result.stdout}${result.stderr}`)[0]).toMatch(
        /ConfigError: RedisConnection option url: Invalid Redis URL: cannot read host "nohost:notaport" \(expected redis:\/\/\[user\[:password\]@\]host\[:port\]\[\/db\], .*\)$/
      )
    }),
  { timeout: 150_000 }
)

const examples = [
  "consumer-go.ts",
  "consumer-rust.ts",
  "consumer-python.ts",
  "cache-invalidation.ts",
  "job-queue.ts",
  "session-sync.ts",
  "feature-flags.ts",
  "live-notifications.ts",
  "demo.ts"
]

for (const example of examples) {
  it.effect(
    `${example} with a malformed REDIS_URL: exactly one line on stderr naming REDIS_URL, exit code 1`,
    () =>
      Effect.gen(function* () {
        const result = yield* run(example, { REDIS_URL: malformed })
        expect(result.code).toBe(1)
        expect(lines(result.stderr)).toEqual([
          expect.stringMatching(
            /^ConfigError: the example option REDIS_URL: Invalid Redis URL: cannot read host "nohost:notaport" \(expected redis:\/\/.*\)$/
          )
        ])
      }),
    { timeout: 150_000 }
  )
}

it.effect(
  "demo.ts without REDIS_URL: runs on a redis-server it starts, writes every event, stops the server, exit code 0",
  () =>
    Effect.gen(function* () {
      const result = yield* run("demo.ts", { EVENTS: "300" })
      expect(result.stderr).toBe("")
      expect(result.code).toBe(0)
      const port = Number(
        /^Redis: redis:\/\/127\.0\.0\.1:(\d+) \(a redis-server started for this run\)$/m.exec(result.stdout)?.[1]
      )
      expect(port).toBeGreaterThan(0)
      expect(result.stdout).toMatch(/^300 events in \d+ batches/m)
      const written = [...result.stdout.matchAll(/: (\d+) written, XLEN (\d+)$/gm)].map((m) => [m[1], m[2]])
      expect(written.reduce((sum, [w]) => sum + Number(w), 0)).toBe(300)
      for (const [w, xlen] of written) expect(xlen).toBe(w)
      // The server it started is gone: its port refuses connections.
      const refused = yield* Effect.callback<boolean>((resume) => {
        const socket = Net.connect(port, "127.0.0.1")
        socket.on("connect", () => (socket.destroy(), resume(Effect.succeed(false))))
        socket.on("error", () => resume(Effect.succeed(true)))
      })
      expect(refused).toBe(true)
    }),
  { timeout: 150_000 }
)

layer(RedisTestServer.layer({ useEnv: false }), { excludeTestServices: true })("with a server", (it) => {
  it.effect(
    "consumer-go.ts with REDIS_URL: consumes the 20 events it published, leaves nothing pending, exit code 0",
    () =>
      Effect.gen(function* () {
        const { url } = yield* RedisTestServer.RedisTestServer
        const result = yield* run("consumer-go.ts", { REDIS_URL: url })
        expect(result.stderr).toBe("")
        expect(result.code).toBe(0)
        expect(lines(result.stdout)[0]).toBe(`Redis: ${url} (REDIS_URL)`)
        expect(lines(result.stdout).filter((line) => line.startsWith("processed "))).toHaveLength(20)
        expect(lines(result.stdout).at(-1)).toBe("done: group mygroup read 20 entries, 0 pending")
      }),
    { timeout: 150_000 }
  )

  it.effect(
    "using-it with REDIS_URL: all 100,000 events land once and the checkpoint file names the last position",
    () =>
      Effect.gen(function* () {
        const { url } = yield* RedisTestServer.RedisTestServer
        const cwd = Fs.mkdtempSync(Path.join(Os.tmpdir(), "redflow-using-it-"))
        yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(cwd, { recursive: true, force: true })))
        const result = yield* run("using-it.ts", { REDIS_URL: url }, cwd)
        expect(result.stderr).toBe("")
        expect(result.code).toBe(0)
        const lengths = yield* Effect.acquireUseRelease(
          Effect.sync(() => new Redis(url)),
          (redis) =>
            Effect.promise(async () => {
              const streams = (await redis.keys("cdc.*")).sort()
              return Object.fromEntries(await Promise.all(streams.map(async (s) => [s, await redis.xlen(s)] as const)))
            }),
          (redis) => Effect.promise(() => redis.quit())
        )
        expect(Object.keys(lengths)).toEqual(["cdc.shop.customers", "cdc.shop.orders", "cdc.shop.payments"])
        expect(Object.values(lengths).reduce((a, b) => a + b, 0)).toBe(100_000)
        expect(Fs.readFileSync(Path.join(cwd, "checkpoints.json"), "utf8")).toContain("00000000000186a0")
      }),
    { timeout: 150_000 }
  )
})
