/**
 * From a component's option to the flag the user typed: every Redflow component fails a bad option with one
 * `ConfigError` carrying the component and the option's path, and this module maps that pair to the command line's
 * name for it (`RedisStreamSink` `batch.maxEvents` → `--batch-size`), so a message names what the user can change.
 */
import * as Effect from "effect/Effect"
import type { ConfigError } from "@redflow/core/ConfigError"
import { UsageError } from "./errors.ts"

/** The flag of each component's option (keyed by `ConfigError.field`), where the command line has one. */
const FLAG_OF_OPTION: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  RedisConnection: { url: "redis" },
  RedisStreamConsumer: {
    stream: "stream",
    group: "group",
    consumer: "consumer",
    startId: "start-id",
    minIdle: "claim-idle",
    deadLetterStream: "dead-letter",
    maxDeliveries: "max-deliveries",
    concurrency: "concurrency",
    limit: "count"
  },
  RedisStreamSink: {
    stream: "stream",
    key: "key",
    guarantee: "guarantee",
    pipeline: "pipeline",
    envelope: "envelope",
    "batch.maxEvents": "batch-size",
    "trim.maxLen": "maxlen",
    "trim.acked": "trim",
    "trim.onLag": "on-lag",
    maxLag: "max-lag",
    "maxLag.group": "max-lag",
    "maxLag.entries": "max-lag",
    publish: "publish",
    "publish.channel": "publish",
    memoryGuard: "memory-guard",
    durability: "durability",
    maxEventBytes: "max-event-bytes",
    largeEvents: "large-events",
    largeEventTtl: "large-event-ttl"
  },
  PostgresSource: {
    url: "source",
    tables: "tables",
    slot: "slot",
    publication: "publication",
    snapshot: "snapshot"
  },
  RedisCheckpointStore: { key: "checkpoint" },
  SyntheticSource: {
    count: "events",
    ratePerSecond: "rate",
    tables: "tables",
    payloadBytes: "payload-bytes",
    seed: "seed"
  }
}

/** The flag of a rejected option, when the command line has one. */
export const flagOf = (error: ConfigError): string | undefined => {
  const flags = FLAG_OF_OPTION[error.component]
  if (flags === undefined) return undefined
  // `tables[2]` is the `--tables` flag's third name.
  return flags[error.field] ?? (typeof error.path[0] === "string" ? flags[error.path[0]] : undefined)
}

/** What is wrong and, when known, what to do, without the component and the option's own name. */
export const reasonOf = (error: ConfigError): string =>
  error.fix === undefined ? error.reason : `${error.reason}; ${error.fix}`

/** The error as the command line says it: the flag at fault (the option's own name when there is no flag). */
export const toUsageError = (error: ConfigError): UsageError =>
  new UsageError({ flag: flagOf(error) ?? error.field, message: reasonOf(error) })

/** A bad option of a component names its flag (exit 2). */
export const namingFlags = <A, E extends { readonly _tag: string }, R>(self: Effect.Effect<A, E | ConfigError, R>) =>
  Effect.catchTag(self, "ConfigError", (e) => Effect.fail(toUsageError(e as ConfigError)))

/** A sink option the sink rejected, as `{ field, reason }`. */
export const sinkRejection = (error: ConfigError): { readonly field: string; readonly reason: string } => ({
  field: error.field,
  reason: reasonOf(error)
})

/** The flag of a sink option the sink rejected. */
export const sinkFlagOf = (field: string): string => FLAG_OF_OPTION.RedisStreamSink![field] ?? field
