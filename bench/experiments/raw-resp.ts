/**
 * Experiment (not part of `pnpm bench`): what the client side costs. The ioredis baseline against writing RESP by
 * hand, one socket write per batch of 500 XADDs (plain pipeline, or wrapped in MULTI/EXEC, which is all or nothing
 * under OOM like a script), replies counted rather than parsed. Prints events/s and the server's share of wall time.
 *
 *   pnpm exec node bench/experiments/raw-resp.ts
 */
import * as Net from "node:net"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { connect, deleteMatching, serverCpuMicros } from "../src/RedisClient.ts"
import * as Payload from "../src/Payload.ts"
import * as Throughput from "../src/Throughput.ts"
import { collect } from "../src/Gc.ts"

const server = await RedisTestServer.spawnRedisServer()
const client = await connect(server.url)
const N = 100_000
const payload = await Payload.generate(N)

const bulk = (s: string) => `$${Buffer.byteLength(s)}\r\n${s}\r\n`
/** Raw RESP over a socket: one write per batch of 500 XADDs (optionally in MULTI/EXEC), replies counted by lines. */
const raw = async (prefix: string, multi: boolean) => {
  const socket = Net.connect({ host: server.host, port: server.port })
  socket.setNoDelay(true)
  await new Promise((r) => socket.once("connect", r))
  let pendingLines = 0
  let waiter: (() => void) | undefined
  let carry = ""
  socket.setEncoding("latin1")
  socket.on("data", (chunk: string) => {
    const text = carry + chunk
    let idx = 0
    for (;;) {
      const nl = text.indexOf("\r\n", idx)
      if (nl < 0) break
      idx = nl + 2
      pendingLines--
    }
    carry = text.slice(idx)
    if (pendingLines <= 0 && waiter) {
      const w = waiter
      waiter = undefined
      w()
    }
  })
  const started = performance.now()
  for (let from = 0; from < N; from += 500) {
    const to = Math.min(N, from + 500)
    let out = multi ? "*1\r\n$5\r\nMULTI\r\n" : ""
    for (let i = from; i < to; i++) {
      const e = payload.events[i]!
      out += `*11\r\n$4\r\nXADD\r\n${bulk(Payload.streamOf(prefix, e))}$1\r\n*\r\n$5\r\nevent\r\n${bulk(JSON.stringify(e))}$2\r\nid\r\n${bulk(e.id)}$2\r\nop\r\n${bulk(e.op)}$5\r\ntable\r\n${bulk(e.source.table)}`
    }
    if (multi) out += "*1\r\n$4\r\nEXEC\r\n"
    const n = to - from
    // replies: each XADD id is 2 lines ($len, id); MULTI: +OK, n × +QUEUED, then *n + 2n lines
    pendingLines = multi ? 1 + n + 1 + 2 * n : 2 * n
    const done = new Promise<void>((r) => (waiter = r))
    socket.write(out)
    await done
  }
  const ms = performance.now() - started
  socket.destroy()
  return ms
}
const variants: Array<[string, (prefix: string) => Promise<number>]> = [
  ["baseline ioredis pipeline XADD", async (p) => (await Throughput.baseline(client, payload, N, p)).ms],
  ["raw RESP pipeline of XADDs", (p) => raw(p, false)],
  ["raw RESP MULTI/XADD.../EXEC", (p) => raw(p, true)]
]
const results = new Map<string, Array<string>>()
for (let round = 0; round < 5; round++) {
  for (const [name, run] of round % 2 === 0 ? variants : [...variants].reverse()) {
    collect()
    const before = await serverCpuMicros(client)
    const ms = await run(`y.${round}.${name.replace(/\W/g, "")}`)
    const busy = ((await serverCpuMicros(client)) - before) / 1000 / ms
    const len = (
      await Promise.all(Payload.streamsOf(`y.${round}.${name.replace(/\W/g, "")}`).map((s) => client.xlen(s)))
    ).reduce((a, b) => a + b, 0)
    if (len !== N) throw new Error(`${name}: ${len}`)
    await deleteMatching(client, `*y.${round}*`)
    if (round > 0)
      (results.get(name) ?? results.set(name, []).get(name)!).push(
        `${Math.round((N * 1000) / ms)}/s busy ${(busy * 100).toFixed(0)}%`
      )
  }
}
for (const [name, r] of results) console.log(name.padEnd(34), r.join("  "))
client.disconnect()
await server.stop()
process.exit(0)
