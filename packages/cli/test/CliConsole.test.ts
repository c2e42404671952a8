/**
 * The commands' output captured in the test's own process: `Cli.run` writes through Effect's `Console`, so a test
 * `Console` sees what a user would read on stdout (`Console.log`) and stderr (`Console.error`), and `Cli.exitCodeOf`
 * gives the exit code the process would end with. Against a real Redis.
 */
import { expect, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { TestConsole } from "effect/testing"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Cli from "../src/Cli.ts"
import { unique, withClient } from "./support.ts"

/** Runs the command line in this process: what it printed on stdout and stderr, and its exit code. */
const redflow = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const exit = yield* Effect.exit(Cli.run(args))
    const stdout = (yield* TestConsole.logLines).join("\n")
    const stderr = (yield* TestConsole.errorLines).join("\n")
    return { code: Cli.exitCodeOf(exit), stdout, stderr }
  }).pipe(Effect.provide(TestConsole.layer))

layer(RedisTestServer.layer(), { excludeTestServices: true })("redflow in process, through a test Console", (it) => {
  it.effect("stream info prints the stream's length and entries; --json prints one object", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const stream = unique("console")
      const ids = yield* Effect.promise(() =>
        withClient(url, async (client) => [
          await client.xadd(stream, "1-1", "event", "{}"),
          await client.xadd(stream, "2-1", "event", "{}"),
          await client.xadd(stream, "3-1", "event", "{}")
        ])
      )
      expect(ids).toStrictEqual(["1-1", "2-1", "3-1"])

      const human = yield* redflow(["stream", "info", stream, "--redis", url])
      expect(human.code, human.stderr).toBe(0)
      expect(human.stdout.split("\n")).toStrictEqual([
        stream,
        "  length             3",
        "  first entry        1-1",
        "  last entry         3-1",
        "  last generated id  3-1",
        "  entries added      3",
        "  groups             0"
      ])
      expect(human.stderr).toBe("")

      const json = yield* redflow(["stream", "info", stream, "--redis", url, "--json"])
      expect(json.code, json.stderr).toBe(0)
      expect(JSON.parse(json.stdout)).toMatchObject({
        command: "stream info",
        stream,
        length: 3,
        firstEntryId: "1-1",
        lastEntryId: "3-1",
        groups: 0
      })
    })
  )

  it.effect("a missing stream: one line on stderr, nothing on stdout, exit 1", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const stream = unique("missing")
      const r = yield* redflow(["stream", "info", stream, "--redis", url])
      expect(r.code).toBe(1)
      expect(r.stdout).toBe("")
      expect(r.stderr).toBe(`redflow: error: stream ${JSON.stringify(stream)} does not exist`)
    })
  )

  it.effect("an option the sink rejects exits 2 naming its flag, before writing anything", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const stream = `${unique("bad")}}x`
      const r = yield* redflow(["produce", "--redis", url, "--stream", stream, "--events", "10"])
      expect(r.code).toBe(2)
      expect(r.stdout).toBe("")
      expect(r.stderr.split("\n")).toHaveLength(1)
      expect(r.stderr).toMatch(/^redflow: error: --stream: /)
      expect(r.stderr).toContain(JSON.stringify(stream))
      const exists = yield* Effect.promise(() => withClient(url, (client) => client.exists(stream)))
      expect(exists).toBe(0)
    })
  )

  it.effect("a bad flag value: the parse error and the pointer to --help on stderr, exit 2", () =>
    Effect.gen(function* () {
      const r = yield* redflow(["produce", "--stream", "s", "--events", "-1"])
      expect(r.code).toBe(2)
      expect(r.stdout).toBe("")
      expect(r.stderr.split("\n")).toStrictEqual([
        'redflow: error: Invalid value for flag --events: "-1". Expected a number of events (an integer >= 0), got -1',
        "Run `redflow produce --help` for the flags and what they expect."
      ])
    })
  )
})
