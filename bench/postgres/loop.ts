/**
 * The hand-written loop a user could write instead of Redflow, as a process of its own (throughput.ts's baseline):
 * `pg-logical-replication` with its PgoutputPlugin reads the slot (flow control on, so the stream pauses while a
 * handler awaits; acknowledgement by hand, no keepalive timer), each change becomes an XADD of its JSON to
 * `<prefix>.<table>` in an ioredis pipeline, and at a commit with at least `batch` entries pending the pipeline is
 * sent and awaited, then the commit's end LSN acknowledged. A pipeline left below `batch` is sent once the stream
 * has been quiet for 5 ms. At-least-once, no checkpoint of its own: the slot is its checkpoint.
 *
 *   node bench/postgres/loop.ts '{"url":"postgres://…","slot":"s","publication":"p","redis":"redis://…",
 *     "prefix":"bench.loop","batch":500}'
 *
 * Runs until SIGTERM.
 */
import { Redis } from "ioredis"
// A devDependency of packages/postgres, used from there (the bench package does not depend on it).
import {
  LogicalReplicationService,
  PgoutputPlugin
} from "../../packages/postgres/node_modules/pg-logical-replication/dist/index.js"

interface Options {
  readonly url: string
  readonly slot: string
  readonly publication: string
  readonly redis: string
  readonly prefix: string
  readonly batch: number
}

interface Relation {
  readonly schema: string
  readonly name: string
}
type Change =
  | { readonly tag: "insert"; readonly relation: Relation; readonly new: Record<string, unknown> }
  | {
      readonly tag: "update"
      readonly relation: Relation
      readonly key: Record<string, unknown> | null
      readonly old: Record<string, unknown> | null
      readonly new: Record<string, unknown>
    }
  | {
      readonly tag: "delete"
      readonly relation: Relation
      readonly key: Record<string, unknown> | null
      readonly old: Record<string, unknown> | null
    }
  | { readonly tag: "commit"; readonly commitEndLsn: string | null }
  | { readonly tag: "begin" | "relation" | "type" | "origin" | "message" | "truncate" }

const optionsJson = process.argv[2]
if (optionsJson === undefined) {
  process.stderr.write("usage: node bench/postgres/loop.ts '<options json>'\n")
  process.exit(2)
}
const options = JSON.parse(optionsJson) as Options

const redis = new Redis(options.redis)
const service = new LogicalReplicationService(
  { connectionString: options.url },
  { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } }
)
const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: [options.publication] })

let pipeline = redis.pipeline()
let pending = 0
let lastCommit: string | undefined
let lastData = performance.now()
let chain: Promise<void> = Promise.resolve()

/** Sends what is pending, then acknowledges the last commit seen; flushes run one after another. */
const flush = (): Promise<void> => {
  chain = chain.then(async () => {
    if (pending === 0) return
    const sending = pipeline
    const ack = lastCommit
    pipeline = redis.pipeline()
    pending = 0
    const replies = await sending.exec()
    for (const [error] of replies ?? []) if (error) throw error
    if (ack !== undefined) await service.acknowledge(ack)
  })
  return chain
}

const add = (op: string, table: string, before: unknown, after: unknown) => {
  pipeline.xadd(
    `${options.prefix}.${table}`,
    "*",
    "event",
    JSON.stringify({ op, table, before, after }),
    "op",
    op,
    "table",
    table
  )
  pending++
}

service.on("data", async (_lsn: string, message: Change) => {
  lastData = performance.now()
  switch (message.tag) {
    case "insert":
      return add("c", message.relation.name, null, message.new)
    case "update":
      return add("u", message.relation.name, message.old ?? message.key, message.new)
    case "delete":
      return add("d", message.relation.name, message.old ?? message.key, null)
    case "commit":
      lastCommit = message.commitEndLsn ?? lastCommit
      if (pending >= options.batch) await flush()
      return
  }
})
service.on("error", (error: Error) => {
  process.stderr.write(`loop.ts: ${error.message}\n`)
  process.exit(1)
})
const idle = setInterval(() => {
  if (pending > 0 && performance.now() - lastData > 5) void flush()
}, 5)

process.once("SIGTERM", () => {
  clearInterval(idle)
  void flush()
    .then(() => service.stop())
    .then(
      () => {
        redis.disconnect()
        process.exit(0)
      },
      () => process.exit(1)
    )
})

service.subscribe(plugin, options.slot).catch((error: Error) => {
  process.stderr.write(`loop.ts: subscribe: ${error.message}\n`)
  process.exit(1)
})
