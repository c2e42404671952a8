/**
 * The compiled `redflow`, as a user installs it: every published package packed (`pnpm pack`, whose `prepack`
 * builds it) and the tarballs installed with npm into a fresh app outside the workspace (dependencies from the npm
 * registry or npm's cache). Used by `bench/startup.ts` and by the PostgreSQL benches' `--via compiled`.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

/** The workspace this bench runs in. */
export const ROOT = fileURLToPath(new URL("../..", import.meta.url))
/** The packages an application installs to get the `redflow` bin. */
const PUBLISHED = ["core", "redis", "postgres", "cli"] as const

const run = (command: string, args: ReadonlyArray<string>, cwd: string) => {
  const r = ChildProcess.spawnSync(command, [...args], { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
  if (r.status !== 0) throw new Error(`${command} ${args.join(" ")} (in ${cwd}) failed:\n${r.stdout}\n${r.stderr}`)
  return r.stdout
}

/** Packs and installs into a new temp directory; returns the app's directory. */
export const install = (log: (line: string) => void = (line) => process.stderr.write(`${line}\n`)): string => {
  const tmp = Fs.mkdtempSync(Path.join(Os.tmpdir(), "redflow-compiled-"))
  const packs = Path.join(tmp, "packs")
  const app = Path.join(tmp, "app")
  Fs.mkdirSync(packs)
  Fs.mkdirSync(app)
  for (const name of PUBLISHED) {
    log(`packing @redflow/${name} (its prepack builds it)`)
    run("pnpm", ["pack", "--pack-destination", packs], Path.join(ROOT, "packages", name))
  }
  Fs.writeFileSync(Path.join(app, "package.json"), JSON.stringify({ name: "compiled-app", private: true }))
  const tarballs = Fs.readdirSync(packs).map((f) => Path.join(packs, f))
  log(`npm install of ${tarballs.length} tarballs into ${app}`)
  run("npm", ["install", "--no-audit", "--no-fund", "--loglevel", "error", ...tarballs], app)
  return app
}

/** The `redflow` bin of a checkout's sources (type-stripped TypeScript), e.g. {@link ROOT} or another worktree. */
export const sourcesBinOf = (checkout: string): string => Path.join(checkout, "packages", "cli", "src", "bin.ts")

/** The installed bin's JavaScript in an app made by {@link install}. */
export const binOf = (app: string): string => Path.join(app, "node_modules", "@redflow", "cli", "dist", "bin.js")
