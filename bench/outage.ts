/**
 * The outage benchmark in a process of its own (its RSS is the sink's alone). Started by `run.ts`; runnable by
 * hand too:
 *
 *   node bench/outage.ts '{"url":"redis://127.0.0.1:6379","pid":1234,"method":"sigstop","rate":10000,
 *     "beforeSeconds":5,"outageSeconds":30,"afterSeconds":20,"catchUpLimitSeconds":120,
 *     "checkpointPath":"/tmp/outage.json","prefix":"bench.outage"}' result.json
 */
import * as Fs from "node:fs/promises"
import * as Outage from "./src/Outage.ts"
import { log } from "./src/Progress.ts"

const [optionsJson, resultPath] = process.argv.slice(2)
if (optionsJson === undefined || resultPath === undefined) {
  process.stderr.write("usage: node bench/outage.ts '<options json>' <result path>\n")
  process.exit(2)
}
const result = await Outage.run(JSON.parse(optionsJson) as Outage.Options, (message) => log("outage", message))
await Fs.writeFile(resultPath, JSON.stringify(result))
process.exit(0)
