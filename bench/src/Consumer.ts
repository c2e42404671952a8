/**
 * Consuming throughput: a hand-written XREADGROUP (COUNT 500) + XACK loop against `RedisStreamConsumer`, each
 * reading the same pre-filled stream through a group of its own.
 */
import { Result } from "effect"
import * as Envelope from "@redflow/core/Envelope"
import type { Redis } from "ioredis"
import * as Payload from "./Payload.ts"
import { parseRead } from "./RedisClient.ts"
import type { RunResult } from "./Throughput.ts"

export const COUNT = 500

/** Writes the first `count` events to `stream` as the sink writes entries (untimed setup). */
export const prefill = async (client: Redis, payload: Payload.Payload, count: number, stream: string) => {
  for (let from = 0; from < count; from += COUNT) {
    const pipeline = client.pipeline()
    for (let i = from; i < Math.min(count, from + COUNT); i++) {
      const event = payload.events[i]!
      pipeline.xadd(stream, "*", ...Payload.fields(event, JSON.stringify(event)))
    }
    const replies = await pipeline.exec()
    for (const [error] of replies ?? []) if (error) throw error
  }
}

export const result = (events: number, ms: number): RunResult => ({ events, ms, eventsPerSecond: (events * 1000) / ms })

const native = Envelope.make("native")

/**
 * How the hand-written loop turns an entry into an event: `json` is JSON.parse (the least a consumer can do to have
 * the event); `envelope` is the envelope's validating decode, as the consumer module does (a diagnostic that
 * separates the cost of validation from the cost of the consumer's machinery).
 */
export type Decode = "json" | "envelope"

const decoders: Record<Decode, (text: string) => string> = {
  json: (text) => (JSON.parse(text) as { readonly position: string }).position,
  envelope: (text) => {
    const decoded = native.decodeResult(text)
    if (Result.isFailure(decoded)) throw decoded.failure
    return decoded.success.position
  }
}

/**
 * The baseline: XREADGROUP COUNT 500, decode each entry's `event`, XACK the batch, repeat until `count` events were
 * handled.
 */
export const baseline = async (
  client: Redis,
  stream: string,
  group: string,
  count: number,
  decode: Decode = "json"
): Promise<RunResult> => {
  const decoder = decoders[decode]
  await client.xgroup("CREATE", stream, group, "0")
  let handled = 0
  let checksum = 0
  const started = performance.now()
  while (handled < count) {
    const reply = parseRead(
      await client.call("XREADGROUP", "GROUP", group, "bench", "COUNT", COUNT, "STREAMS", stream, ">")
    )
    const ids: Array<string> = []
    for (const [, entries] of reply) {
      for (const [id, flat] of entries) {
        ids.push(id)
        if (flat === null) continue
        for (let i = 0; i < flat.length; i += 2) {
          if (flat[i] === "event") {
            checksum += decoder(flat[i + 1]!).length
            break
          }
        }
      }
    }
    if (ids.length === 0) throw new Error(`${stream}: the stream ran out after ${handled} of ${count} entries`)
    await client.xack(stream, group, ...ids)
    handled += ids.length
  }
  const ms = performance.now() - started
  if (checksum === 0) throw new Error("no event was parsed")
  return result(handled, ms)
}
