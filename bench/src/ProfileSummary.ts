/**
 * Summaries of a V8 `.cpuprofile`: where the time went by function (self time: the function's own code; total
 * time: itself and what it called, counted once per sample even under recursion), and by package.
 */
import * as Path from "node:path"

export interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
  readonly columnNumber: number
}

export interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly children?: ReadonlyArray<number>
}

export interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly startTime: number
  readonly endTime: number
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

export interface FunctionTime {
  readonly name: string
  /** `path:line` (1-based), shortened to the package or the workspace path. */
  readonly location: string
  readonly category: string
  readonly selfMs: number
  readonly selfPercent: number
  readonly totalMs: number
  readonly totalPercent: number
}

export interface Summary {
  readonly durationMs: number
  /** Time on the CPU (everything but `(idle)`). */
  readonly busyMs: number
  readonly idlePercent: number
  readonly functions: ReadonlyArray<FunctionTime>
  readonly categories: ReadonlyArray<{ readonly category: string; readonly selfMs: number; readonly percent: number }>
}

/** The package (or part of the workspace) a frame belongs to. */
export const categoryOf = (frame: CallFrame): string => {
  const url = frame.url
  if (url === "") {
    if (frame.functionName.startsWith("(")) return frame.functionName
    return "V8 builtins / native"
  }
  if (url.startsWith("node:")) return "node internals"
  const pnpm = /node_modules\/\.pnpm\/[^/]+\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)
  if (pnpm !== null) return pnpm[1]!
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)
  if (nm !== null) return nm[1]!
  const pkg = /\/packages\/([^/]+)\/src\//.exec(url)
  if (pkg !== null) return `@redflow/${pkg[1]}`
  if (url.includes("/bench/")) return "bench"
  return "other"
}

const shortLocation = (frame: CallFrame): string => {
  if (frame.url === "") return ""
  let path = frame.url.replace(/^file:\/\//, "")
  const pnpm = /node_modules\/\.pnpm\/[^/]+\/node_modules\/(.*)$/.exec(path)
  if (pnpm !== null) path = pnpm[1]!
  else {
    const ws = /\/(packages\/.*|bench\/.*)$/.exec(path)
    if (ws !== null) path = ws[1]!
    else if (!path.startsWith("node:")) path = Path.basename(path)
  }
  return `${path}:${frame.lineNumber + 1}`
}

const keyOf = (frame: CallFrame) => `${frame.functionName}|${frame.url}|${frame.lineNumber}|${frame.columnNumber}`

export const summarize = (profile: Profile): Summary => {
  const byId = new Map<number, ProfileNode>()
  const parent = new Map<number, number>()
  for (const node of profile.nodes) {
    byId.set(node.id, node)
    for (const child of node.children ?? []) parent.set(child, node.id)
  }
  const self = new Map<string, number>()
  const total = new Map<string, number>()
  const frames = new Map<string, CallFrame>()
  let duration = 0
  let idle = 0
  // Sample i covers the time until sample i + 1 (V8 records the delta before each sample).
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = (profile.timeDeltas[i + 1] ?? 0) / 1000
    if (dt <= 0) continue
    duration += dt
    const leaf = byId.get(profile.samples[i]!)
    if (leaf === undefined) continue
    if (leaf.callFrame.functionName === "(idle)") idle += dt
    const leafKey = keyOf(leaf.callFrame)
    frames.set(leafKey, leaf.callFrame)
    self.set(leafKey, (self.get(leafKey) ?? 0) + dt)
    const seen = new Set<string>()
    for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
      const node = byId.get(id)!
      const key = keyOf(node.callFrame)
      if (seen.has(key)) continue
      seen.add(key)
      frames.set(key, node.callFrame)
      total.set(key, (total.get(key) ?? 0) + dt)
    }
  }
  const busy = duration - idle
  const pct = (ms: number) => (busy > 0 ? (ms / busy) * 100 : 0)
  const functions: Array<FunctionTime> = []
  for (const [key, frame] of frames) {
    if (frame.functionName === "(root)") continue
    const selfMs = self.get(key) ?? 0
    const totalMs = total.get(key) ?? 0
    functions.push({
      name: frame.functionName === "" ? "(anonymous)" : frame.functionName,
      location: shortLocation(frame),
      category: categoryOf(frame),
      selfMs,
      selfPercent: pct(selfMs),
      totalMs,
      totalPercent: pct(totalMs)
    })
  }
  const categories = new Map<string, number>()
  for (const f of functions) categories.set(f.category, (categories.get(f.category) ?? 0) + f.selfMs)
  return {
    durationMs: duration,
    busyMs: busy,
    idlePercent: duration > 0 ? (idle / duration) * 100 : 0,
    functions,
    categories: [...categories]
      .filter(([category]) => category !== "(idle)")
      .map(([category, selfMs]) => ({ category, selfMs, percent: pct(selfMs) }))
      .sort((a, b) => b.selfMs - a.selfMs)
  }
}

const pad = (s: string, n: number) => (s.length >= n ? s : s + " ".repeat(n - s.length))
const lpad = (s: string, n: number) => (s.length >= n ? s : " ".repeat(n - s.length) + s)

/** A plain-text report: categories, top functions by self time, and top workspace functions by total time. */
export const format = (summary: Summary, top = 30): string => {
  const lines: Array<string> = []
  lines.push(
    `profile: ${(summary.durationMs / 1000).toFixed(2)} s, ${(summary.busyMs / 1000).toFixed(2)} s on the CPU (idle ${summary.idlePercent.toFixed(1)} %); percentages are of CPU time`
  )
  lines.push("", "self time by package:")
  for (const c of summary.categories.slice(0, 15)) {
    lines.push(`  ${lpad(c.percent.toFixed(1), 5)} %  ${lpad(c.selfMs.toFixed(0), 7)} ms  ${c.category}`)
  }
  lines.push("", `top ${top} functions by self time:`)
  const bySelf = summary.functions
    .filter((f) => f.name !== "(idle)")
    .sort((a, b) => b.selfMs - a.selfMs)
    .slice(0, top)
  for (const f of bySelf) {
    lines.push(
      `  ${lpad(f.selfPercent.toFixed(1), 5)} %  ${lpad(f.selfMs.toFixed(0), 6)} ms  ${pad(f.name, 34)} ${pad(f.category, 22)} ${f.location}`
    )
  }
  lines.push("", "workspace functions (@redflow/*, bench) by total time (self + callees):")
  const workspace = summary.functions
    .filter((f) => f.category.startsWith("@redflow/") || f.category === "bench")
    .sort((a, b) => b.totalMs - a.totalMs)
    .slice(0, 20)
  for (const f of workspace) {
    lines.push(
      `  ${lpad(f.totalPercent.toFixed(1), 5)} %  ${lpad(f.totalMs.toFixed(0), 6)} ms  (self ${lpad(f.selfPercent.toFixed(1), 4)} %)  ${pad(f.name, 30)} ${f.location}`
    )
  }
  return lines.join("\n")
}

/**
 * Where a function's self time comes from: its call paths (up to `depth` frames above it), by time, so a builtin
 * such as `writeUtf8String` or `(garbage collector)` can be charged to the code that caused it.
 */
export const callers = (
  profile: Profile,
  name: string,
  depth = 6
): Array<{ readonly path: string; readonly ms: number; readonly percent: number }> => {
  const byId = new Map<number, ProfileNode>()
  const parent = new Map<number, number>()
  for (const node of profile.nodes) {
    byId.set(node.id, node)
    for (const child of node.children ?? []) parent.set(child, node.id)
  }
  const paths = new Map<string, number>()
  let total = 0
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = (profile.timeDeltas[i + 1] ?? 0) / 1000
    const leaf = byId.get(profile.samples[i]!)
    if (dt <= 0 || leaf === undefined || leaf.callFrame.functionName !== name) continue
    total += dt
    const frames: Array<string> = []
    for (let id = parent.get(leaf.id); id !== undefined && frames.length < depth; id = parent.get(id)) {
      const frame = byId.get(id)!.callFrame
      if (frame.functionName === "(root)") break
      frames.push(`${frame.functionName || "(anonymous)"} ${shortLocation(frame)}`)
    }
    const path = frames.join(" < ")
    paths.set(path, (paths.get(path) ?? 0) + dt)
  }
  return [...paths]
    .map(([path, ms]) => ({ path, ms, percent: total > 0 ? (ms / total) * 100 : 0 }))
    .sort((a, b) => b.ms - a.ms)
}
