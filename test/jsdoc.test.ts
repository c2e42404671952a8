/**
 * The public surface is documented the way Effect documents its own: every module a user can import through a
 * package's `exports` (the `internal/` folder excepted) opens with a module comment, and each of its exports has a
 * JSDoc block with a description, `@since` and `@category`. The entries of an `index.ts` barrel (`export * as X`)
 * are the modules themselves and need a description and `@since`, as in Effect's own `index.ts`.
 *
 * The exports are read with TypeScript's own API (`typescript/unstable/sync`), so re-exports (`export { x } from`,
 * `export * from`) count as exports of the module that re-exports them.
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { getTextOfJSDocComment, isJSDoc, type Node, type SourceFile, SyntaxKind } from "typescript/unstable/ast"
import { API, type Project } from "typescript/unstable/sync"

const root = Path.join(import.meta.dirname, "..")
const packages = ["core", "redis", "postgres", "testing"] as const

type Target = string | null | { readonly default?: Target; readonly import?: Target }
type Manifest = {
  readonly exports: Record<string, Target>
  readonly publishConfig: { readonly exports: Record<string, Target> }
}
const manifest = (pkg: string): Manifest =>
  JSON.parse(Fs.readFileSync(Path.join(root, "packages", pkg, "package.json"), "utf8")) as Manifest

const flat = (target: Target | undefined): string | null =>
  target === undefined || target === null
    ? null
    : typeof target === "string"
      ? target
      : flat(target.import ?? target.default)

/** What Node resolves a subpath to through an `exports` map: an exact key first, else the pattern with the longest prefix. */
const resolve = (exports: Record<string, Target>, subpath: string): string | null => {
  if (subpath in exports) return flat(exports[subpath])
  const patterns = Object.keys(exports)
    .filter((key) => {
      const [prefix, suffix] = key.split("*") as [string, string | undefined]
      return (
        suffix !== undefined &&
        subpath.startsWith(prefix) &&
        subpath.endsWith(suffix) &&
        subpath.length >= key.length - 1
      )
    })
    .sort((a, b) => b.indexOf("*") - a.indexOf("*") || b.length - a.length)
  const key = patterns[0]
  if (key === undefined) return null
  const target = flat(exports[key])
  if (target === null) return null
  const [prefix, suffix] = key.split("*") as [string, string]
  return target.replaceAll("*", subpath.slice(prefix.length, subpath.length - suffix.length))
}

/** The `.ts` files under a directory, dependencies and build output aside. */
const walk = (dir: string): Array<string> =>
  Fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? ["node_modules", "dist", "results"].includes(entry.name)
        ? []
        : walk(Path.join(dir, entry.name))
      : entry.name.endsWith(".ts")
        ? [Path.join(dir, entry.name)]
        : []
  )

/** The workspace's own `.ts` files: sources, tests, examples, benchmarks and scripts, relative to the root. */
const workspaceSources = (): Array<string> =>
  ["packages", "test", "examples", "bench", "scripts"]
    .flatMap((dir) => walk(Path.join(root, dir)))
    .map((file) => Path.relative(root, file))

/** The subpaths of an `exports` map that lead to a file: each key read back through the map, as Node would. */
const subpathsOf = (exports: Record<string, Target>, file: string): Array<string> =>
  Object.entries(exports).flatMap(([key, target]) => {
    const to = flat(target)
    if (to === null) return []
    if (!key.includes("*")) return to === file ? [key] : []
    const [prefix, suffix] = to.split("*") as [string, string]
    if (!file.startsWith(prefix) || !file.endsWith(suffix) || file.length < to.length - 1) return []
    const subpath = key.replace("*", file.slice(prefix.length, file.length - suffix.length))
    return resolve(exports, subpath) === file ? [subpath] : []
  })

/** The files of a package a user can import through its `exports`, `internal/` excepted, relative to the root. */
const publicModules = (pkg: string): Array<string> => {
  const dir = Path.join(root, "packages", pkg)
  const { exports } = manifest(pkg)
  return walk(Path.join(dir, "src"))
    .map((file) => `./${Path.relative(dir, file)}`)
    .filter((file) => !file.includes("/internal/") && subpathsOf(exports, file).length > 0)
    .map((file) => Path.posix.join("packages", pkg, file))
    .sort()
}

interface Doc {
  readonly description: string
  readonly tags: ReadonlyMap<string, string>
}

const docOf = (block: Node | undefined): Doc | undefined =>
  block === undefined || !isJSDoc(block)
    ? undefined
    : {
        description: (getTextOfJSDocComment(block.comment) ?? "").trim(),
        tags: new Map(
          (block.tags ?? []).map((tag) => [tag.tagName.text, (getTextOfJSDocComment(tag.comment) ?? "").trim()])
        )
      }

/** The statement of the source file that holds a declaration. */
const statementOf = (node: Node): Node => (node.parent.kind === SyntaxKind.SourceFile ? node : statementOf(node.parent))

/**
 * The JSDoc block of a declaration: its own, else the nearest one up to its statement. The first block of a file's
 * first statement is the module comment, not the statement's.
 */
const declarationDoc = (node: Node, sourceFile: SourceFile): Doc | undefined => {
  const statement = statementOf(node)
  for (let at: Node = node; ; at = at.parent) {
    const blocks = at === sourceFile.statements[0] ? (at.jsDoc ?? []).slice(1) : (at.jsDoc ?? [])
    if (blocks.length > 0) return docOf(blocks.at(-1))
    if (at === statement) return undefined
  }
}

/** What a doc lacks of a description, `@since` and (unless `barrel`) `@category`. */
const lacks = (doc: Doc | undefined, barrel: boolean): Array<string> => {
  if (doc === undefined) return ["a JSDoc block"]
  return [
    ...(doc.description === "" ? ["a description"] : []),
    ...(doc.tags.get("since") ? [] : ["@since"]),
    ...(barrel || doc.tags.get("category") ? [] : ["@category"])
  ]
}

const kinds = new Map<SyntaxKind, string>([
  [SyntaxKind.VariableDeclaration, "const"],
  [SyntaxKind.FunctionDeclaration, "function"],
  [SyntaxKind.ClassDeclaration, "class"],
  [SyntaxKind.InterfaceDeclaration, "interface"],
  [SyntaxKind.TypeAliasDeclaration, "type"],
  [SyntaxKind.EnumDeclaration, "enum"],
  [SyntaxKind.ModuleDeclaration, "namespace"],
  [SyntaxKind.ExportSpecifier, "re-export"],
  [SyntaxKind.NamespaceExport, "module"],
  [SyntaxKind.ExportAssignment, "default"]
])

/** Each undocumented export of a public module, and what its JSDoc lacks. */
const undocumented = (project: Project, file: string): Array<string> => {
  const sourceFile = project.program.getSourceFile(Path.join(root, file))
  if (sourceFile === undefined) return [`${file}: not in the TypeScript project`]
  const out: Array<string> = []
  const first = sourceFile.statements[0]
  const moduleDoc = lacks(docOf(first?.jsDoc?.[0]), true)
  if (moduleDoc.length > 0) out.push(`${file}: the module comment lacks ${moduleDoc.join(", ")}`)
  const symbol = project.checker.getSymbolAtLocation(sourceFile)
  for (const exported of symbol === undefined ? [] : project.checker.getExportsOfModule(symbol)) {
    // An overloaded function is documented once, on its first signature.
    const declarations = (exported.declarations ?? []).filter(
      (d, i, all) => d.kind !== SyntaxKind.FunctionDeclaration || all.findIndex((o) => o.kind === d.kind) === i
    )
    for (const handle of declarations) {
      const declaration = handle.resolve(project)
      if (declaration === undefined)
        throw new Error(`${file}: ${exported.name} has a declaration TypeScript cannot find`)
      const at = declaration.getSourceFile()
      const missing = lacks(declarationDoc(declaration, at), declaration.kind === SyntaxKind.NamespaceExport)
      if (missing.length === 0) continue
      const where = Path.relative(root, at.fileName)
      const kind = kinds.get(declaration.kind) ?? SyntaxKind[declaration.kind]
      out.push(
        `${where === file ? file : `${file} (from ${where})`}: ${kind} ${exported.name} lacks ${missing.join(", ")}`
      )
    }
  }
  return out
}

describe("the public surface", () => {
  let api: API | undefined
  let project: Project
  beforeAll(() => {
    api = new API({ cwd: root })
    const found = api.updateSnapshot({ openProjects: [Path.join(root, "tsconfig.json")] }).getProjects()[0]
    if (found === undefined) throw new Error("TypeScript found no project for tsconfig.json")
    project = found
  })
  afterAll(() => api?.close())

  for (const pkg of packages) {
    it(`@redflow/${pkg}: the public modules, the files its exports reach, are those at the top of src/`, () => {
      const src = Path.join(root, "packages", pkg, "src")
      const topLevel = Fs.readdirSync(src)
        .filter((name) => name.endsWith(".ts"))
        .map((name) => `packages/${pkg}/src/${name}`)
        .sort()
      expect(publicModules(pkg)).toEqual(topLevel)
    })

    it(`@redflow/${pkg}: the published exports keep internal/ closed`, () => {
      const { exports } = manifest(pkg).publishConfig
      expect(resolve(exports, "./internal/anything")).toBeNull()
      expect(resolve(exports, "./index")).not.toBeNull()
    })

    it(`@redflow/${pkg}: the workspace exports open internal/ exactly when a workspace file imports through them`, () => {
      const importers = workspaceSources().filter((file) =>
        Fs.readFileSync(Path.join(root, file), "utf8").includes(`from "@redflow/${pkg}/internal/`)
      )
      const opens = resolve(manifest(pkg).exports, "./internal/anything") !== null
      expect(opens, `@redflow/${pkg}/internal/* is imported by: ${importers.join(", ") || "nothing"}`).toBe(
        importers.length > 0
      )
    })

    it(`@redflow/${pkg}: every export of a public module has a JSDoc with a description, @since and @category`, () => {
      const missing = publicModules(pkg).flatMap((file) => undocumented(project, file))
      expect(missing, `undocumented exports:\n${missing.join("\n")}\n`).toEqual([])
    })
  }
})
