/**
 * Experiment (not part of `pnpm bench`): where the sink's time goes on the server, and whether two batches in
 * flight would help. Raw ioredis loops on the same events: the baseline, EVALSHA of the sink's at-least-once script
 * (internal/scripts.ts) with one or two batches in flight, and the same with a script that calls XADD directly
 * (no per-entry table, no unpack). Prints events/s and the server's command time as a share of wall time.
 *
 *   pnpm exec node bench/experiments/script-depth.ts
 */
import { createHash } from "node:crypto"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { connect, deleteMatching, serverCpuMicros } from "../src/RedisClient.ts"
import * as Payload from "../src/Payload.ts"
import * as Throughput from "../src/Throughput.ts"
import { collect } from "../src/Gc.ts"

/** The sink's at-least-once script as of 8b01b1d (packages/redis/src/internal/scripts.ts), copied so this keeps running. */
const AT_LEAST_ONCE = `#!lua
local stream = KEYS[1]
local trim = ARGV[2]
local op = ARGV[3]
local threshold = ARGV[4]
local written = 0
local skipped = 0
local lastId = ""

for i = 5, #ARGV, 7 do
    local xargs = { stream }
    local n = 1
    if trim ~= "" then
      xargs[n + 1] = trim; xargs[n + 2] = op; xargs[n + 3] = threshold; n = n + 3
    end
    xargs[n + 1] = "*"
    xargs[n + 2] = "event"; xargs[n + 3] = ARGV[i + 5]
    xargs[n + 4] = "id"; xargs[n + 5] = ARGV[i + 1]
    xargs[n + 6] = "op"; xargs[n + 7] = ARGV[i + 2]
    xargs[n + 8] = "table"; xargs[n + 9] = ARGV[i + 3]
    n = n + 9
    if ARGV[i + 4] ~= "" then
      xargs[n + 1] = "key"; xargs[n + 2] = ARGV[i + 4]; n = n + 2
    end
    if ARGV[i + 6] ~= "" then
      xargs[n + 1] = "error"; xargs[n + 2] = ARGV[i + 6]
    end
    lastId = redis.call("XADD", unpack(xargs))
    written = written + 1
end
return { written, skipped, lastId }
`

const DIRECT = `#!lua
local stream = KEYS[1]
local written = 0
local lastId = ""
for i = 5, #ARGV, 7 do
  lastId = redis.call("XADD", stream, "*", "event", ARGV[i + 5], "id", ARGV[i + 1], "op", ARGV[i + 2], "table", ARGV[i + 3])
  written = written + 1
end
return { written, 0, lastId }
`
const sha = (s: string) => createHash("sha1").update(s).digest("hex")
const server = await RedisTestServer.spawnRedisServer()
const client = await connect(server.url)
const N = 100_000
const payload = await Payload.generate(N)
await client.script("LOAD", AT_LEAST_ONCE)
await client.script("LOAD", DIRECT)

const scriptLoop = async (script: string, depth: number, prefix: string) => {
  const s = sha(script)
  const inflight: Array<Promise<unknown>> = []
  const started = performance.now()
  for (let from = 0; from < N; from += 500) {
    const by = new Map<string, Array<string>>()
    for (let i = from; i < Math.min(N, from + 500); i++) {
      const e = payload.events[i]!
      const stream = Payload.streamOf(prefix, e)
      let argv = by.get(stream)
      if (argv === undefined) by.set(stream, (argv = ["bench", "", "~", ""]))
      argv.push(e.position, e.id, e.op, e.source.table, "", JSON.stringify(e), "")
    }
    const p = client.pipeline()
    for (const [stream, argv] of by) p.evalsha(s, 1, stream, ...argv)
    inflight.push(p.exec())
    if (inflight.length >= depth) await inflight.shift()
  }
  await Promise.all(inflight)
  return performance.now() - started
}
const variants: Array<[string, (prefix: string) => Promise<number>]> = [
  ["baseline pipeline XADD", async (prefix) => (await Throughput.baseline(client, payload, N, prefix)).ms],
  ["EVALSHA current script, depth 1", (p) => scriptLoop(AT_LEAST_ONCE, 1, p)],
  ["EVALSHA current script, depth 2", (p) => scriptLoop(AT_LEAST_ONCE, 2, p)],
  ["EVALSHA direct-call script, depth 1", (p) => scriptLoop(DIRECT, 1, p)],
  ["EVALSHA direct-call script, depth 2", (p) => scriptLoop(DIRECT, 2, p)]
]
const results = new Map<string, Array<string>>()
for (let round = 0; round < 4; round++) {
  for (const [name, run] of round % 2 === 0 ? variants : [...variants].reverse()) {
    collect()
    const before = await serverCpuMicros(client)
    const ms = await run(`x.${round}.${name.replace(/\W/g, "")}`)
    const busy = ((await serverCpuMicros(client)) - before) / 1000 / ms
    await deleteMatching(client, `*x.${round}*`)
    if (round > 0)
      (results.get(name) ?? results.set(name, []).get(name)!).push(
        `${Math.round((N * 1000) / ms)}/s busy ${(busy * 100).toFixed(0)}%`
      )
  }
}
for (const [name, r] of results) console.log(name.padEnd(40), r.join("  "))
client.disconnect()
await server.stop()
process.exit(0)
