/**
 * Experiment (not part of `pnpm bench`): what the sink's write script costs the server per entry, against native
 * XADDs, and which parts of it cost what (issue 16). Every variant writes the same entries (1 KiB events, calls of
 * 500) to a fresh stream of a Redis server spawned for it; per variant it prints the server's main-thread CPU per
 * entry (INFO cpu) and the EVALSHA / XADD / EXEC time per entry (INFO commandstats; XADDs inside a script are counted
 * there too, so the two are not summed).
 *
 *   pnpm exec node bench/experiments/write-script.ts [--calls 100] [--rounds 3] [--per-call 500] [--only name,name]
 *
 * On a loaded machine the CPU figures swing; instruction counts do not. Run the server under callgrind and pass it:
 *
 *   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg/cg.%p redis-server --port 0 --unixsocket /tmp/cg/sock &
 *   pnpm exec node bench/experiments/write-script.ts --url /tmp/cg/sock --callgrind <pid> --callgrind-dir /tmp/cg
 */
import { createHash } from "node:crypto"
import { execFileSync } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import type { Redis } from "ioredis"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Scripts from "../../packages/redis/src/internal/scripts.ts"
import { connect } from "../src/RedisClient.ts"

const argv = process.argv.slice(2)
const opt = (name: string, fallback: number) => {
  const i = argv.indexOf(name)
  return i >= 0 ? Number(argv[i + 1]) : fallback
}
const CALLS = opt("--calls", 100)
const ROUNDS = opt("--rounds", 3)
const PER_CALL = opt("--per-call", 500)
const word = (name: string) => {
  const i = argv.indexOf(name)
  return i >= 0 ? argv[i + 1] : undefined
}
/** A server to use instead of spawning one (e.g. a unix socket path). */
const url = word("--url")
/**
 * The pid of that server when it runs under `valgrind --tool=callgrind --callgrind-out-file=<dir>/cg.%p`: each
 * variant's instructions are then counted (zeroed before, dumped after), which the machine's load does not change.
 */
const callgrind = word("--callgrind")
const callgrindDir = word("--callgrind-dir")
const instructions = (): number => {
  if (callgrind === undefined) return 0
  execFileSync("callgrind_control", ["-d", callgrind])
  const dumps = readdirSync(callgrindDir!).filter((f) => f.startsWith(`cg.${callgrind}.`))
  const last = dumps.sort((a, b) => Number(a.split(".").pop()) - Number(b.split(".").pop())).pop()!
  const text = readFileSync(`${callgrindDir}/${last}`, "utf8")
  return Number(/^(?:summary|totals): (\d+)/m.exec(text)![1])
}
const onlyAt = argv.indexOf("--only")
const only = onlyAt >= 0 ? argv[onlyAt + 1]!.split(",") : undefined

interface E {
  readonly position: string
  readonly id: string
  readonly op: string
  readonly table: string
  readonly key: string
  readonly event: string
  readonly error: string
}

const WIDTH = 16
let sequence = 0
const body = "x".repeat(1024 - 80)
const nextBatch = (): Array<E> => {
  const out: Array<E> = []
  for (let i = 0; i < PER_CALL; i++) {
    sequence++
    const position = sequence.toString(16).padStart(WIDTH, "0")
    const id = `00000000-0000-8000-8000-${sequence.toString(16).padStart(12, "0")}`
    out.push({
      position,
      id,
      op: "c",
      table: "orders",
      key: "",
      event: `{"id":"${id}","position":"${position}","b":"${body}"}`,
      error: ""
    })
  }
  return out
}

const sha = (s: string) => createHash("sha1").update(s).digest("hex")

/** The write script's ARGV: its header, then 7 values per entry. */
const header = (expected: string, skip: boolean) => [
  "bench",
  "",
  "~",
  "",
  expected,
  skip ? "1" : "",
  String(WIDTH),
  "",
  "",
  "",
  ""
]
const entryArgs = (es: ReadonlyArray<E>) => {
  const out: Array<string> = []
  for (const e of es) out.push(e.position, e.id, e.op, e.table, e.key, e.event, e.error)
  return out
}

interface Variant {
  readonly name: string
  /** Writes one call's entries; `expected` is the mark the previous call left ("" at first). */
  readonly write: (
    client: Redis,
    stream: string,
    marks: string,
    es: ReadonlyArray<E>,
    expected: string
  ) => Promise<void>
  readonly scripts?: ReadonlyArray<string>
}

const evalVariant = (name: string, source: string, skip = false, args = entryArgs): Variant => ({
  name,
  scripts: [source],
  write: async (client, stream, marks, es, expected) => {
    const reply = (await client.evalsha(sha(source), 2, stream, marks, ...header(expected, skip), ...args(es))) as [
      number
    ]
    if (Array.isArray(reply) && Number(reply[0]) < 0) throw new Error(`${name}: refused ${JSON.stringify(reply)}`)
  }
})

/** Lua sources for the ablations; all read the same ARGV as the write script. */
const ARGV_ONLY = `#!lua
return { 0, 0, "", "" }
`
const READ_ONLY = `#!lua
local n = 0
for i = 12, #ARGV, 7 do
  local position, id, op, tbl, key, event, err = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  n = n + 1
end
return { n, 0, "", "" }
`
const READ_LOCAL = READ_ONLY.replace("local n = 0", "local n, ARGV = 0, ARGV")
const DIRECT_CALL = `#!lua
local stream = KEYS[1]
local n, last = 0, ""
for i = 12, #ARGV, 7 do
  last = redis.call("XADD", stream, "*", "event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3])
  n = n + 1
end
return { n, 0, last, "" }
`
const DIRECT_PCALL = DIRECT_CALL.replace("redis.call", "redis.pcall")
/** XADD with only the event: what the other three fields cost inside a script. */
const EVENT_ONLY = `#!lua
local stream = KEYS[1]
local n, last = 0, ""
for i = 12, #ARGV, 7 do
  last = redis.call("XADD", stream, "*", "event", ARGV[i + 5])
  n = n + 1
end
return { n, 0, last, "" }
`
/** A script call per entry would be EVAL's own overhead: one tiny redis.call per entry (GET of a missing key). */
const CALL_ONLY = `#!lua
local n = 0
for i = 12, #ARGV, 7 do
  redis.call("EXISTS", KEYS[2])
  n = n + 1
end
return { n, 0, "", "" }
`

const native: Variant = {
  name: "native XADD pipeline",
  write: async (client, stream, marks, es) => {
    const p = client.pipeline()
    for (const e of es) p.xadd(stream, "*", "event", e.event, "id", e.id, "op", e.op, "table", e.table)
    p.hset(marks, "bench", `${es[es.length - 1]!.position} 0-1`)
    await p.exec()
  }
}

const multiNative: Variant = {
  name: "MULTI + native XADDs + HSET + EXEC",
  write: async (client, stream, marks, es) => {
    const p = client.multi()
    for (const e of es) p.xadd(stream, "*", "event", e.event, "id", e.id, "op", e.op, "table", e.table)
    p.hset(marks, "bench", `${es[es.length - 1]!.position} 0-1`)
    await p.exec()
  }
}

/** Ablations of the 1ed89bb script, by text substitution (the bench writes untrimmed, untraced, inline entries). */
const LATER = "local later = not mark or #position > #mark or (#position == #mark and position > mark)"
const ADDED = "added[#added + 1] = id"
/** The script before issue 16's changes (as main 1ed89bb generated it), beside the one in the tree. */
const original = readFileSync(new URL("write-script-1ed89bb.lua", import.meta.url), "utf8")

const noLater = original.replace(LATER, "local later = true")
const noAdded = original.replace(ADDED, "")
const inlineXadd = original.replaceAll("id = xadd(", 'id = redis.pcall("XADD", stream, "*", ')
const allThree = noLater.replace(ADDED, "").replaceAll("id = xadd(", 'id = redis.pcall("XADD", stream, "*", ')
for (const [a, b] of [
  [original, noLater],
  [original, noAdded],
  [original, inlineXadd]
] as const)
  if (a === b) throw new Error("an ablation did not apply")

const variants: Array<Variant> = [
  native,
  multiNative,
  evalVariant("1ed89bb script, at-least-once", original),
  evalVariant("1ed89bb script, exactly-once", original, true),
  evalVariant("tree's script, at-least-once", Scripts.write.source),
  evalVariant("tree's script, exactly-once", Scripts.write.source, true),
  evalVariant("ablation: no per-entry later", noLater),
  evalVariant("ablation: no added table", noAdded),
  evalVariant("ablation: XADD inline, no closure", inlineXadd),
  evalVariant("ablation: all three", allThree),
  evalVariant("ARGV only (return at once)", ARGV_ONLY),
  evalVariant("ARGV read per entry, no calls", READ_ONLY),
  evalVariant("ARGV read per entry, ARGV a local", READ_LOCAL),
  evalVariant("ARGV only, 3 values per entry", ARGV_ONLY, false, (es) =>
    es.flatMap((e) => [e.position, e.id, e.event])
  ),
  evalVariant("ARGV only, 1 value per entry", ARGV_ONLY, false, (es) => es.map((e) => e.event)),
  evalVariant("one EXISTS per entry", CALL_ONLY),
  evalVariant("direct redis.call XADD", DIRECT_CALL),
  evalVariant("direct redis.pcall XADD", DIRECT_PCALL),
  evalVariant("direct XADD event only", EVENT_ONLY)
].filter((v) => only === undefined || only.some((o) => v.name.includes(o)))

const info = async (client: Redis) => {
  const cpu = await client.info("cpu")
  const user = Number(/used_cpu_user_main_thread:([\d.]+)/.exec(cpu)?.[1] ?? /used_cpu_user:([\d.]+)/.exec(cpu)![1])
  const sys = Number(/used_cpu_sys_main_thread:([\d.]+)/.exec(cpu)?.[1] ?? /used_cpu_sys:([\d.]+)/.exec(cpu)![1])
  const stats = await client.info("commandstats")
  const usec = (command: string) =>
    Number(new RegExp(`^cmdstat_${command}:.*?\\busec=(\\d+)`, "m").exec(stats)?.[1] ?? 0)
  return { cpu: (user + sys) * 1e6, evalsha: usec("evalsha"), xadd: usec("xadd"), exec: usec("exec") }
}

const server = url === undefined ? await RedisTestServer.spawnRedisServer() : undefined
const client = await connect(url ?? server!.url)
for (const v of variants) for (const s of v.scripts ?? []) await client.script("LOAD", s)

const results = new Map<string, Array<{ cpu: number; command: number; xadd: number; ir: number }>>()
for (let round = 0; round < ROUNDS; round++) {
  for (const v of round % 2 === 0 ? variants : [...variants].reverse()) {
    const stream = `w.{${round}.${v.name.replace(/\W/g, "")}}`
    const marks = `${stream}:hw`
    const batches = Array.from({ length: CALLS }, nextBatch)
    await client.config("SET", "maxmemory", "0")
    const before = await info(client)
    if (callgrind !== undefined) execFileSync("callgrind_control", ["-z", callgrind])
    let expected = ""
    for (const es of batches) {
      await v.write(client, stream, marks, es, expected)
      expected = es[es.length - 1]!.position
    }
    const ir = instructions()
    const after = await info(client)
    await client.del(stream, marks)
    const n = CALLS * PER_CALL
    const command = after.evalsha - before.evalsha + after.exec - before.exec
    ;(results.get(v.name) ?? results.set(v.name, []).get(v.name)!).push({
      cpu: (after.cpu - before.cpu) / n,
      command: command / n,
      xadd: (after.xadd - before.xadd) / n,
      ir: ir / n
    })
  }
}

const med = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
console.log(`${CALLS} calls of ${PER_CALL} entries (1 KiB events), ${ROUNDS} rounds; µs per entry, median`)
console.log("variant".padEnd(40), "server CPU", "EVALSHA/EXEC", "XADD", callgrind === undefined ? "" : "instructions")
for (const [name, r] of results) {
  console.log(
    name.padEnd(40),
    med(r.map((x) => x.cpu))
      .toFixed(2)
      .padStart(10),
    med(r.map((x) => x.command))
      .toFixed(2)
      .padStart(12),
    med(r.map((x) => x.xadd))
      .toFixed(2)
      .padStart(5),
    callgrind === undefined ? "" : String(Math.round(med(r.map((x) => x.ir)))).padStart(12)
  )
}
client.disconnect()
await server?.stop()
process.exit(0)
