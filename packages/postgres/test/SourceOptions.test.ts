/**
 * The PostgreSQL source's options that cannot work: refused by `make` before anything connects (the URL points at a
 * port nothing listens on), with the `ConfigError` whose path names the option.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import * as ConfigError from "@redflow/core/ConfigError"
import * as PostgresSource from "../src/PostgresSource.ts"

// Port 1: a connection attempt would fail with PostgresUnavailable, not a ConfigError.
const base = { url: "postgres://app@127.0.0.1:1/shop", tables: ["public.orders"] }

const cases: ReadonlyArray<readonly [string, PostgresSource.Options, ReadonlyArray<string>, RegExp]> = [
  ["not a URL", { ...base, url: "nowhere" }, ["url"], /not a URL; give postgres:\/\//],
  ["another scheme", { ...base, url: "mysql://app@h/shop" }, ["url"], /the scheme is "mysql:"/],
  ["no database", { ...base, url: "postgres://app@h:5432" }, ["url"], /names no database/],
  ["no table", { ...base, tables: [] }, ["tables"], /no table given/],
  ["empty slot", { ...base, slot: "" }, ["slot"], /non-empty/],
  ["snapshot", { ...base, snapshot: "always" as never }, ["snapshot"], /"initial" or "never"/],
  ["snapshotChunkRows 0", { ...base, snapshotChunkRows: 0 }, ["snapshotChunkRows"], /positive integer, got 0/],
  ["highWater 2.5", { ...base, highWater: 2.5 }, ["highWater"], /positive integer, got 2.5/],
  ["retryFor", { ...base, retryFor: "a while" as never }, ["retryFor"], /not a duration: a while/]
]

describe("PostgresSource options", () => {
  it.effect.each(cases)("%s: a ConfigError naming the option, before connecting", ([, options, path, reason]) =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(Effect.scoped(PostgresSource.make(options)))
      expect(Exit.isFailure(exit)).toBe(true)
      const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail")?.error : undefined
      expect(error).toBeInstanceOf(ConfigError.ConfigError)
      expect(error).toMatchObject({ component: "PostgresSource", path })
      expect((error as ConfigError.ConfigError).reason).toMatch(reason)
    })
  )
})
