/**
 * `redflow run`'s configuration, without a database: the pipeline file (every error names its path and what it
 * expects), `${NAME}` environment references, flags over the file, the password never shown, and the README's example
 * file. Where the exit code matters, the real CLI process runs (exit 2, one line, before connecting to anything).
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import { afterAll, describe, expect, it } from "vitest"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as PipelineConfig from "../src/internal/pipelineConfig.ts"
import { run } from "./support.ts"

const FIXTURE = Path.join(import.meta.dirname, "fixtures", "pipeline.yaml")
const README = Path.join(import.meta.dirname, "..", "..", "..", "README.md")

const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "redflow-run-config-"))
afterAll(() => Fs.rmSync(dir, { recursive: true, force: true }))

let files = 0
/** Writes a pipeline file and returns its path. */
const file = (text: string) => {
  const path = Path.join(dir, `pipeline-${files++}.yaml`)
  Fs.writeFileSync(path, text)
  return path
}

/** The error message of a file that must not parse. */
const parseError = (text: string, env: PipelineConfig.Env = {}): string => {
  const result = PipelineConfig.parse(text, "pipeline.yaml", env)
  if (Result.isSuccess(result)) throw new Error(`parsed: ${JSON.stringify(result.success)}`)
  return result.failure.message
}

const parsed = (text: string, env: PipelineConfig.Env = {}): PipelineConfig.FileConfig => {
  const result = PipelineConfig.parse(text, "pipeline.yaml", env)
  if (Result.isFailure(result)) throw new Error(result.failure.message)
  return result.success
}

const resolved = (
  flags: Partial<PipelineConfig.RunFlags>,
  text: string | undefined,
  env: PipelineConfig.Env = {}
): Result.Result<PipelineConfig.RunConfig, unknown> =>
  PipelineConfig.resolve(
    { ...PipelineConfig.noFlags, ...(text === undefined ? {} : { config: Option.some("pipeline.yaml") }), ...flags },
    text === undefined ? Option.none() : Option.some(parsed(text, env)),
    env
  )

const ok = (result: Result.Result<PipelineConfig.RunConfig, unknown>): PipelineConfig.RunConfig => {
  if (Result.isFailure(result)) throw new Error(String((result.failure as Error).message))
  return result.success
}

const failure = (result: Result.Result<PipelineConfig.RunConfig, unknown>): { tag: string; text: string } => {
  if (Result.isSuccess(result)) throw new Error("resolved")
  const error = result.failure as { _tag: string; message: string; flag?: string }
  return { tag: error._tag, text: error._tag === "UsageError" ? `--${error.flag}: ${error.message}` : error.message }
}

const base =
  "source:\n  url: postgres://app@db:5432/shop\n  tables: [public.orders]\nsink:\n  stream: cdc.orders\nredis:\n  url: redis://localhost:6379\n"

describe("the pipeline file: each error names its path and what it expects", () => {
  it("an unknown key, with the closest known one and what the section takes", () => {
    expect(parseError("source:\n  tabels: [public.orders]\n")).toBe(
      'pipeline.yaml: source.tabels: unknown setting (did you mean "tables"?); source takes url, password, tables, slot, publication, snapshot'
    )
    expect(parseError("metrics:\n  port: 1\nfoo: 2\n")).toBe(
      "pipeline.yaml: foo: unknown setting; the file's top level takes pipeline, source, redis, sink, checkpoint, metrics"
    )
  })

  it("a bad enum value", () => {
    expect(parseError("sink:\n  guarantee: once\n")).toBe(
      'pipeline.yaml: sink.guarantee: expected "at-least-once" | "exactly-once", got "once"'
    )
    expect(parseError("source:\n  snapshot: always\n")).toBe(
      'pipeline.yaml: source.snapshot: expected "initial" | "never", got "always"'
    )
  })

  it("a bad number", () => {
    expect(parseError("metrics:\n  port: 70000\n")).toBe(
      "pipeline.yaml: metrics.port: expected a port 0-65535 (0 = a free port), got 70000"
    )
    expect(parseError("sink:\n  batch:\n    maxEvents: 0\n")).toBe(
      "pipeline.yaml: sink.batch.maxEvents: expected events per batch (an integer >= 1), got 0"
    )
    expect(parseError("sink:\n  trim:\n    maxLen: 2.5\n")).toBe(
      "pipeline.yaml: sink.trim.maxLen: expected an integer, got 2.5"
    )
  })

  it("a value of the wrong type, and a table that is not schema.table", () => {
    expect(parseError("source:\n  tables: public.orders\n")).toBe(
      'pipeline.yaml: source.tables: expected a list, got "public.orders"'
    )
    expect(parseError("metrics:\n  port: '9000'\n")).toBe('pipeline.yaml: metrics.port: expected a number, got "9000"')
    expect(parseError("source: 3\n")).toBe("pipeline.yaml: source: expected a mapping (key: value), got 3")
    expect(parseError("source:\n  slot:\n")).toBe("pipeline.yaml: source.slot: expected a string, got nothing (null)")
    expect(parseError("- a\n- b\n")).toBe('pipeline.yaml: expected a mapping (key: value), got ["a","b"]')
    expect(parseError("source:\n  tables: [public.orders, shop.public.orders]\n")).toBe(
      'pipeline.yaml: source.tables[1]: expected "schema.table" (or "table", in schema public), got "shop.public.orders"'
    )
    expect(parseError("source:\n  slot: Orders-Slot\n")).toBe(
      'pipeline.yaml: source.slot: expected a slot name: 1 to 63 lower-case letters, digits and _, got "Orders-Slot"'
    )
  })

  it("every problem of the file at once", () => {
    expect(parseError("sink:\n  guarantee: once\nmetrics:\n  port: -1\n")).toBe(
      'pipeline.yaml: sink.guarantee: expected "at-least-once" | "exactly-once", got "once"; metrics.port: expected a port 0-65535 (0 = a free port), got -1'
    )
  })

  it("checkpoint takes a file or a Redis hash, not both", () => {
    expect(parseError("checkpoint:\n  file: ./a.json\n  redis: redflow:checkpoints\n")).toBe(
      "pipeline.yaml: checkpoint: takes file or redis, not both"
    )
  })

  it("bad YAML syntax, with its line and column", () => {
    expect(parseError("source:\n  url: postgres://db/shop\n  tables: [public.orders\nsink:\n  stream: s\n")).toMatch(
      /^pipeline\.yaml: not valid YAML at line 4, column 1: /
    )
    expect(parseError("pipeline: a\npipeline: b\n")).toBe(
      "pipeline.yaml: not valid YAML at line 2, column 1: Map keys must be unique"
    )
    expect(parseError("source:\n\turl: x\n")).toMatch(/^pipeline\.yaml: not valid YAML at line 2, column 1: .*[Tt]ab/)
  })

  it("an empty file is no settings", () => {
    expect(parsed("# nothing yet\n")).toEqual({})
  })
})

describe("${NAME}: environment references", () => {
  it("a reference takes the variable's value; $${ is a literal ${; a template's own placeholders stay", () => {
    const config = parsed(
      "source:\n  url: postgres://${PGUSER_X}@db/shop\n  password: p$${x}${PGPASSWORD}\nsink:\n  stream: cdc.${source.table}.${SUFFIX}\n  key: ${key.id}\n",
      { PGUSER_X: "app", PGPASSWORD: "s3cret", SUFFIX: "v1" }
    )
    expect(config.source?.url).toBe("postgres://app@db/shop")
    expect(config.source?.password).toBe("p${x}s3cret")
    expect(config.sink?.stream).toBe("cdc.${source.table}.v1")
    expect(config.sink?.key).toBe("${key.id}")
  })

  it("a value resolved in the parsed file cannot change its structure", () => {
    const config = parsed("source:\n  password: ${PGPASSWORD}\n", { PGPASSWORD: "a: b\n- c" })
    expect(config.source?.password).toBe("a: b\n- c")
  })

  it("a number setting reads a number from the environment", () => {
    expect(parsed("metrics:\n  port: ${METRICS_PORT}\n", { METRICS_PORT: "9100" }).metrics?.port).toBe(9100)
    expect(parseError("metrics:\n  port: ${METRICS_PORT}\n", { METRICS_PORT: "ninety" })).toBe(
      'pipeline.yaml: metrics.port: expected a number, got "ninety"'
    )
  })

  it("a variable that is not set names the variable and the path", () => {
    expect(parseError("source:\n  tables: [public.orders]\n  password: ${SHOP_DB_PASSWORD}\n")).toBe(
      "pipeline.yaml: source.password: environment variable SHOP_DB_PASSWORD is not set (referenced as ${SHOP_DB_PASSWORD}): set it, or write $${ for a literal ${"
    )
    expect(parseError("source:\n  tables: [public.orders, '${SECOND}']\n")).toMatch(
      /^pipeline\.yaml: source\.tables\[1\]: environment variable SECOND is not set/
    )
  })

  it("outside a template, ${…} that is not an environment name is an error, not text passed on", () => {
    expect(parseError("redis:\n  url: redis://:${redis_password}@cache:6379\n")).toBe(
      'pipeline.yaml: redis.url: "${redis_password}" is not an environment variable reference: names are upper-case letters, digits and _ (e.g. ${PGPASSWORD}); write $${ for a literal ${'
    )
  })
})

describe("flags over the file", () => {
  it("each flag replaces the file's value; the rest of the file stays", () => {
    const text = [
      "pipeline: shop",
      "source:",
      "  url: postgres://app@db:5432/shop",
      "  tables: [public.orders]",
      "redis:",
      "  url: redis://localhost:6379",
      "sink:",
      "  stream: cdc.${source.table}",
      "  guarantee: at-least-once",
      "  batch:",
      "    maxEvents: 100",
      "checkpoint:",
      "  file: ./file.json",
      "metrics:",
      "  port: 9000",
      ""
    ].join("\n")
    const fromFile = ok(resolved({}, text))
    expect(fromFile.pipeline).toBe("shop")
    expect(fromFile.sink).toEqual({
      stream: "cdc.${source.table}",
      pipeline: "shop",
      guarantee: "at-least-once",
      batch: { maxEvents: 100 }
    })
    expect(fromFile.checkpoint).toEqual({ _tag: "file", path: "./file.json" })
    expect(fromFile.metricsPort).toEqual(Option.some(9000))

    const overridden = ok(
      resolved(
        {
          pipeline: Option.some("shop2"),
          tables: Option.some(["public.customers", "public.orders"]),
          stream: Option.some("shop.events"),
          guarantee: Option.some("exactly-once"),
          batchSize: Option.some(7),
          checkpoint: Option.some("redis"),
          metricsPort: Option.some(0),
          slot: Option.some("custom_slot")
        },
        text
      )
    )
    expect(overridden.pipeline).toBe("shop2")
    expect(overridden.source.tables).toEqual(["public.customers", "public.orders"])
    expect(overridden.source.url).toBe("postgres://app@db:5432/shop")
    expect(overridden.source.slot).toBe("custom_slot")
    expect(overridden.source.publication).toBe("shop2")
    expect(overridden.sink).toEqual({
      stream: "shop.events",
      pipeline: "shop2",
      guarantee: "exactly-once",
      batch: { maxEvents: 7 }
    })
    expect(overridden.checkpoint).toEqual({ _tag: "redis", key: "redflow:checkpoints" })
    expect(overridden.metricsPort).toEqual(Option.some(0))
  })

  it("the defaults: pipeline redflow, slot and publication named after the pipeline, snapshot initial, memory checkpoints", () => {
    const config = ok(
      resolved(
        {
          source: Option.some("postgres://app@db/shop"),
          tables: Option.some(["orders"]),
          stream: Option.some("s"),
          redis: Option.some("redis://localhost:6379")
        },
        undefined
      )
    )
    expect(config.pipeline).toBe("redflow")
    expect(config.source).toEqual({
      url: "postgres://app@db/shop",
      tables: ["orders"],
      slot: "redflow",
      publication: "redflow",
      snapshot: "initial"
    })
    expect(config.checkpoint).toEqual({ _tag: "memory" })
    expect(ok(resolved({ pipeline: Option.some("Orders-EU") }, base)).source.slot).toBe("orders_eu")
  })

  it("Redis: the flag, else redis.url, else REDIS_URL", () => {
    const noRedis = base.replace("redis:\n  url: redis://localhost:6379\n", "")
    const env = { REDIS_URL: "redis://from-env:6379" }
    expect(ok(resolved({}, noRedis, env)).redisUrl).toBe("redis://from-env:6379")
    expect(ok(resolved({}, base, env)).redisUrl).toBe("redis://localhost:6379")
    expect(ok(resolved({ redis: Option.some("redis://flag:6379") }, base, env)).redisUrl).toBe("redis://flag:6379")
  })

  it("a missing setting names the flag and the file's key", () => {
    expect(failure(resolved({}, "sink:\n  stream: s\n"))).toEqual({
      tag: "UsageError",
      text: "--source: required: a PostgreSQL URL such as postgres://user@host:5432/db (or source.url in the --config file)"
    })
    expect(failure(resolved({ source: Option.some("postgres://db/shop") }, undefined)).text).toMatch(
      /^--tables: required: .*source\.tables/
    )
    expect(failure(resolved({}, base.replace("sink:\n  stream: cdc.orders\n", ""))).text).toMatch(
      /^--stream: required: .*sink\.stream/
    )
  })

  it("a bad value names where it came from: the flag, or the file's path", () => {
    expect(failure(resolved({ tables: Option.some(["public.orders", "a.b.c"]) }, base))).toEqual({
      tag: "UsageError",
      text: '--tables: expected "schema.table" (or "table", in schema public), got "a.b.c"'
    })
    expect(failure(resolved({}, base.replace("redis://localhost:6379", "http://localhost")))).toMatchObject({
      tag: "PipelineConfigError",
      text: expect.stringMatching(/^pipeline\.yaml: redis\.url: /)
    })
    expect(failure(resolved({}, base.replace("postgres://app@db:5432/shop", "mysql://app@db/shop")))).toEqual({
      tag: "PipelineConfigError",
      text: 'pipeline.yaml: source.url: expected a postgres:// or postgresql:// URL, got "mysql://app@db/shop"'
    })
  })
})

describe("the PostgreSQL password", () => {
  it("from the URL, the file or PGPASSWORD; always Redacted, and the URL shown without it", () => {
    const inUrl = ok(
      resolved({ source: Option.some("postgres://app:hunter2@db:5432/shop") }, base, { PGPASSWORD: "other" })
    )
    expect(inUrl.source.url).toBe("postgres://app@db:5432/shop")
    expect(Redacted.value(inUrl.source.password!)).toBe("hunter2")
    expect(inUrl.sourceUrl).toBe("postgres://app:***@db:5432/shop")
    expect(JSON.stringify(inUrl)).not.toContain("hunter2")

    const fromFile = ok(resolved({}, base.replace("  tables:", "  password: ${DB_PW}\n  tables:"), { DB_PW: "pw1" }))
    expect(Redacted.value(fromFile.source.password!)).toBe("pw1")
    expect(fromFile.passwordFrom).toEqual(Option.some("source.password in pipeline.yaml"))
    expect(JSON.stringify(fromFile)).not.toContain("pw1")

    const fromEnv = ok(resolved({}, base, { PGPASSWORD: "pw2" }))
    expect(Redacted.value(fromEnv.source.password!)).toBe("pw2")
    expect(fromEnv.passwordFrom).toEqual(Option.some("PGPASSWORD"))
    expect(ok(resolved({}, base)).source.password).toBeUndefined()
  })

  it("redactUrl hides the password of a URL that parses and of one that does not", () => {
    expect(PipelineConfig.redactUrl("postgres://app:s%40cret@db/shop")).toBe("postgres://app:***@db/shop")
    expect(PipelineConfig.redactUrl("postgres://app:se/cret@db:x/shop")).not.toContain("se/cret")
    expect(PipelineConfig.redactUrl("postgres://app@db/shop")).toBe("postgres://app@db/shop")
  })
})

describe("the README's example pipeline.yaml", () => {
  it("parses to the options it describes", () => {
    const text = Fs.readFileSync(FIXTURE, "utf8")
    const env = { PGPASSWORD: "from-the-environment" }
    const config = ok(
      PipelineConfig.resolve(
        { ...PipelineConfig.noFlags, config: Option.some(FIXTURE) },
        Option.some(parsed(text, env)),
        env
      )
    )
    expect(config.pipeline).toBe("shop")
    expect({ ...config.source, password: Redacted.value(config.source.password!) }).toEqual({
      url: "postgres://redflow@db.internal:5432/shop",
      password: "from-the-environment",
      tables: ["public.orders", "public.customers"],
      slot: "shop",
      publication: "shop",
      snapshot: "initial"
    })
    expect(config.redisUrl).toBe("redis://redis.internal:6379")
    expect(config.sink).toEqual({
      stream: "cdc.${source.table}",
      key: "${key.id}",
      pipeline: "shop",
      guarantee: "exactly-once",
      envelope: "native",
      batch: { maxEvents: 4000 },
      trim: { maxLen: 1000000 }
    })
    expect(config.checkpoint).toEqual({ _tag: "file", path: "/var/lib/redflow/shop.checkpoints.json" })
    expect(config.metricsPort).toEqual(Option.some(9000))
  })

  // The README section on `redflow run` shows this file: once it is there, it must be this file, verbatim.
  const readme = Fs.readFileSync(README, "utf8")
  it.skipIf(!/^#+ .*redflow run/m.test(readme))("is the file the README shows, verbatim", () => {
    const blocks = [...readme.matchAll(/```ya?ml\n([\s\S]*?)```/g)].map((m) => m[1]!)
    expect(blocks).toContain(Fs.readFileSync(FIXTURE, "utf8"))
  })
})

describe("redflow run with a configuration that cannot work (the CLI process)", () => {
  it("exits 2 with one line naming the file's path or the flag, before connecting; the password is never shown", async () => {
    // Nothing listens here: a run that got past its configuration would fail differently (exit 1).
    const free = await RedisTestServer.freePort()
    const redis = `redis://127.0.0.1:${free}`
    const pg = `postgres://app:Sup3rSecret@127.0.0.1:${free}/shop`
    const good = `source:\n  url: ${pg}\n  tables: [public.orders]\nredis:\n  url: ${redis}\nsink:\n  stream: cdc.orders\n`
    const cases: ReadonlyArray<{ args: ReadonlyArray<string>; line: RegExp | string; env?: Record<string, string> }> = [
      {
        args: ["--config", file(good.replace("cdc.orders", "cdc.orders\n  guarantee: once"))],
        line: /^redflow: error: \S+\.yaml: sink\.guarantee: expected "at-least-once" \| "exactly-once", got "once"$/
      },
      {
        args: ["--config", file(good.replace("  tables:", "  tabels:"))],
        line: /^redflow: error: \S+\.yaml: source\.tabels: unknown setting \(did you mean "tables"\?\)/
      },
      {
        args: ["--config", file(`${good}metrics:\n  port: 99999\n`)],
        line: /^redflow: error: \S+\.yaml: metrics\.port: expected a port 0-65535/
      },
      {
        args: ["--config", file(`${good}checkpoint:\n  file: \${CHECKPOINT_DIR}/shop.json\n`)],
        line: /^redflow: error: \S+\.yaml: checkpoint\.file: environment variable CHECKPOINT_DIR is not set/
      },
      {
        args: ["--config", file(`${good}sink:\n  key: x\n`)],
        line: /^redflow: error: \S+\.yaml: not valid YAML at line 8, column 1: Map keys must be unique$/
      },
      {
        args: ["--config", file(good.replace("cdc.orders", "cdc.${source.nope}"))],
        line: /^redflow: error: \S+\.yaml: sink\.stream: .*source\.nope/
      },
      {
        args: ["--config", file(good), "--stream", "cdc.${nope}"],
        line: /^redflow: error: --stream: .*nope/
      },
      {
        args: ["--config", Path.join(dir, "absent.yaml")],
        line: /^redflow: error: \S+absent\.yaml: cannot read the pipeline file: no such file/
      },
      {
        args: ["--source", pg, "--tables", "shop.public.orders", "--stream", "s", "--redis", redis],
        line: '--tables: expected "schema.table" (or "table", in schema public), got "shop.public.orders"'
      },
      {
        args: ["--source", pg.replace("postgres:", "mysql:"), "--tables", "orders", "--stream", "s", "--redis", redis],
        line: `redflow: error: --source: expected a postgres:// or postgresql:// URL, got "mysql://app:***@127.0.0.1:${free}/shop"`
      },
      { args: ["--tables", "orders", "--stream", "s", "--redis", redis], line: /^redflow: error: --source: required/ }
    ]
    const results = await Promise.all(cases.map((c) => run(["run", ...c.args], { env: c.env ?? {} })))
    results.forEach((r, i) => {
      const { line } = cases[i]!
      expect(r.code, r.stderr).toBe(2)
      const lines = r.stderr.trim().split("\n")
      expect(lines, r.stderr).toHaveLength(1)
      if (typeof line === "string") expect(lines[0]).toContain(line)
      else expect(lines[0]).toMatch(line)
      expect(r.stdout + r.stderr).not.toContain("Sup3rSecret")
    })
  })
})
