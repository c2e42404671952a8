/**
 * The events every benchmark writes: the synthetic source's three tables (customers, orders, payments) with rows
 * padded to about 1 KiB, generated once before anything is timed and shared by every contender.
 */
import { Effect, Stream } from "effect"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as SyntheticSource from "@redflow/core/SyntheticSource"

/** Rows of about 1 KiB (the synthetic source pads a `notes` column up to this JSON size). */
export const PAYLOAD_BYTES = 1024
/** The synthetic source's chunk size: the sink sees the same chunks as from the real source. */
export const CHUNK = 1024
export const TABLES = ["customers", "orders", "payments"] as const

export interface Payload {
  readonly events: ReadonlyArray<CdcEvent>
  /** Event id → index in `events`, for latency probes that find an entry's creation time. */
  readonly indexById: ReadonlyMap<string, number>
  /** Mean length of the encoded `event` field (native envelope, JSON). */
  readonly meanEventBytes: number
}

export const generate = async (count: number): Promise<Payload> => {
  const events = await Effect.runPromise(
    Stream.runCollect(SyntheticSource.make({ count, payloadBytes: PAYLOAD_BYTES, tables: [...TABLES] }))
  )
  const indexById = new Map<string, number>()
  let bytes = 0
  for (let i = 0; i < events.length; i++) {
    const event = events[i]!
    indexById.set(event.id, i)
    if (i < 10_000) bytes += JSON.stringify(event).length
  }
  return { events, indexById, meanEventBytes: Math.round(bytes / Math.min(events.length, 10_000)) }
}

/** The first `count` events in the synthetic source's chunks. */
export const chunks = (payload: Payload, count: number): Array<ReadonlyArray<CdcEvent>> => {
  const out: Array<ReadonlyArray<CdcEvent>> = []
  for (let i = 0; i < count; i += CHUNK) out.push(payload.events.slice(i, Math.min(count, i + CHUNK)))
  return out
}

/** The stream an event goes to under `prefix`: one stream per table, as the sink's `${prefix}.${source.table}`. */
export const streamOf = (prefix: string, event: CdcEvent): string => `${prefix}.${event.source.table}`

export const streamsOf = (prefix: string): Array<string> => TABLES.map((t) => `${prefix}.${t}`)

/** The entry fields the sink writes (no key template): `event`, `id`, `op`, `table`. */
export const fields = (event: CdcEvent, encoded: string): Array<string> => [
  "event",
  encoded,
  "id",
  event.id,
  "op",
  event.op,
  "table",
  event.source.table
]
