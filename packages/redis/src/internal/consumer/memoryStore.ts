/**
 * A stream and its consumer groups in memory, behind the consumer's store interface (`store.ts`), with idle times
 * and blocking reads on the `Clock`: the consumer's logic (read-ahead, `limit`, claims, dead-lettering, give-back,
 * shutdown) runs under `TestClock`, in milliseconds of real time. It follows the Redis commands the store stands
 * for as far as the consumer relies on them:
 *
 * - `XREADGROUP >` delivers entries after the group's last-delivered id (delivery count 1); with an id, it re-reads
 *   the consumer's own pending entries after it (counting a delivery each), a deleted one without fields;
 * - `XAUTOCLAIM` takes over entries idle at least `minIdle` (counting a delivery), dropping deleted ones;
 * - `XCLAIM … 0 JUSTID` (`touch`) takes an entry to the consumer and resets its idle time, counting nothing, even
 *   when another consumer has it.
 *
 * Not for production: nothing is persisted, and one process sees it.
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { RedisCommandError } from "../../RedisError.ts"
import { idOrder } from "./ledger.ts"
import type { ConsumerSettings } from "./settings.ts"
import type { ConsumerStore, LiveEntry, ReadEntry } from "./store.ts"

/** One pending entry of a group. */
export interface PendingEntry {
  consumer: string
  deliveries: number
  /** When it was last delivered or touched (ms, `Clock`). */
  deliveredAt: number
}

export interface Group {
  lastDeliveredId: string
  /** By entry id, in id order of insertion is not guaranteed: sort by id when order matters. */
  readonly pending: Map<string, PendingEntry>
}

/** A stream, its groups, the consumers' error hash and the dead-letter stream. */
export interface MemoryStream {
  readonly name: string
  readonly entries: Array<LiveEntry>
  readonly groups: Map<string, Group>
  /** The last errors of entries, as the consumer keeps them (`errorsKey`). */
  readonly errors: Map<string, string>
  /** Event bodies stored by reference, by key. */
  readonly bodies: Map<string, string>
  /** What was written to the dead-letter stream, as field records. */
  readonly deadLetters: Array<Record<string, string>>
  /** Reads blocked for new entries: completed by {@link append}. */
  readonly waiting: Set<Deferred.Deferred<void>>
  lastMs: number
  lastSeq: number
}

export const makeStream = (name: string): MemoryStream => ({
  name,
  entries: [],
  groups: new Map(),
  errors: new Map(),
  bodies: new Map(),
  deadLetters: [],
  waiting: new Set(),
  lastMs: 0,
  lastSeq: 0
})

const order = (id: string): bigint => idOrder(id === "0" ? "0-0" : id.includes("-") ? id : `${id}-0`) ?? 0n

const byId = (a: string, b: string) => {
  const x = order(a)
  const y = order(b)
  return x < y ? -1 : x > y ? 1 : 0
}

/** `XADD stream * …`: appends an entry with an id from the `Clock`, and wakes blocked reads. */
export const append = (stream: MemoryStream, fields: Readonly<Record<string, string>>): Effect.Effect<string> =>
  Effect.map(Clock.currentTimeMillis, (now) => {
    if (now > stream.lastMs) {
      stream.lastMs = now
      stream.lastSeq = 0
    } else {
      stream.lastSeq++
    }
    const id = `${stream.lastMs}-${stream.lastSeq}`
    stream.entries.push({ id, fields })
    for (const waiter of stream.waiting) Deferred.doneUnsafe(waiter, Exit.void)
    stream.waiting.clear()
    return id
  })

/** `XDEL`: the entry is gone from the stream; a group that has it pending keeps the id. */
export const remove = (stream: MemoryStream, id: string): void => {
  const i = stream.entries.findIndex((e) => e.id === id)
  if (i >= 0) stream.entries.splice(i, 1)
}

const noGroup = (stream: MemoryStream, group: string) =>
  new RedisCommandError({
    message: `NOGROUP No such key '${stream.name}' or consumer group '${group}'`,
    code: "NOGROUP",
    key: stream.name
  })

/** The store of one consumer (`settings.consumer`) of `settings.group` on `stream`. */
export const make = (stream: MemoryStream, settings: ConsumerSettings): ConsumerStore => {
  const { group: groupName, consumer } = settings
  const now = Clock.currentTimeMillis
  const groupOrFail = Effect.suspend(() => {
    const group = stream.groups.get(groupName)
    return group === undefined ? Effect.fail(noGroup(stream, groupName)) : Effect.succeed(group)
  })
  const fieldsOf = (id: string) => stream.entries.find((e) => e.id === id)?.fields
  /** The read blocked now, cut short by `unblockRead`. */
  let blocked: Deferred.Deferred<void> | undefined

  const readNew = (group: Group, count: number, at: number): Array<ReadEntry> => {
    const after = order(group.lastDeliveredId)
    const out: Array<ReadEntry> = []
    for (const entry of stream.entries) {
      if (out.length >= count) break
      if (order(entry.id) <= after) continue
      group.pending.set(entry.id, { consumer, deliveries: 1, deliveredAt: at })
      group.lastDeliveredId = entry.id
      out.push(entry)
    }
    return out
  }

  const readHistory = (group: Group, id: string, count: number, at: number): Array<ReadEntry> => {
    const after = order(id)
    const ids = [...group.pending]
      .filter(([pid, p]) => p.consumer === consumer && order(pid) > after)
      .map(([pid]) => pid)
      .sort(byId)
      .slice(0, count)
    return ids.map((pid) => {
      const p = group.pending.get(pid)!
      p.deliveries++
      p.deliveredAt = at
      return { id: pid, fields: fieldsOf(pid) }
    })
  }

  return {
    topology: "standalone",
    nextReconnect: () => Effect.never,
    nextReaderReconnect: () => Effect.never,
    createGroup: (start) =>
      Effect.sync(() => {
        if (stream.groups.has(groupName)) return false
        const last = stream.entries[stream.entries.length - 1]?.id ?? "0-0"
        stream.groups.set(groupName, { lastDeliveredId: start === "$" ? last : start, pending: new Map() })
        return true
      }),
    firstEntryId: Effect.sync(() => stream.entries[0]?.id),
    readGroup: (id, count, blockMs) =>
      Effect.gen(function* () {
        const group = yield* groupOrFail
        if (id !== ">") return readHistory(group, id, count, yield* now)
        const first = readNew(group, count, yield* now)
        if (first.length > 0 || blockMs === undefined) return first
        const woken = yield* Deferred.make<void>()
        stream.waiting.add(woken)
        blocked = woken
        yield* Effect.raceFirst(Deferred.await(woken), Effect.sleep(blockMs)).pipe(
          Effect.ensuring(
            Effect.sync(() => {
              stream.waiting.delete(woken)
              blocked = undefined
            })
          )
        )
        return readNew(yield* groupOrFail, count, yield* now)
      }),
    unblockRead: Effect.suspend(() => (blocked === undefined ? Effect.void : Deferred.done(blocked, Exit.void))).pipe(
      Effect.asVoid
    ),
    dropReader: Effect.void,
    autoClaim: (start, count) =>
      Effect.gen(function* () {
        const group = yield* groupOrFail
        const at = yield* now
        const from = order(start)
        const ids = [...group.pending.keys()].filter((pid) => order(pid) >= from).sort(byId)
        const entries: Array<LiveEntry> = []
        let next = "0-0"
        for (let i = 0; i < ids.length; i++) {
          if (entries.length >= count) {
            next = ids[i]!
            break
          }
          const pid = ids[i]!
          const p = group.pending.get(pid)!
          if (at - p.deliveredAt < settings.minIdleMs) continue
          const fields = fieldsOf(pid)
          if (fields === undefined) {
            group.pending.delete(pid)
            continue
          }
          p.consumer = consumer
          p.deliveries++
          p.deliveredAt = at
          entries.push({ id: pid, fields })
        }
        return { next, entries }
      }),
    deliveries: (ids) =>
      Effect.sync(() => {
        const out = new Map<string, number>()
        const group = stream.groups.get(groupName)
        for (const id of ids) {
          const p = group?.pending.get(id)
          if (p !== undefined && p.consumer === consumer) out.set(id, p.deliveries)
        }
        return out
      }),
    ack: (ids, forget) =>
      Effect.map(groupOrFail, (group) => {
        let acked = 0
        for (const id of ids) if (group.pending.delete(id)) acked++
        for (const id of forget) stream.errors.delete(id)
        return acked
      }),
    recordError: (id, reason) => Effect.sync(() => void stream.errors.set(id, reason)),
    lastError: (id) => Effect.sync(() => stream.errors.get(id)),
    bodies: (keys) => Effect.sync(() => keys.map((key) => stream.bodies.get(key))),
    fence: (id, deliveries) =>
      Effect.gen(function* () {
        const p = (yield* groupOrFail).pending.get(id)
        if (p === undefined || p.consumer !== consumer || p.deliveries !== deliveries) return false
        p.deliveredAt = yield* now
        return true
      }),
    addDeadLetter: (fields) =>
      Effect.sync(() => {
        const record: Record<string, string> = {}
        for (let i = 0; i + 1 < fields.length; i += 2) record[fields[i]!] = fields[i + 1]!
        stream.deadLetters.push(record)
      }),
    touch: (ids) =>
      Effect.gen(function* () {
        const group = yield* groupOrFail
        const at = yield* now
        for (const id of ids) {
          const p = group.pending.get(id)
          if (p === undefined) continue
          p.consumer = consumer
          p.deliveredAt = at
        }
      }),
    groupInfo: Effect.sync(() => {
      const group = stream.groups.get(groupName)
      return group === undefined ? undefined : { pending: group.pending.size, lastDeliveredId: group.lastDeliveredId }
    }),
    giveBack: (entries, idleMs) =>
      Effect.gen(function* () {
        const group = yield* groupOrFail
        const at = yield* now
        let released = 0
        for (const [id, deliveries] of entries) {
          const p = group.pending.get(id)
          if (p === undefined || p.consumer !== consumer || p.deliveries !== deliveries) continue
          p.deliveries = deliveries - 1
          p.deliveredAt = at - idleMs
          released++
        }
        return released
      })
  }
}
