/**
 * Builds the published `redflow` executable as a bundle: `dist/bin.js` and the chunks it imports (`dist/bin-*.js`),
 * with the workspace packages and the third-party ones inlined, so a start loads a few dozen files instead of about
 * 350 (effect alone is over 200 modules, ioredis 55). `redflow --version`, compiled package: 0.47 s → 0.24 s.
 *
 * The command modules stay separate chunks loaded when their command runs (`run` does not parse `demo`'s code), and
 * the entry chunk still turns on Node's compile cache before the rest loads. The licence of every inlined package is
 * written to `dist/bin-licenses.txt`, which each chunk's banner names.
 *
 * Run by `pnpm build` after `tsc` (which writes the library export `dist/Cli.js`); `--out DIR` writes elsewhere.
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import { rolldown } from "rolldown"

const packageDir = Path.resolve(import.meta.dirname, "..")
// `--out DIR`: write the bundle there instead of dist/ (the package test builds into a temp directory).
const outAt = process.argv.indexOf("--out")
const dist = outAt >= 0 ? Path.resolve(process.argv[outAt + 1]!) : Path.join(packageDir, "dist")
const LICENSES = "bin-licenses.txt"

/** Optional native add-ons and runtime-specific modules the inlined packages require only on paths the CLI never takes. */
const external = ["pg-native", "cloudflare:sockets"]

const bundle = await rolldown({
  input: { bin: Path.join(packageDir, "src", "bin.ts") },
  platform: "node",
  external,
  // The sources' `.ts` specifiers are rewritten by tsc for the library build; here rolldown resolves them itself.
  tsconfig: Path.join(packageDir, "tsconfig.build.json"),
  logLevel: "warn"
})
const { output } = await bundle.write({
  dir: dist,
  format: "esm",
  entryFileNames: "[name].js",
  // In dist/ itself, not a subdirectory: Cli.ts reads `../package.json` relative to its own chunk.
  chunkFileNames: "bin-[name]-[hash].js",
  banner: `// The redflow command line, bundled: licences of the packages inlined here in ${LICENSES}.`
})
await bundle.close()

interface Manifest {
  readonly name: string
  readonly version: string
  readonly license?: string
  readonly repository?: string | { url?: string }
}

// Every package with a module in the bundle: the nearest directory above the module whose package.json has a name
// (a package's subdirectories may hold package.json files without one). Each directory is read once.
const manifests = new Map<string, Manifest | undefined>()
const manifestIn = (dir: string): Manifest | undefined => {
  if (!manifests.has(dir)) {
    const file = Path.join(dir, "package.json")
    const manifest = Fs.existsSync(file) ? (JSON.parse(Fs.readFileSync(file, "utf8")) as Partial<Manifest>) : {}
    manifests.set(dir, manifest.name === undefined ? undefined : (manifest as Manifest))
  }
  return manifests.get(dir)
}
const packages = new Map<string, Manifest>()
for (const chunk of output) {
  if (chunk.type !== "chunk") continue
  for (const id of chunk.moduleIds) {
    if (!Path.isAbsolute(id)) continue
    for (let dir = Path.dirname(id); dir !== Path.dirname(dir); dir = Path.dirname(dir)) {
      const manifest = manifestIn(dir)
      if (manifest === undefined) continue
      packages.set(dir, manifest)
      break
    }
  }
}
const notices: Array<string> = []
for (const [dir, manifest] of [...packages].sort(([a], [b]) => (a < b ? -1 : 1))) {
  if (manifest.name.startsWith("@redflow/")) continue
  const licenceFile = Fs.readdirSync(dir).find((f) => /^(licen[cs]e|copying)(\.(md|txt))?$/i.test(f))
  const repository = typeof manifest.repository === "string" ? manifest.repository : manifest.repository?.url
  if (licenceFile === undefined && (manifest.license === undefined || repository === undefined)) {
    throw new Error(`bundle: ${manifest.name}@${manifest.version} (${dir}) names no licence to include`)
  }
  notices.push(
    `${manifest.name}@${manifest.version} (${manifest.license ?? "see below"})\n\n` +
      (licenceFile === undefined
        ? `The package ships no licence file; its package.json says ${manifest.license}, source: ${repository}`
        : Fs.readFileSync(Path.join(dir, licenceFile), "utf8").trim())
  )
}
Fs.writeFileSync(
  Path.join(dist, LICENSES),
  `The redflow executable (dist/bin.js and dist/bin-*.js) includes the following packages.\n\n` +
    notices.join("\n\n" + "-".repeat(80) + "\n\n") +
    "\n"
)
Fs.chmodSync(Path.join(dist, "bin.js"), 0o755)
console.log(
  `bundle: ${output.filter((o) => o.type === "chunk").length} chunks, ${notices.length} third-party licences in dist/${LICENSES}`
)
