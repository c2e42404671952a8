/**
 * The server's own ceiling, from `redis-benchmark`: pipelined XADDs of entries shaped like the sink's (an `event`
 * field of the payload's mean size, `id`, `op`, `table`), with no client library in the way.
 */
import * as ChildProcess from "node:child_process"

export interface Config {
  readonly name: string
  readonly clients: number
  readonly pipeline: number
}

/** 50 clients pipelining 100 each (the server's ceiling), and one client pipelining 500 (the baseline's shape). */
export const CONFIGS: ReadonlyArray<Config> = [
  { name: "50 clients, pipeline 100", clients: 50, pipeline: 100 },
  { name: "1 client, pipeline 500", clients: 1, pipeline: 500 }
]

export const available = (): boolean => {
  const probe = ChildProcess.spawnSync("redis-benchmark", ["--version"], { encoding: "utf8" })
  return probe.error === undefined && probe.status === 0
}

export interface Target {
  readonly host: string
  readonly port: number
  readonly password?: string | undefined
}

/** XADDs per second of one `redis-benchmark` run, from its CSV output. */
export const xaddPerSecond = (
  target: Target,
  config: Config,
  requests: number,
  eventBytes: number,
  key: string
): number => {
  const args = [
    "-h",
    target.host,
    "-p",
    String(target.port),
    ...(target.password === undefined ? [] : ["-a", target.password]),
    "-n",
    String(requests),
    "-c",
    String(config.clients),
    "-P",
    String(config.pipeline),
    "--csv",
    "XADD",
    key,
    "*",
    "event",
    "x".repeat(eventBytes),
    "id",
    "00000000-0000-5000-8000-000000000000",
    "op",
    "c",
    "table",
    "orders"
  ]
  const run = ChildProcess.spawnSync("redis-benchmark", args, { encoding: "utf8", maxBuffer: 64 * 2 ** 20 })
  if (run.status !== 0) throw new Error(`redis-benchmark failed: ${run.stderr || run.error?.message}`)
  const last = run.stdout.trim().split("\n").pop() ?? ""
  const rps = Number(/^"[^"]*","([\d.]+)"/.exec(last)?.[1])
  if (!Number.isFinite(rps))
    throw new Error(`cannot read requests per second from redis-benchmark: ${last.slice(0, 200)}`)
  return rps
}
