/**
 * How fast `SyntheticSource` generates events: a speed figure, not a test (a test that times itself fails on a
 * loaded machine). Prints the median of a few rounds after a warm-up.
 *
 *   node bench/source.ts [events]     (default 100,000; `pnpm bench:source` from the repository root)
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as SyntheticSource from "@redflow/core/SyntheticSource"

const events = Number(process.argv[2] ?? 100_000)
if (!Number.isInteger(events) || events < 1) {
  process.stderr.write(`usage: node bench/source.ts [events], events an integer >= 1, got ${process.argv[2]}\n`)
  process.exit(2)
}

const generate = (count: number) => Effect.runPromise(Stream.runCount(SyntheticSource.make({ count })))

await generate(10_000) // warm-up
const rounds: Array<number> = []
for (let i = 0; i < 5; i++) {
  const started = performance.now()
  const n = await generate(events)
  rounds.push(performance.now() - started)
  if (n !== events) throw new Error(`generated ${n} events, expected ${events}`)
}
rounds.sort((a, b) => a - b)
const median = rounds[Math.floor(rounds.length / 2)]!
process.stdout.write(
  `SyntheticSource: ${events.toLocaleString("en-US")} events in ${median.toFixed(0)} ms (median of ${rounds.length}; ` +
    `${Math.round((events * 1000) / median).toLocaleString("en-US")} events/s)\n`
)
