/**
 * The `redflow` package as it ships: the version it prints, what it depends on at run time, what a command loads at
 * start, and what the compiler emits for the published bin.
 */
import { execFile } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { BIN, run, unique } from "./support.ts"

const PACKAGE_DIR = fileURLToPath(new URL("..", import.meta.url))
const packageJson = JSON.parse(Fs.readFileSync(Path.join(PACKAGE_DIR, "package.json"), "utf8")) as {
  version: string
  dependencies?: Record<string, string>
  optionalDependencies?: Record<string, string>
  peerDependencies?: Record<string, string>
  devDependencies?: Record<string, string>
  publishConfig: { bin: Record<string, string> }
}

const filesUnder = (dir: string, ext: string): Array<string> =>
  Fs.readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(ext))
    .map((f) => Path.join(dir, f))

/** Every module specifier of a source: static imports and re-exports, and `import("…")`. */
const specifiers = (text: string): Array<string> =>
  [...text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|^import\s+)["']([^"']+)["']/gm)].map((m) => m[1]!)

let dir: string
let server: RedisTestServer.SpawnedServer

beforeAll(async () => {
  dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "redflow-cli-package-"))
  server = await RedisTestServer.spawnRedisServer()
})

afterAll(async () => {
  await server?.stop()
  if (dir) Fs.rmSync(dir, { recursive: true, force: true })
})

describe("@redflow/cli as it ships", () => {
  it("redflow --version prints the version of packages/cli/package.json", async () => {
    const r = await run(["--version"])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout.trim()).toBe(`redflow v${packageJson.version}`)
    const installed = await run(["--version"], { installed: true })
    expect(installed.stdout.trim()).toBe(`redflow v${packageJson.version}`)
  })

  it("needs neither @redflow/testing nor another package's internals at run time", () => {
    for (const field of ["dependencies", "optionalDependencies", "peerDependencies"] as const) {
      expect(Object.keys(packageJson[field] ?? {}), field).not.toContain("@redflow/testing")
    }
    expect(packageJson.devDependencies).toHaveProperty("@redflow/testing")
    const offending = filesUnder(Path.join(PACKAGE_DIR, "src"), ".ts").flatMap((file) =>
      specifiers(Fs.readFileSync(file, "utf8"))
        .filter((s) => s.startsWith("@redflow/testing") || /^@redflow\/[^/]+\/internal\//.test(s))
        .map((s) => `${Path.relative(PACKAGE_DIR, file)} imports ${s}`)
    )
    expect(offending).toEqual([])
  })

  it("produce loads neither PostgreSQL, YAML, the metrics server nor the whole of @effect/platform-node", async () => {
    // A resolve hook records every module the process loads.
    const hook = Path.join(dir, "trace.mjs")
    Fs.writeFileSync(
      hook,
      `import { registerHooks } from "node:module"\nimport { appendFileSync } from "node:fs"\n` +
        `registerHooks({ resolve(specifier, context, next) { const r = next(specifier, context); ` +
        `appendFileSync(process.env.TRACE_FILE, r.url + "\\n"); return r } })\n`
    )
    const loaded = async (args: ReadonlyArray<string>) => {
      const trace = Path.join(dir, `${unique("trace")}.txt`)
      await promisify(execFile)(process.execPath, ["--import", hook, BIN, ...args], {
        env: { ...process.env, TRACE_FILE: trace }
      })
      return Fs.readFileSync(trace, "utf8").split("\n")
    }
    const produce = ["produce", "--events", "1", "--redis", server.url]
    const plain = await loaded([...produce, "--stream", unique("lazy")])
    expect(plain.some((url) => url.includes("/ioredis/"))).toBe(true)
    const unwanted = [/\/node_modules\/(\.pnpm\/[^/]+\/node_modules\/)?(pg|yaml|@redis\/client)\//, /\/postgres\/src\//]
    unwanted.push(/\/testing\/src\//, /MetricsServer\.ts$/, /platform-node\/dist\/index\.js$/)
    expect(plain.filter((url) => unwanted.some((re) => re.test(url)))).toEqual([])
    // Asked for, the metrics server is loaded then: the trace sees modules loaded late.
    const withMetrics = await loaded([...produce, "--stream", unique("lazy"), "--metrics-port", "0"])
    expect(withMetrics.some((url) => url.endsWith("/MetricsServer.ts"))).toBe(true)
  })

  it("the compiled bin keeps its shebang and imports only JavaScript", async () => {
    const out = Path.join(dir, "dist")
    await promisify(execFile)(
      process.execPath,
      [
        fileURLToPath(new URL("../../../node_modules/typescript/bin/tsc", import.meta.url)),
        "-p",
        Path.join(PACKAGE_DIR, "tsconfig.build.json"),
        "--outDir",
        out
      ],
      { cwd: PACKAGE_DIR }
    )
    await promisify(execFile)(process.execPath, [Path.join(PACKAGE_DIR, "scripts", "bundle.ts"), "--out", out], {
      cwd: PACKAGE_DIR
    })
    const bin = Path.join(out, Path.basename(packageJson.publishConfig.bin.redflow!))
    expect(packageJson.publishConfig.bin.redflow).toBe("./dist/bin.js")
    expect(Fs.readFileSync(bin, "utf8").split("\n")[0]).toBe("#!/usr/bin/env node")
    const tsImports = filesUnder(out, ".js").flatMap((file) =>
      specifiers(Fs.readFileSync(file, "utf8"))
        .filter((s) => s.endsWith(".ts"))
        .map((s) => `${Path.relative(out, file)} imports ${s}`)
    )
    expect(tsImports).toEqual([])
    // Every command's module is there, the lazily loaded ones too: in the library build, and as a chunk of its own in
    // the bundled bin (loaded when the command runs).
    const chunks = Fs.readdirSync(out)
    for (const m of ["produce", "consume", "run", "demo", "stream"]) {
      expect(Fs.existsSync(Path.join(out, "internal", `${m}.js`)), m).toBe(true)
    }
    for (const m of ["produce", "consume", "run", "demo"]) {
      expect(
        chunks.some((f) => f.startsWith(`bin-${m}-`) && f.endsWith(".js")),
        `bin-${m}-*.js in ${chunks.join(" ")}`
      ).toBe(true)
    }
  })
})
