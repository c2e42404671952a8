/** Plain ioredis clients for the hand-written baselines and for setup and cleanup outside the timed sections. */
import { Redis } from "ioredis"

/** A connected ioredis client with default options, as a user writing the loop by hand would create it. */
export const connect = async (url: string): Promise<Redis> => {
  const client = new Redis(url, { lazyConnect: true })
  await client.connect()
  return client
}

/** Deletes every key matching `pattern` (SCAN + DEL: freed synchronously, before the next timed run). */
export const deleteMatching = async (client: Redis, pattern: string): Promise<number> => {
  let cursor = "0"
  let deleted = 0
  do {
    const [next, keys] = await client.scan(cursor, "MATCH", pattern, "COUNT", 1000)
    cursor = next
    if (keys.length > 0) deleted += await client.del(...keys)
  } while (cursor !== "0")
  return deleted
}

/** The total length of `streams`. */
export const totalLength = async (client: Redis, streams: ReadonlyArray<string>): Promise<number> => {
  let total = 0
  for (const s of streams) total += await client.xlen(s)
  return total
}

/** A group read's reply, as `[stream, [[id, [field, value, ...]], ...]]` per stream, whatever the protocol shape. */
export type ReadReply = Array<[string, Array<[string, Array<string> | null]>]>

/**
 * Normalizes an `XREADGROUP`/`XREAD` reply. ioredis 6 speaks RESP3, where the reply is a map from stream to entries;
 * a raw `call` returns that map flattened (`[stream1, entries1, stream2, entries2]`), the RESP2 form is nested
 * (`[[stream1, entries1], ...]`), and an object is possible with a map-preserving reply mode.
 */
export const parseRead = (reply: unknown): ReadReply => {
  if (reply === null || reply === undefined) return []
  if (Array.isArray(reply)) {
    if (reply.length === 0 || Array.isArray(reply[0])) return reply as ReadReply
    const out: ReadReply = []
    for (let i = 0; i + 1 < reply.length; i += 2) {
      out.push([String(reply[i]), reply[i + 1] as Array<[string, Array<string> | null]>])
    }
    return out
  }
  if (typeof reply === "object") {
    return Object.entries(reply as Record<string, Array<[string, Array<string> | null]>>)
  }
  return []
}

/** The value of `name` in a flat `[field, value, ...]` list. */
export const field = (flat: ReadonlyArray<string> | null | undefined, name: string): string | undefined => {
  if (flat === null || flat === undefined) return undefined
  for (let i = 0; i < flat.length; i += 2) if (flat[i] === name) return flat[i + 1]
  return undefined
}

/** Microseconds the server has spent executing commands since the last `CONFIG RESETSTAT` (INFO commandstats). */
export const serverCommandMicros = async (client: Redis): Promise<number> => {
  const info = await client.info("commandstats")
  let total = 0
  for (const match of info.matchAll(/^cmdstat_[^:]+:.*?\busec=(\d+)/gm)) total += Number(match[1])
  return total
}
