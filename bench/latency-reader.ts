/**
 * The latency runs' reader in a process of its own, as a user's consumer is: the plain `XREADGROUP BLOCK` loop of
 * `Latency.xreadgroup`, stamping each entry on the machine's monotonic clock (`Latency.now`). Prints `ready` once
 * connected; on a line on stdin (or stdin's end) it stops and prints the arrivals as JSON (`[[eventId, ms], …]`).
 * Started by `Latency.xreadgroupProcess`:
 *
 *   node bench/latency-reader.ts redis://127.0.0.1:6379 '["stream-a","stream-b"]'
 */
import * as Latency from "./src/Latency.ts"

const [url, streamsJson] = process.argv.slice(2)
if (url === undefined || streamsJson === undefined) {
  process.stderr.write("usage: node bench/latency-reader.ts <redis url> '<streams json>'\n")
  process.exit(2)
}
const seen: Array<[string, number]> = []
const stop = await Latency.xreadgroup.start(url, JSON.parse(streamsJson) as Array<string>, (id, at) => {
  seen.push([id, at])
})
process.stdout.write("ready\n")
await new Promise<void>((resolve) => {
  process.stdin.once("data", () => resolve())
  process.stdin.once("end", () => resolve())
})
await stop()
process.stdout.write(JSON.stringify(seen) + "\n", () => process.exit(0))
