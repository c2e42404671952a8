/**
 * The three PostgreSQL benches of issue 11 in turn, each in its own process with its own servers: throughput.ts,
 * latency.ts, memory.ts (about 5 minutes). Each writes its section of the results to /tmp/bench-postgres.md (or
 * `--out FILE`) and prints it; options given here (`--via script`, `--out FILE`) go to all three.
 *
 *   pnpm bench:postgres [--via run|script] [--out FILE]
 */
import * as ChildProcess from "node:child_process"
import * as Path from "node:path"

const dir = Path.dirname(new URL(import.meta.url).pathname)
let failed = 0
for (const bench of ["throughput.ts", "latency.ts", "memory.ts"]) {
  const run = ChildProcess.spawnSync(process.execPath, [Path.join(dir, bench), ...process.argv.slice(2)], {
    stdio: "inherit"
  })
  if (run.status !== 0) {
    process.stderr.write(`${bench} exited with ${run.status ?? run.signal}\n`)
    failed++
  }
}
process.exit(failed === 0 ? 0 : 1)
