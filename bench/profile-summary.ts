/**
 * Summarizes a `.cpuprofile` (from `pnpm bench --profile …` or `node --cpu-prof`): self time by package, the top
 * functions by self time, and the workspace's functions by total time.
 *
 *   node bench/profile-summary.ts bench/results/profile-sink-alo.cpuprofile [--top 30] [--json]
 *   node bench/profile-summary.ts <file> --callers writeUtf8String [--depth 6]   who a function's time is for
 */
import * as Fs from "node:fs"
import { callers, format, type Profile, summarize } from "./src/ProfileSummary.ts"

const args = process.argv.slice(2)
const option = (name: string) => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : undefined
}
const valued = new Set(["--top", "--callers", "--depth"].flatMap((name) => [name, option(name)]))
const file = args.find((a) => !a.startsWith("--") && !valued.has(a))
const top = Number(option("--top") ?? 30)
const callersOf = option("--callers")
if (file === undefined) {
  process.stderr.write("usage: node bench/profile-summary.ts <file.cpuprofile> [--top N] [--json]\n")
  process.exit(2)
}
const profile = JSON.parse(Fs.readFileSync(file, "utf8")) as Profile
const summary = summarize(profile)
if (callersOf !== undefined) {
  const paths = callers(profile, callersOf, Number(option("--depth") ?? 6)).slice(0, top)
  for (const p of paths)
    process.stdout.write(`${p.percent.toFixed(1).padStart(5)} %  ${p.ms.toFixed(0).padStart(6)} ms  ${p.path}\n`)
} else if (args.includes("--json")) {
  const bySelf = [...summary.functions].sort((a, b) => b.selfMs - a.selfMs).slice(0, top)
  process.stdout.write(`${JSON.stringify({ ...summary, functions: bySelf }, null, 2)}\n`)
} else {
  process.stdout.write(`${format(summary, top)}\n`)
}
