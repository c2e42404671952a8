/**
 * The child of `source.ts`: one PostgresSource of the tree given, read from its slot until `rows` events arrived,
 * nothing downstream. Prints one JSON line: CPU (user + system, ms) and wall time (ms) from the first event to the
 * last, and from start to the first event. Effect and the source are imported from that tree, so two trees (this
 * branch and `--before`) run their own code.
 *
 *   node bench/postgres/sourceChild.ts TREE URL SLOT PUBLICATION TABLES ROWS
 */
import { createRequire } from "node:module"
import { pathToFileURL } from "node:url"

const [tree, url, slot, publication, tables, rowsText] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
  string,
  string
]
const rows = Number(rowsText)
const started = performance.now()
const fromTree = createRequire(`${tree}/packages/postgres/package.json`)
const load = (specifier: string) => import(pathToFileURL(fromTree.resolve(specifier)).href)
const Effect = (await load("effect/Effect")) as typeof import("effect/Effect")
const Option = (await load("effect/Option")) as typeof import("effect/Option")
const Stream = (await load("effect/Stream")) as typeof import("effect/Stream")
const PostgresSource = (await import(
  pathToFileURL(`${tree}/packages/postgres/src/PostgresSource.ts`).href
)) as typeof import("../../packages/postgres/src/PostgresSource.ts")

let seen = 0
let firstAt = 0
let cpuAtFirst = process.cpuUsage()
/** Once every row came: the figures, and the process ends (the stream itself would wait for more). */
const done = () => {
  const cpu = process.cpuUsage(cpuAtFirst)
  process.stdout.write(
    JSON.stringify({
      rows: seen,
      startupMs: firstAt - started,
      streamingMs: performance.now() - firstAt,
      streamingCpuMs: (cpu.user + cpu.system) / 1000
    }) + "\n",
    () => process.exit(0)
  )
}
await Effect.runPromise(
  Effect.scoped(
    Effect.gen(function* () {
      const source = yield* PostgresSource.make({
        url,
        tables: tables.split(","),
        slot,
        publication,
        snapshot: "never"
      })
      yield* source.stream(Option.none()).pipe(
        Stream.runForEachArray((events) =>
          Effect.sync(() => {
            if (seen === 0) {
              firstAt = performance.now()
              cpuAtFirst = process.cpuUsage()
            }
            seen += events.length
            if (seen >= rows) done()
          })
        )
      )
    })
  )
)
