/**
 * The documentation stands on its own in a clone: every link of the README and of docs/ leads to a file (and heading)
 * of the repository, nothing points at files outside it, source comments that mention the spec say where it is
 * (docs/DESIGN.md, docs/GUARANTEES.md), the commands given for the examples work on a machine whose own Node is
 * older than 24, and the licence is stated.
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import { describe, expect, it } from "@effect/vitest"

const root = Path.join(import.meta.dirname, "..")
const read = (file: string) => Fs.readFileSync(Path.join(root, file), "utf8")

const docs = ["README.md", ...Fs.readdirSync(Path.join(root, "docs")).map((f) => `docs/${f}`)].filter((f) =>
  f.endsWith(".md")
)

/** Every `.ts` file of the workspace's own sources, tests, examples and benchmarks. */
const sources = (): Array<string> => {
  const out: Array<string> = []
  const walk = (dir: string) => {
    for (const entry of Fs.readdirSync(Path.join(root, dir), { withFileTypes: true })) {
      const rel = `${dir}/${entry.name}`
      if (entry.isDirectory()) {
        if (entry.name !== "node_modules" && entry.name !== "results" && entry.name !== "dist") walk(rel)
      } else if (entry.name.endsWith(".ts")) out.push(rel)
    }
  }
  for (const dir of ["packages", "examples", "bench", "test"]) walk(dir)
  return out
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens. */
const anchor = (heading: string) =>
  heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, "")
    .replace(/ /g, "-")

const headings = (markdown: string) =>
  new Set([...markdown.matchAll(/^#{1,6} (.+)$/gm)].map((m) => anchor(m[1]!.replace(/`/g, ""))))

describe("documentation", () => {
  it("has a design note and a guarantees page, and the README links both", () => {
    const readme = read("README.md")
    expect(readme).toContain("](docs/DESIGN.md)")
    expect(readme).toContain("](docs/GUARANTEES.md)")
  })

  for (const doc of docs) {
    it(`${doc}: every relative link leads to a file of the repository, and an anchor to one of its headings`, () => {
      const text = read(doc)
      const links = [...text.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!).filter((l) => !/^[a-z]+:/.test(l))
      for (const link of links) {
        const [target, hash] = link.split("#") as [string, string | undefined]
        const file = target === "" ? doc : Path.posix.normalize(Path.posix.join(Path.posix.dirname(doc), target))
        expect(file.startsWith(".."), `${doc} links outside the repository: ${link}`).toBe(false)
        expect(Fs.existsSync(Path.join(root, file)), `${doc} links to a missing file: ${link}`).toBe(true)
        if (hash !== undefined && file.endsWith(".md")) {
          expect([...headings(read(file))], `${doc}: ${link} names no heading of ${file}`).toContain(hash)
        }
      }
    })
  }

  it("nothing in the docs or the sources points at files outside the repository", () => {
    const outside = /\.\.\/shared|shared\/spec|redis-sink\.txt|shared\/DESIGN\.md/
    const offenders = [...docs, ...sources()].filter((file) => outside.test(read(file)))
    expect(offenders).toEqual([])
  })

  it('a source file that mentions "the spec" says where it is (docs/DESIGN.md or docs/GUARANTEES.md)', () => {
    const offenders = sources().filter((file) => {
      const text = read(file)
      return /\bthe spec\b|\bspec's\b/i.test(text) && !/docs\/(DESIGN|GUARANTEES)\.md/.test(text)
    })
    expect(offenders).toEqual([])
  })

  it("examples are run through pnpm (its Node 24), never with a bare `node` that may be Node 20", () => {
    for (const file of ["README.md", ...sources().filter((f) => f.startsWith("examples/"))]) {
      const bare = [...read(file).matchAll(/(\S+ )?node examples\//g)].filter((m) => m[1] !== "exec ")
      expect(
        bare.map((m) => m[0]),
        file
      ).toEqual([])
    }
    expect(read("README.md")).toContain("ERR_UNKNOWN_FILE_EXTENSION")
    expect(JSON.parse(read("package.json")).devDependencies.node).toBe("24")
  })
})

describe("licence", () => {
  it("LICENSE is the MIT licence of the Redflow authors", () => {
    const license = read("LICENSE")
    expect(license).toMatch(/^MIT License\n\nCopyright \(c\) 2026 the Redflow authors\n/)
    expect(license).toContain('THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND')
  })

  it('every package.json of the workspace says "license": "MIT"', () => {
    const packages = ["package.json", "examples/package.json", "bench/package.json"].concat(
      Fs.readdirSync(Path.join(root, "packages")).map((p) => `packages/${p}/package.json`)
    )
    for (const file of packages) {
      expect(JSON.parse(read(file)).license, file).toBe("MIT")
    }
  })
})
