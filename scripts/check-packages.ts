/**
 * `pnpm check:packages`: packs every package as a release does (`pnpm pack`, whose prepack builds first) and checks
 * each tarball with the tools made for it:
 *
 * - publint `--strict` (a warning fails too): the files that `exports`, `bin` and `types` name exist in the tarball,
 *   the conditions are in a working order, the module format matches `type`.
 * - @arethetypeswrong/cli with the `esm-only` profile: the packages are ESM only, so `require` from CommonJS and the
 *   node10 resolution (which ignores `exports`) are not asked for; node16/nodenext and bundler resolution must find
 *   the declarations and the JavaScript of every entry point. attw does not expand the `./*` export pattern, so each
 *   public module (each top-level `dist/*.d.ts` of a tarball whose exports have that pattern) is named to it as an
 *   entry point.
 *
 * Exits 1 after checking everything, naming the packages that failed; run from the repository root.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"

const root = Path.join(import.meta.dirname, "..")
const packages = ["core", "redis", "postgres", "testing", "cli"]
const out = Fs.mkdtempSync(Path.join(Os.tmpdir(), "redflow-check-packages-"))

/** Runs a command, its output shown; `quiet` keeps the output back unless the command fails (pnpm pack lists files). */
const run = (command: string, args: ReadonlyArray<string>, cwd: string, quiet = false): boolean => {
  process.stdout.write(`$ ${command} ${args.join(" ")}\n`)
  const result = ChildProcess.spawnSync(command, args, { cwd, stdio: quiet ? "pipe" : "inherit", encoding: "utf8" })
  if (quiet && result.status !== 0) process.stdout.write(`${result.stdout}${result.stderr}`)
  return result.status === 0
}

const failed: Array<string> = []
try {
  for (const name of packages) {
    const dir = Path.join(root, "packages", name)
    const before = new Set(Fs.readdirSync(out))
    if (!run("pnpm", ["pack", "--pack-destination", out], dir, true)) {
      failed.push(`${name} (pnpm pack)`)
      continue
    }
    const tarball = Fs.readdirSync(out).find((f) => f.endsWith(".tgz") && !before.has(f))
    if (tarball === undefined) {
      failed.push(`${name} (pnpm pack wrote no tarball into ${out})`)
      continue
    }
    const file = Path.join(out, tarball)
    if (!run("pnpm", ["exec", "publint", "--strict", file], root)) failed.push(`${name} (publint)`)
    const listing = ChildProcess.spawnSync("tar", ["-tzf", file], { encoding: "utf8" }).stdout.split("\n")
    const manifest = JSON.parse(
      ChildProcess.spawnSync("tar", ["-xzOf", file, "package/package.json"], { encoding: "utf8" }).stdout
    ) as { exports?: Record<string, unknown> }
    // A package without a module to import (a bin only) has no types for attw to check.
    if (manifest.exports === undefined || Object.keys(manifest.exports).every((k) => k === "./package.json")) continue
    // Only a `./*` pattern hides modules from attw; explicitly exported ones it finds itself.
    const wildcard = "./*" in manifest.exports
    const entrypoints = listing
      .map((f) => /^package\/dist\/([^/]+)\.d\.ts$/.exec(f)?.[1])
      .filter((m): m is string => wildcard && m !== undefined && m !== "index")
      .map((m) => `./${m}`)
    // The tarball first: --include-entrypoints takes every argument after it.
    const attw = [
      "exec",
      "attw",
      file,
      "--profile",
      "esm-only",
      "--format",
      "table-flipped",
      "--no-emoji",
      "--no-color"
    ]
    if (!run("pnpm", entrypoints.length > 0 ? [...attw, "--include-entrypoints", ...entrypoints] : attw, root)) {
      failed.push(`${name} (attw)`)
    }
  }
} finally {
  Fs.rmSync(out, { recursive: true, force: true })
}

if (failed.length > 0) {
  process.stdout.write(`\ncheck:packages failed: ${failed.join(", ")}\n`)
  process.exit(1)
}
process.stdout.write(`\ncheck:packages: ${packages.join(", ")} pass publint and attw\n`)
