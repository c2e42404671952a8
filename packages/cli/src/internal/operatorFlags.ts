/**
 * The sink's operator flags shared by `redflow run` and `redflow produce`: acked trimming (`--trim acked`,
 * `--on-lag`), consumer-lag backpressure (`--max-lag GROUP:ENTRIES`), notices (`--publish CHANNEL`), the memory guard
 * (`--memory-guard[=HIGH[:LOW]]`), the durability check (`--durability`) and oversized events (`--max-event-bytes`,
 * `--large-events`, `--large-event-ttl`). {@link sinkOptions} turns them into the
 * sink's options; the sink checks them, and a rejection names the flag (see `optionFlags.ts`).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { Flag } from "effect/cli"
import type * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import { UsageError } from "./errors.ts"
import { intAtLeast, millisOf } from "./flags.ts"

/** The value a bare `--memory-guard` stands for: the guard's own defaults. */
const DEFAULT_GUARD = "default"

export const flags = {
  trim: Flag.Literals("trim", ["acked"]).pipe(
    Flag.withMetavar("acked"),
    Flag.withDescription(
      "acked: trim each stream only below what every consumer group has read and acknowledged (with --maxlen, see --on-lag)"
    ),
    Flag.optional
  ),
  onLag: Flag.Literals("on-lag", ["hold", "trim"]).pipe(
    Flag.withMetavar("hold|trim"),
    Flag.withDescription(
      "With --trim acked and --maxlen, a group that keeps the stream past N entries: hold (default) holds the source until it catches up; trim lets --maxlen win and counts the entries it had not processed"
    ),
    Flag.optional
  ),
  maxLag: Flag.String("max-lag").pipe(
    Flag.withMetavar("GROUP:ENTRIES"),
    Flag.withDescription("Hold the source while consumer group GROUP has ENTRIES or more to read or acknowledge"),
    Flag.optional
  ),
  publish: Flag.String("publish").pipe(
    Flag.withMetavar("CHANNEL"),
    Flag.withDescription(
      "After each write, PUBLISH one notice per stream on CHANNEL (a template like --stream's): {stream, first, last, count}"
    ),
    Flag.optional
  ),
  memoryGuard: Flag.String("memory-guard").pipe(
    Flag.withOptionalValue(DEFAULT_GUARD),
    Flag.withMetavar("HIGH[:LOW]"),
    Flag.withDescription(
      "Hold writes above HIGH × maxmemory until memory is below LOW × maxmemory (shares; default 0.9:0.8); give values with =, e.g. --memory-guard=0.85:0.7"
    ),
    Flag.optional
  ),
  durability: Flag.Literals("durability", ["warn", "require", "ignore"]).pipe(
    Flag.withMetavar("warn|require|ignore"),
    Flag.withDescription(
      "What to do when Redis can lose acknowledged writes on a restart (AOF off, appendfsync no): warn (default), require (refuse to start), ignore"
    ),
    Flag.optional
  ),
  maxEventBytes: intAtLeast("max-event-bytes", 1, "the largest encoded event, in bytes").pipe(
    Flag.withMetavar("BYTES"),
    Flag.withDescription(
      "An event larger than this, encoded, is handled by --large-events (default 1048576, at most the batch's byte bound)"
    ),
    Flag.optional
  ),
  largeEvents: Flag.Literals("large-events", ["dead-letter", "reference"]).pipe(
    Flag.withMetavar("dead-letter|reference"),
    Flag.withDescription(
      "An event over --max-event-bytes: dead-letter (default; the entry names its size) or reference (its body stored under a key with a TTL, the entry pointing at it; RedisStreamConsumer reads it back)"
    ),
    Flag.optional
  ),
  largeEventTtl: Flag.String("large-event-ttl").pipe(
    Flag.withMetavar("TTL"),
    Flag.withDescription(
      "How long a referenced body is kept (e.g. 12h, 7d or 30m; default 7d): a consumer later than that finds it gone and dead-letters the entry"
    ),
    Flag.optional
  )
} as const

export interface OperatorFlags {
  readonly trim: Option.Option<"acked">
  readonly onLag: Option.Option<"hold" | "trim">
  readonly maxLag: Option.Option<string>
  readonly publish: Option.Option<string>
  readonly memoryGuard: Option.Option<string>
  readonly durability: Option.Option<"warn" | "require" | "ignore">
  readonly maxEventBytes: Option.Option<number>
  readonly largeEvents: Option.Option<"dead-letter" | "reference">
  readonly largeEventTtl: Option.Option<string>
}

export const none: OperatorFlags = {
  trim: Option.none(),
  onLag: Option.none(),
  maxLag: Option.none(),
  publish: Option.none(),
  memoryGuard: Option.none(),
  durability: Option.none(),
  maxEventBytes: Option.none(),
  largeEvents: Option.none(),
  largeEventTtl: Option.none()
}

/** `GROUP:ENTRIES`, split at the last colon (a group name may hold one). */
const parseMaxLag = (text: string): Effect.Effect<RedisStreamSink.Options["maxLag"] & {}, UsageError> => {
  const colon = text.lastIndexOf(":")
  const group = colon < 0 ? "" : text.slice(0, colon)
  const entries = colon < 0 ? Number.NaN : Number(text.slice(colon + 1))
  return group !== "" && Number.isInteger(entries) && entries >= 1
    ? Effect.succeed({ group, entries })
    : Effect.fail(
        new UsageError({
          flag: "max-lag",
          message: `expected GROUP:ENTRIES, a consumer group and an entry count >= 1 such as billing:10000, got ${JSON.stringify(text)}`
        })
      )
}

/** `HIGH[:LOW]` as shares of maxmemory; the guard itself checks their range. */
const parseGuard = (text: string): Effect.Effect<{ highWater?: number; lowWater?: number }, UsageError> => {
  if (text === DEFAULT_GUARD) return Effect.succeed({})
  const parts = text.split(":")
  const numbers = parts.map((p) => (p.trim() === "" ? Number.NaN : Number(p)))
  if (parts.length > 2 || numbers.some((n) => !Number.isFinite(n))) {
    return Effect.fail(
      new UsageError({
        flag: "memory-guard",
        message: `expected HIGH or HIGH:LOW, shares of maxmemory such as 0.9:0.8, got ${JSON.stringify(text)}`
      })
    )
  }
  const [highWater, lowWater] = numbers as [number, number | undefined]
  const wrong = guardProblem(highWater, lowWater, "HIGH", "LOW")
  if (wrong !== undefined) return Effect.fail(new UsageError({ flag: "memory-guard", message: wrong }))
  return Effect.succeed(lowWater === undefined ? { highWater } : { highWater, lowWater })
}

/**
 * What is wrong with the memory guard's shares, or `undefined`: checked before connecting, where the guard itself
 * would refuse them only once the sink starts.
 */
export const guardProblem = (
  highWater: number | undefined,
  lowWater: number | undefined,
  high = "highWater",
  low = "lowWater"
): string | undefined => {
  if (highWater !== undefined && !(highWater > 0 && highWater <= 1)) {
    return `${high} must be a share above 0 and at most 1, got ${highWater}`
  }
  if (lowWater !== undefined && !(lowWater > 0 && lowWater < (highWater ?? 0.9))) {
    return `${low} must be a share above 0 and below ${high} (${highWater ?? 0.9}), got ${lowWater}`
  }
  return undefined
}

/** Where each setting given by one of these flags came from, for messages (`sink.trim.acked` → `--trim`). */
export const origins = (input: OperatorFlags): Record<string, string> => {
  const out: Record<string, string> = {}
  if (Option.isSome(input.trim)) out["sink.trim.acked"] = "--trim"
  if (Option.isSome(input.onLag)) out["sink.trim.onLag"] = "--on-lag"
  if (Option.isSome(input.maxLag)) out["sink.maxLag"] = "--max-lag"
  if (Option.isSome(input.publish)) out["sink.publish.channel"] = "--publish"
  if (Option.isSome(input.memoryGuard)) out["sink.memoryGuard"] = "--memory-guard"
  if (Option.isSome(input.durability)) out["sink.durability"] = "--durability"
  if (Option.isSome(input.maxEventBytes)) out["sink.maxEventBytes"] = "--max-event-bytes"
  if (Option.isSome(input.largeEvents)) out["sink.largeEvents"] = "--large-events"
  if (Option.isSome(input.largeEventTtl)) out["sink.largeEventTtl"] = "--large-event-ttl"
  return out
}

/** The sink options these flags set. */
export type OperatorOptions = Pick<
  RedisStreamSink.Options,
  "trim" | "maxLag" | "publish" | "memoryGuard" | "durability" | "maxEventBytes" | "largeEvents" | "largeEventTtl"
>

/**
 * The sink options the flags give, merged over `trim` (the `--maxlen` the command already turned into
 * `trim.maxLen`). `--on-lag` without `--trim acked` is left to the sink to refuse, so its message is the library's.
 */
export const sinkOptions = (
  input: OperatorFlags,
  trim: RedisStreamSink.TrimOptions | undefined
): Effect.Effect<OperatorOptions, UsageError> =>
  Effect.gen(function* () {
    const options: { -readonly [K in keyof OperatorOptions]: OperatorOptions[K] } = {}
    const acked = Option.isSome(input.trim)
    if (acked || Option.isSome(input.onLag)) {
      options.trim = {
        ...trim,
        ...(acked ? { acked: true as const } : {}),
        ...Option.match(input.onLag, { onNone: () => ({}), onSome: (onLag) => ({ onLag }) })
      }
    }
    if (Option.isSome(input.maxLag)) options.maxLag = yield* parseMaxLag(input.maxLag.value)
    if (Option.isSome(input.publish)) options.publish = { channel: input.publish.value }
    if (Option.isSome(input.memoryGuard)) options.memoryGuard = yield* parseGuard(input.memoryGuard.value)
    if (Option.isSome(input.durability)) options.durability = input.durability.value
    if (Option.isSome(input.maxEventBytes)) options.maxEventBytes = input.maxEventBytes.value
    if (Option.isSome(input.largeEvents)) options.largeEvents = input.largeEvents.value
    if (Option.isSome(input.largeEventTtl)) {
      options.largeEventTtl = Duration.millis(
        yield* millisOf("large-event-ttl", input.largeEventTtl.value, { min: 1, examples: "12h, 7d or 30m" })
      )
    }
    return options
  })
