/**
 * The parsers of `StreamAdmin`'s replies: each turns what the server sent, whatever the protocol, into the plain typed
 * value `StreamAdmin` documents, and throws on a reply of a shape it does not know (`RedisConnection.run` turns that
 * into a `RedisCommandError`).
 *
 * ioredis 6 speaks RESP3 and maps replies to RESP2-like arrays ("legacy" mapping), but not always the same ones as
 * RESP2 would give (a raw `XREADGROUP` comes back as a flat `[stream, entries]` list rather than `[[stream,
 * entries]]`), so the parsers accept both.
 */
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import type {
  AutoClaimResult,
  ConsumerInfo,
  Entry,
  GroupEntry,
  GroupInfo,
  PendingEntry,
  PendingSummary,
  StreamEntries,
  StreamInfo
} from "../StreamAdmin.ts"

/** A reply of a shape this module does not know; `RedisConnection.run` turns it into a `RedisCommandError`. */
export const unexpected = (command: string, reply: unknown): never => {
  throw new Error(`unexpected ${command} reply: ${JSON.stringify(reply)?.slice(0, 300)}`)
}

export const text = (u: unknown): string | undefined =>
  Predicate.isString(u) ? u : u instanceof Uint8Array ? Buffer.from(u).toString("utf8") : undefined

export const num = (u: unknown): number | undefined => {
  if (Predicate.isNumber(u)) return u
  if (Predicate.isBigInt(u)) return Number(u)
  const s = text(u)
  if (s === undefined || s === "") return undefined
  const n = Number(s)
  return Number.isFinite(n) ? n : undefined
}

/** A map reply: a flat `[k, v, k, v]` array (RESP2 and legacy mapping), a `Map`, or an object (RESP3 mapping). */
export const toRecord = (reply: unknown): Record<string, unknown> | undefined => {
  if (Array.isArray(reply)) {
    if (reply.length % 2 !== 0) return undefined
    const out: Record<string, unknown> = {}
    for (let i = 0; i < reply.length; i += 2) {
      const key = text(reply[i])
      if (key === undefined) return undefined
      out[key] = reply[i + 1]
    }
    return out
  }
  if (reply instanceof Map) {
    const out: Record<string, unknown> = {}
    for (const [k, v] of reply) {
      const key = text(k)
      if (key === undefined) return undefined
      out[key] = v
    }
    return out
  }
  if (Predicate.isObject(reply)) return reply as Record<string, unknown>
  return undefined
}

/** An entry's field/value list; `undefined` for `null` (a pending entry deleted from the stream). */
export const parseFields = (reply: unknown): Record<string, string> | undefined => {
  if (reply === null || reply === undefined) return undefined
  // The shape every read returns, `[field, value, …]`: straight into the result, without a record in between (a
  // consumer parses every entry it reads).
  if (Array.isArray(reply) && reply.length % 2 === 0) {
    const out: Record<string, string> = {}
    for (let i = 0; i < reply.length; i += 2) {
      const key = text(reply[i])
      if (key === undefined) return unexpected("fields", reply)
      const value: unknown = reply[i + 1]
      out[key] = Predicate.isString(value) ? value : (text(value) ?? String(value))
    }
    return out
  }
  const record = toRecord(reply)
  if (record === undefined) return unexpected("fields", reply)
  const out: Record<string, string> = {}
  for (const key in record) out[key] = text(record[key]) ?? String(record[key])
  return out
}

/** `[id, [field, value, …]]`, fields possibly `null`. */
export const parseGroupEntry = (reply: unknown): GroupEntry => {
  if (!Array.isArray(reply) || reply.length !== 2) return unexpected("entry", reply)
  const id = text(reply[0])
  if (id === undefined) return unexpected("entry", reply)
  return { id, fields: parseFields(reply[1]) }
}

export const parseEntry = (reply: unknown): Entry => {
  const entry = parseGroupEntry(reply)
  return { id: entry.id, fields: entry.fields ?? {} }
}

export const parseEntries = (reply: unknown): Array<Entry> =>
  Array.isArray(reply) ? reply.map(parseEntry) : reply === null ? [] : unexpected("entries", reply)

/**
 * `XREAD` / `XREADGROUP`: `null` (nothing, or a block that timed out), `[[stream, entries], …]` (RESP2), or the
 * legacy mapping of a RESP3 map, `[stream, entries, …]`.
 */
export const parseRead = (reply: unknown): Array<StreamEntries> => {
  if (reply === null || reply === undefined) return []
  const pairs: Array<[unknown, unknown]> = []
  if (Array.isArray(reply) && reply.length > 0 && text(reply[0]) !== undefined) {
    if (reply.length % 2 !== 0) return unexpected("XREAD", reply)
    for (let i = 0; i < reply.length; i += 2) pairs.push([reply[i], reply[i + 1]])
  } else if (Array.isArray(reply)) {
    for (const item of reply) {
      if (!Array.isArray(item) || item.length !== 2) return unexpected("XREAD", reply)
      pairs.push([item[0], item[1]])
    }
  } else {
    const record = toRecord(reply)
    if (record === undefined) return unexpected("XREAD", reply)
    for (const key in record) pairs.push([key, record[key]])
  }
  return pairs.map(([stream, entries]) => {
    const name = text(stream)
    if (name === undefined || !Array.isArray(entries)) return unexpected("XREAD", reply)
    return { stream: name, entries: entries.map(parseGroupEntry) }
  })
}

const requireNumber = (command: string, record: Record<string, unknown>, key: string): number =>
  num(record[key]) ?? unexpected(command, record)

const requireText = (command: string, record: Record<string, unknown>, key: string): string =>
  text(record[key]) ?? unexpected(command, record)

/** `XINFO STREAM`. */
export const parseStreamInfo = (reply: unknown): StreamInfo => {
  const r = toRecord(reply) ?? unexpected("XINFO STREAM", reply)
  const entry = (u: unknown) => (u === null || u === undefined ? Option.none() : Option.some(parseEntry(u)))
  return {
    length: requireNumber("XINFO STREAM", r, "length"),
    radixTreeKeys: requireNumber("XINFO STREAM", r, "radix-tree-keys"),
    radixTreeNodes: requireNumber("XINFO STREAM", r, "radix-tree-nodes"),
    lastGeneratedId: requireText("XINFO STREAM", r, "last-generated-id"),
    maxDeletedEntryId: text(r["max-deleted-entry-id"]),
    entriesAdded: num(r["entries-added"]),
    recordedFirstEntryId: text(r["recorded-first-entry-id"]),
    groups: requireNumber("XINFO STREAM", r, "groups"),
    firstEntry: entry(r["first-entry"]),
    lastEntry: entry(r["last-entry"])
  }
}

/** `XINFO GROUPS`. */
export const parseGroups = (reply: unknown): Array<GroupInfo> =>
  (Array.isArray(reply) ? reply : unexpected("XINFO GROUPS", reply)).map((item) => {
    const r = toRecord(item) ?? unexpected("XINFO GROUPS", reply)
    return {
      name: requireText("XINFO GROUPS", r, "name"),
      consumers: requireNumber("XINFO GROUPS", r, "consumers"),
      pending: requireNumber("XINFO GROUPS", r, "pending"),
      lastDeliveredId: requireText("XINFO GROUPS", r, "last-delivered-id"),
      entriesRead: num(r["entries-read"]),
      lag: num(r["lag"])
    }
  })

/** `XINFO CONSUMERS`. */
export const parseConsumers = (reply: unknown): Array<ConsumerInfo> =>
  (Array.isArray(reply) ? reply : unexpected("XINFO CONSUMERS", reply)).map((item) => {
    const r = toRecord(item) ?? unexpected("XINFO CONSUMERS", reply)
    return {
      name: requireText("XINFO CONSUMERS", r, "name"),
      pending: requireNumber("XINFO CONSUMERS", r, "pending"),
      idleMs: requireNumber("XINFO CONSUMERS", r, "idle"),
      inactiveMs: num(r["inactive"])
    }
  })

/** `XPENDING stream group`: `[count, smallest, largest, [[consumer, count], …]]`, nulls when nothing is pending. */
export const parsePendingSummary = (reply: unknown): PendingSummary => {
  if (!Array.isArray(reply) || reply.length !== 4) return unexpected("XPENDING", reply)
  const [count, smallest, largest, consumers] = reply
  const list = consumers === null ? [] : Array.isArray(consumers) ? consumers : unexpected("XPENDING", reply)
  return {
    count: num(count) ?? unexpected("XPENDING", reply),
    smallestId: Option.fromUndefinedOr(text(smallest)),
    largestId: Option.fromUndefinedOr(text(largest)),
    consumers: list.map((c) => {
      if (!Array.isArray(c) || c.length !== 2) return unexpected("XPENDING", reply)
      return { name: text(c[0]) ?? unexpected("XPENDING", reply), pending: num(c[1]) ?? unexpected("XPENDING", reply) }
    })
  }
}

/** `XPENDING stream group start end count`: `[[id, consumer, idle, deliveries], …]`. */
export const parsePendingEntries = (reply: unknown): Array<PendingEntry> =>
  (Array.isArray(reply) ? reply : unexpected("XPENDING", reply)).map((item) => {
    if (!Array.isArray(item) || item.length !== 4) return unexpected("XPENDING", reply)
    return {
      id: text(item[0]) ?? unexpected("XPENDING", reply),
      consumer: text(item[1]) ?? unexpected("XPENDING", reply),
      idleMs: num(item[2]) ?? unexpected("XPENDING", reply),
      deliveries: num(item[3]) ?? unexpected("XPENDING", reply)
    }
  })

/**
 * `XAUTOCLAIM`: `[next, entries, deleted]` (Redis ≥ 7.0); on 6.2 there is no third element and deleted entries
 * come back with `null` fields (they are reported in `deleted` here too).
 */
export const parseAutoClaim = (reply: unknown): AutoClaimResult => {
  if (!Array.isArray(reply) || reply.length < 2) return unexpected("XAUTOCLAIM", reply)
  const next = text(reply[0]) ?? unexpected("XAUTOCLAIM", reply)
  const raw = Array.isArray(reply[1]) ? reply[1].map(parseGroupEntry) : unexpected("XAUTOCLAIM", reply)
  const deleted = Array.isArray(reply[2]) ? reply[2].map((id) => text(id) ?? unexpected("XAUTOCLAIM", reply)) : []
  const entries: Array<Entry> = []
  for (const e of raw) {
    if (e.fields === undefined) deleted.push(e.id)
    else entries.push({ id: e.id, fields: e.fields })
  }
  return { next, entries, deleted }
}
