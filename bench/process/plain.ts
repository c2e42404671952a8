/**
 * The plain script of `bench/process.ts`: what a user could write instead of `redflow produce`. It builds change
 * events of the same shape as the synthetic source's (three tables, rows padded to `payloadBytes` of JSON, an id, a
 * source block and a position), `JSON.stringify`s each one and XADDs them with the sink's fields (`event`, `id`, `op`,
 * `table`) to `<prefix>.<table>`, in pipelines of 500, each awaited before the next.
 *
 *   node bench/process/plain.ts REDIS_URL PREFIX EVENTS PAYLOAD_BYTES
 */
import { randomUUID } from "node:crypto"
import { Redis } from "ioredis"

const [url, prefix, eventsArg, payloadArg] = process.argv.slice(2)
const events = Number(eventsArg)
const payloadBytes = Number(payloadArg)
if (!url || !prefix || !Number.isInteger(events) || !Number.isInteger(payloadBytes)) {
  process.stderr.write("usage: node bench/process/plain.ts REDIS_URL PREFIX EVENTS PAYLOAD_BYTES\n")
  process.exit(2)
}
const BATCH = 500
const TABLES = ["customers", "orders", "payments"] as const
const WORDS = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore".split(
  " "
)
const padText = Array.from({ length: 400 }, (_, i) => WORDS[(i * 7) % WORDS.length])
  .join(" ")
  .repeat(8)

const padOf = new Map<string, number>()
const row = (table: string, id: number, n: number): Record<string, unknown> => {
  const base: Record<string, unknown> =
    table === "customers"
      ? { id, email: `user${id}@example.com`, first_name: "Ada", last_name: `L${id}`, country: "FR" }
      : table === "orders"
        ? { id, customer_id: (id * 31) % 1000, total: `${id % 500}.${id % 100}`, status: "paid" }
        : { id, order_id: (id * 17) % 1000, amount: `${id % 300}.00`, currency: "EUR", method: "card" }
  base.created_at = `2025-01-01T00:00:${String(n % 60).padStart(2, "0")}.000Z`
  // The padding's length is found once per table: its rows' other columns vary little in size.
  let pad = padOf.get(table)
  if (pad === undefined) padOf.set(table, (pad = payloadBytes - JSON.stringify(base).length - 12))
  const start = (n * 13) % 1000
  base.notes = pad > 0 ? padText.slice(start, start + pad) : ""
  return base
}

const client = new Redis(url)
const started = performance.now()
for (let from = 1; from <= events; from += BATCH) {
  const pipeline = client.pipeline()
  for (let n = from; n < Math.min(events + 1, from + BATCH); n++) {
    const table = TABLES[n % 3]!
    const op = n % 10 < 6 ? "c" : n % 10 < 9 ? "u" : "d"
    const image = row(table, Math.ceil(n / 3), n)
    const ts_ms = Date.UTC(2025, 0, 1) + n
    const event = {
      id: randomUUID(),
      op,
      before: op === "c" ? null : image,
      after: op === "d" ? null : op === "u" ? row(table, Math.ceil(n / 3), n + 1) : image,
      source: { connector: "plain", name: "plain", db: "shop", table, ts_ms, sequence: n },
      ts_ms,
      position: n.toString(16).padStart(16, "0")
    }
    pipeline.xadd(`${prefix}.${table}`, "*", "event", JSON.stringify(event), "id", event.id, "op", op, "table", table)
  }
  await pipeline.exec()
}
const ms = performance.now() - started
client.disconnect()
process.stdout.write(`${JSON.stringify({ events, ms })}\n`)
