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

/**
 * Microseconds of CPU the server's main thread has used (INFO cpu, user + system): what the server spent on the run,
 * its reading and parsing of commands included. INFO commandstats would count a script's commands twice: `evalsha`'s
 * time includes the XADDs it calls, and those are counted again under `xadd`.
 */
export const serverCpuMicros = async (client: Redis): Promise<number> => {
  const info = await client.info("cpu")
  // The main thread's own figures where the server reports them (Redis 6.2 and later), else the whole process's.
  const read = (name: string) =>
    Number(
      (new RegExp(`^${name}_main_thread:([\\d.]+)`, "m").exec(info) ??
        new RegExp(`^${name}:([\\d.]+)`, "m").exec(info))?.[1]
    )
  return Math.round((read("used_cpu_user") + read("used_cpu_sys")) * 1e6)
}
