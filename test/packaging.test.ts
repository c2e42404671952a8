/**
 * The packages as an application gets them from a registry: every package is packed with `pnpm pack` (its prepack
 * builds it), the tarballs are installed with npm into a fresh app in a temporary directory outside the workspace
 * (no workspace links, dependencies from the registry), and then, with nothing of the workspace on the app's module
 * path:
 *
 * - the README's "Using it" and "Consuming" programs, and the example each package's README starts with,
 *   type-check against the published declarations with `moduleResolution` `nodenext` and `bundler`, strict, without
 *   `skipLibCheck`, using the app's own typescript (the default `lib`, which has the DOM types Effect's own
 *   declarations use: `CryptoKey`, `JsonWebKey`, `Transferable`);
 * - a plain JavaScript file writes 1,000 events with the sink and reads them back with a consumer group against a
 *   real Redis, on Node 22 and on Node 24 (the `node` package provides both);
 * - the installed `redflow` bin runs `--version`, `produce` and `stream info` on both.
 *
 * npm's cache and the Node 22 install are kept in `<tmpdir>/redflow-packaging-cache` so that a rerun takes no
 * downloads; the app itself is new every run.
 */
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"

const root = Path.join(import.meta.dirname, "..")
const fixtures = Path.join(import.meta.dirname, "fixtures", "packaging")
const packages = ["core", "redis", "postgres", "testing", "cli"] as const
const cache = Path.join(Os.tmpdir(), "redflow-packaging-cache")
const rootManifest = JSON.parse(Fs.readFileSync(Path.join(root, "package.json"), "utf8")) as {
  devDependencies: Record<string, string>
}
const versionOf = (name: string) => {
  const version = rootManifest.devDependencies[name]
  if (version === undefined)
    throw new Error(`package.json: devDependencies has no ${name}; the packaging test needs it`)
  return version
}

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs a command to its end; its output is kept for the assertions and for the message of a failed step. */
const exec = (command: string, args: ReadonlyArray<string>, options: { cwd: string; env?: NodeJS.ProcessEnv }) =>
  Effect.callback<Run>((resume) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("error", (error) => resume(Effect.succeed({ code: -1, stdout, stderr: `${stderr}${error.message}` })))
    child.on("close", (code) => resume(Effect.succeed({ code, stdout, stderr })))
    return Effect.sync(() => {
      if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, "SIGKILL")
    })
  })

/** {@link exec} for a step that must succeed: a failure dies with the command, its directory and its output. */
const step = (command: string, args: ReadonlyArray<string>, options: { cwd: string; env?: NodeJS.ProcessEnv }) =>
  Effect.flatMap(exec(command, args, options), (run) =>
    run.code === 0
      ? Effect.succeed(run)
      : Effect.die(
          new Error(
            `${command} ${args.join(" ")} (in ${options.cwd}) exited ${run.code}:\n${run.stdout}\n${run.stderr}`.trim()
          )
        )
  )

interface NodeBinary {
  readonly major: 22 | 24
  readonly path: string
}

interface App {
  /** The app's directory: node_modules holds the installed tarballs and their registry dependencies. */
  readonly dir: string
  readonly versions: Readonly<Record<(typeof packages)[number], string>>
  readonly nodes: ReadonlyArray<NodeBinary>
}

class PackagedApp extends Context.Service<PackagedApp, App>()("test/packaging/PackagedApp") {}

/** Node 22 from the `node` package, installed once into the cache directory. */
const node22 = Effect.gen(function* () {
  const dir = Path.join(cache, "node22")
  const binary = Path.join(dir, "node_modules", "node", "bin", "node")
  const version = Fs.existsSync(binary) ? yield* exec(binary, ["--version"], { cwd: dir }) : undefined
  if (version === undefined || !version.stdout.startsWith("v22.")) {
    Fs.mkdirSync(dir, { recursive: true })
    Fs.writeFileSync(Path.join(dir, "package.json"), JSON.stringify({ private: true }))
    yield* step("npm", ["install", "--cache", Path.join(cache, "npm"), "--no-audit", "--no-fund", "node@22"], {
      cwd: dir
    })
  }
  const installed = yield* step(binary, ["--version"], { cwd: dir })
  if (!installed.stdout.startsWith("v22.")) {
    return yield* Effect.die(new Error(`${binary} is ${installed.stdout.trim()}, not Node 22: remove ${dir}`))
  }
  return binary
})

const packagedApp = Layer.effect(
  PackagedApp,
  Effect.gen(function* () {
    const work = yield* Effect.acquireRelease(
      Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "redflow-packaging-"))),
      (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
    )
    const tarballs = Path.join(work, "tarballs")
    Fs.mkdirSync(tarballs)
    const files: Record<string, string> = {}
    const versions: Record<string, string> = {}
    for (const name of packages) {
      const dir = Path.join(root, "packages", name)
      const before = new Set(Fs.readdirSync(tarballs))
      yield* step("pnpm", ["pack", "--pack-destination", tarballs], { cwd: dir })
      const file = Fs.readdirSync(tarballs).find((f) => !before.has(f))
      if (file === undefined) return yield* Effect.die(new Error(`pnpm pack in ${dir} wrote no tarball`))
      files[`@redflow/${name}`] = `file:${Path.join(tarballs, file)}`
      versions[name] = (
        JSON.parse(Fs.readFileSync(Path.join(dir, "package.json"), "utf8")) as { version: string }
      ).version
    }

    const platformNode = (
      JSON.parse(Fs.readFileSync(Path.join(root, "packages", "core", "package.json"), "utf8")) as {
        dependencies: Record<string, string>
      }
    ).dependencies["@effect/platform-node"]!
    const dir = Path.join(work, "app")
    Fs.mkdirSync(Path.join(dir, "src"), { recursive: true })
    const manifest = {
      name: "redflow-packaging-app",
      private: true,
      type: "module",
      dependencies: { ...files, effect: versionOf("effect"), "@effect/platform-node": platformNode },
      devDependencies: { typescript: versionOf("typescript"), "@types/node": versionOf("@types/node") }
    }
    Fs.writeFileSync(Path.join(dir, "package.json"), JSON.stringify(manifest, null, 2))
    yield* step("npm", ["install", "--cache", Path.join(cache, "npm"), "--prefer-offline", "--no-audit", "--no-fund"], {
      cwd: dir
    })
    for (const file of Fs.readdirSync(fixtures)) Fs.copyFileSync(Path.join(fixtures, file), Path.join(dir, file))

    const nodes: Array<NodeBinary> = [
      { major: 22, path: yield* node22 },
      { major: 24, path: Fs.realpathSync(Path.join(root, "node_modules", ".bin", "node")) }
    ]
    return { dir, versions: versions as App["versions"], nodes }
  })
)

/** The first `ts` block of a markdown file, or of its section under `## heading`. */
const program = (file: string, heading?: string): string => {
  const text = Fs.readFileSync(Path.join(root, file), "utf8")
  const at = heading === undefined ? 0 : text.indexOf(`\n## ${heading}\n`)
  const block = at < 0 ? undefined : /```ts\n([\s\S]*?)\n```/.exec(text.slice(at))?.[1]
  if (block === undefined)
    throw new Error(`${file}: no \`\`\`ts block${heading === undefined ? "" : ` under "## ${heading}"`}`)
  return `${block}\n`
}

/** The programs a user copies: the README's "Using it" and "Consuming", and the example each package's README starts with. */
const programs = (): Record<string, string> => ({
  "using-it.ts": program("README.md", "Using it"),
  "consuming.ts": program("README.md", "Consuming"),
  ...Object.fromEntries(
    ["core", "redis", "postgres", "testing"].map((name) => [`readme-${name}.ts`, program(`packages/${name}/README.md`)])
  )
})

const manifestOf = (app: App, name: string) =>
  JSON.parse(Fs.readFileSync(Path.join(app.dir, "node_modules", "@redflow", name, "package.json"), "utf8")) as {
    version: string
    exports?: Record<string, unknown>
    dependencies?: Record<string, string>
    bin?: Record<string, string>
  }

/** Runs the installed bin the way a shell does: `#!/usr/bin/env node` finds the given Node first on PATH. */
const redflow = (app: App, node: NodeBinary, args: ReadonlyArray<string>) =>
  exec(Path.join(app.dir, "node_modules", ".bin", "redflow"), args, {
    cwd: app.dir,
    env: { ...process.env, PATH: `${Path.dirname(node.path)}${Path.delimiter}${process.env.PATH ?? ""}` }
  })

/**
 * The JSON document a command printed on stdout (`--json`, or the round trip's last line: before it, Effect's default
 * logger may have printed the sink's warnings, which go to stdout in an app that installs no logger of its own).
 */
const json = (run: Run) => {
  try {
    const text = run.stdout.trimStart().startsWith("{") ? run.stdout : (run.stdout.trimEnd().split("\n").at(-1) ?? "")
    return JSON.parse(text) as Record<string, unknown>
  } catch {
    throw new Error(`expected JSON on stdout, exit ${run.code}:\n${run.stdout}\n${run.stderr}`)
  }
}

layer(Layer.mergeAll(packagedApp, RedisTestServer.layer()), { timeout: "10 minutes", excludeTestServices: true })(
  "the packed packages installed with npm into an app outside the workspace",
  (it) => {
    it.effect(
      "ship compiled JavaScript, declarations and source maps, with exports into dist and internals closed",
      () =>
        Effect.gen(function* () {
          const app = yield* PackagedApp
          for (const name of ["core", "redis", "postgres", "testing"]) {
            const dir = Path.join(app.dir, "node_modules", "@redflow", name)
            const manifest = manifestOf(app, name)
            expect(manifest.exports, name).toEqual({
              "./package.json": "./package.json",
              ".": { types: "./dist/index.d.ts", default: "./dist/index.js" },
              "./*": { types: "./dist/*.d.ts", default: "./dist/*.js" },
              "./internal/*": null
            })
            for (const file of ["index.js", "index.d.ts", "index.js.map", "index.d.ts.map"]) {
              expect(Fs.existsSync(Path.join(dir, "dist", file)), `${name}: dist/${file}`).toBe(true)
            }
            // The maps point at the shipped sources.
            const map = JSON.parse(Fs.readFileSync(Path.join(dir, "dist", "index.js.map"), "utf8")) as {
              sources: Array<string>
            }
            for (const source of map.sources) {
              expect(Fs.existsSync(Path.join(dir, "dist", source)), `${name}: ${source}`).toBe(true)
            }
            expect(Fs.existsSync(Path.join(dir, "test")), `${name} ships its tests`).toBe(false)
            expect(Fs.existsSync(Path.join(dir, "LICENSE")), `${name}: LICENSE`).toBe(true)
            expect(Fs.existsSync(Path.join(dir, "README.md")), `${name}: README.md`).toBe(true)
            // workspace:* became the version that was packed with it.
            for (const [dependency, range] of Object.entries(manifest.dependencies ?? {})) {
              if (dependency.startsWith("@redflow/")) {
                expect(range, `${name} → ${dependency}`).toBe(app.versions[dependency.slice(9) as "core"])
              }
            }
          }
          const internal = yield* exec(
            app.nodes[1]!.path,
            [
              "--input-type=module",
              "-e",
              'import("@redflow/core/internal/hash").then(() => console.log("open"), (e) => console.log(e.code))'
            ],
            { cwd: app.dir }
          )
          expect(internal.stdout.trim()).toBe("ERR_PACKAGE_PATH_NOT_EXPORTED")
        })
    )

    for (const resolution of ["nodenext", "bundler"] as const) {
      it.effect(
        `the README's "Using it" and "Consuming" programs and each package README's example type-check with moduleResolution ${resolution}, strict, without skipLibCheck`,
        () =>
          Effect.gen(function* () {
            const app = yield* PackagedApp
            for (const [file, text] of Object.entries(programs()))
              Fs.writeFileSync(Path.join(app.dir, "src", file), text)
            const tsconfig = JSON.parse(Fs.readFileSync(Path.join(app.dir, `tsconfig.${resolution}.json`), "utf8")) as {
              compilerOptions: Record<string, unknown>
            }
            expect(tsconfig.compilerOptions).toMatchObject({ moduleResolution: resolution, strict: true })
            expect(tsconfig.compilerOptions.skipLibCheck).toBeUndefined()
            const tsc = yield* exec(
              app.nodes[1]!.path,
              [Path.join(app.dir, "node_modules", "typescript", "bin", "tsc"), "-p", `tsconfig.${resolution}.json`],
              { cwd: app.dir }
            )
            expect(`${tsc.stdout}${tsc.stderr}`.trim()).toBe("")
            expect(tsc.code).toBe(0)
          })
      )
    }

    it.effect("the bin is a bundle that ships the licence of every package it inlines", () =>
      Effect.gen(function* () {
        const app = yield* PackagedApp
        const dist = Path.join(app.dir, "node_modules", "@redflow", "cli", "dist")
        const chunks = Fs.readdirSync(dist).filter((f) => /^bin(-.+)?\.js$/.test(f))
        expect(chunks.length).toBeGreaterThan(1)
        const licences = Fs.readFileSync(Path.join(dist, "bin-licenses.txt"), "utf8")
        const named = [...licences.matchAll(/^(@?[a-z0-9-]+(?:\/[a-z0-9-]+)?)@\d+\.\d+\.\d+ \(/gm)].map((m) => m[1])
        expect(named).toEqual(expect.arrayContaining(["effect", "@effect/platform-node", "ioredis", "pg", "yaml"]))
        for (const chunk of chunks) {
          const code = Fs.readFileSync(Path.join(dist, chunk), "utf8")
          // A chunk that only re-exports another holds no code of its own, and no banner.
          if (!/^export \{[^}]*\} from "\.\/[^"]+";\s*$/.test(code)) expect(code, chunk).toContain("bin-licenses.txt")
          // Nothing but Node's own modules and the bundle's chunks is imported: the bin needs no dependency installed.
          const imports = [...code.matchAll(/^import\b[^;]*?from "([^"]+)";$/gm)].map((m) => m[1]!)
          expect(
            imports.filter((i) => !i.startsWith("node:") && !i.startsWith("./")),
            chunk
          ).toEqual([])
        }
      })
    )

    for (const major of [22, 24] as const) {
      it.effect(
        `Node ${major}: plain JavaScript writes 1,000 events with the sink and a consumer group reads each once`,
        () =>
          Effect.gen(function* () {
            const app = yield* PackagedApp
            const { url } = yield* RedisTestServer.RedisTestServer
            const node = app.nodes.find((n) => n.major === major)!
            const stream = `packaging.${major}.${Date.now()}`
            const run = yield* exec(node.path, ["roundtrip.mjs", url, stream], { cwd: app.dir })
            expect(run.code, run.stderr).toBe(0)
            const result = json(run)
            // The test server runs with AOF off, so the sink's default `durability: "warn"` says so once.
            expect(run.stdout.match(/Acknowledged writes can be lost: AOF is off/g) ?? []).toHaveLength(1)
            expect(result.node).toMatch(new RegExp(`^v${major}\\.`))
            expect(result).toMatchObject({
              sink: { events: 1_000, written: 1_000, skipped: 0 },
              checkpoint: "00000000000003e8",
              length: 1_000,
              consumed: 1_000,
              distinct: 1_000,
              twice: 0
            })
          })
      )

      it.effect(`Node ${major}: the installed redflow bin runs --version, produce and stream info`, () =>
        Effect.gen(function* () {
          const app = yield* PackagedApp
          const { url } = yield* RedisTestServer.RedisTestServer
          const node = app.nodes.find((n) => n.major === major)!
          const stream = `packaging.cli.${major}.${Date.now()}`

          const version = yield* redflow(app, node, ["--version"])
          expect(version.code, version.stderr).toBe(0)
          expect(version.stdout).toContain(manifestOf(app, "cli").version)

          const produce = yield* redflow(app, node, [
            "produce",
            "--redis",
            url,
            "--stream",
            stream,
            "--events",
            "500",
            "--guarantee",
            "exactly-once",
            "--json"
          ])
          expect(produce.code, produce.stderr).toBe(0)
          expect(json(produce)).toMatchObject({ command: "produce", events: 500, written: 500 })

          const info = yield* redflow(app, node, ["stream", "info", stream, "--redis", url, "--json"])
          expect(info.code, info.stderr).toBe(0)
          expect(json(info)).toMatchObject({ command: "stream info", stream, length: 500 })

          // `run` loads the bundle's PostgreSQL chunk (the source, pg): a server that is not there is named.
          const free = yield* Effect.promise(() => RedisTestServer.freePort())
          const run = yield* redflow(app, node, [
            "run",
            "--source",
            `postgres://postgres@127.0.0.1:${free}/postgres`,
            "--tables",
            "public.orders",
            "--redis",
            url,
            "--stream",
            stream
          ])
          expect(run.code, run.stderr).toBe(1)
          expect(run.stderr).toMatch(
            new RegExp(`^redflow: error: PostgreSQL at 127\\.0\\.0\\.1:${free}/postgres is unavailable: .*ECONNREFUSED`)
          )
        })
      )
    }
  }
)
