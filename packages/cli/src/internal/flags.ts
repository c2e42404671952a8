/**
 * Flags shared by several commands, and the global `--json` / `--verbose` settings.
 */
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { Flag, GlobalFlag } from "effect/cli"
import * as Envelope from "@redflow/core/Envelope"
import { ConfigError } from "@redflow/core/ConfigError"
import * as RedisUrl from "@redflow/redis/RedisUrl"
import { UsageError } from "./errors.ts"

/** `--json`: one JSON object on stdout at the end instead of the human summary. */
export const Json = GlobalFlag.Setting("json")({
  flag: Flag.Boolean("json").pipe(
    Flag.withDescription("Print one JSON object at the end (the summary) instead of human-readable output"),
    Flag.withDefault(false)
  )
})

/** `--verbose`: on failure, print the full cause after the one-line message; log more. */
export const Verbose = GlobalFlag.Setting("verbose")({
  flag: Flag.Boolean("verbose").pipe(
    Flag.withDescription("On failure, print the full cause; log warnings and progress details"),
    Flag.withDefault(false)
  )
})

/** The Redis hash `--checkpoint redis` keeps checkpoints in (the library's default). */
export const DEFAULT_CHECKPOINT_HASH = "redflow:checkpoints"

/** `--redis URL`, falling back to `REDIS_URL`; validated by {@link resolveRedisUrl}. */
export const redis = Flag.String("redis").pipe(
  Flag.withMetavar("URL"),
  Flag.withDescription(
    "Redis URL: redis://[user:password@]host:port[/db], rediss://, redis+sentinel://h1,h2/master, redis+cluster://h1,h2 (default: REDIS_URL)"
  ),
  Flag.optional
)

const envRedisUrl = Config.option(Config.String("REDIS_URL")).pipe(
  Effect.map(Option.filter((url) => url !== "")),
  Effect.orElseSucceed(() => Option.none<string>())
)

/** The `--redis` value, else `REDIS_URL`; `None` when neither is set. Fails when the URL cannot work. */
export const redisUrlOption = (flag: Option.Option<string>): Effect.Effect<Option.Option<string>, UsageError> =>
  Effect.gen(function* () {
    const url = Option.isSome(flag) ? flag : yield* envRedisUrl
    if (Option.isNone(url)) return url
    const parsed = RedisUrl.parse(url.value)
    if (parsed instanceof ConfigError) {
      const source = Option.isSome(flag) ? "" : " (from REDIS_URL)"
      return yield* new UsageError({ flag: "redis", message: `${parsed.reason}${source}` })
    }
    return url
  })

/** The `--redis` value, else `REDIS_URL`; one of them is required. */
export const resolveRedisUrl = (flag: Option.Option<string>): Effect.Effect<string, UsageError> =>
  Effect.flatMap(redisUrlOption(flag), (url) =>
    Option.isSome(url)
      ? Effect.succeed(url.value)
      : Effect.fail(
          new UsageError({
            flag: "redis",
            message: "required: a Redis URL such as redis://localhost:6379 (or set REDIS_URL)"
          })
        )
  )

/** An integer flag that must be at least `min`. */
export const intAtLeast = (name: string, min: number, what: string) =>
  Flag.Int(name).pipe(
    Flag.filter(
      (n) => n >= min,
      (n) => `Expected ${what} (an integer >= ${min}), got ${n}`
    )
  )

/** A comma-separated list of non-empty names. */
export const list = (name: string) =>
  Flag.String(name).pipe(
    Flag.map((s) => s.split(",").map((part) => part.trim())),
    Flag.filter(
      (parts) => parts.length > 0 && parts.every((p) => p !== ""),
      (parts) => `Expected a comma-separated list of names such as a,b, got "${parts.join(",")}"`
    )
  )

/** `--rate R`: events per second of the synthetic source; `0` (or no flag, where there is no default) = unthrottled. */
export const rate = Flag.Finite("rate").pipe(
  Flag.filter(
    (r) => r >= 0,
    (r) => `Expected events per second >= 0 (0 = as fast as Redis takes them), got ${r}`
  ),
  Flag.withMetavar("R")
)

/** The source's pace from `--rate`: none for 0 (as fast as Redis takes them). */
export const pace = (rate: Option.Option<number>): Option.Option<number> => Option.filter(rate, (r) => r > 0)

/** `--metrics-port PORT`: serve `/metrics`, `/health`, `/ready` there; a port given and taken is an error (exit 2). */
export const metricsPort = Flag.Int("metrics-port").pipe(
  Flag.filter(
    (p) => p >= 0 && p <= 65535,
    (p) => `Expected a port 0-65535 (0 = a free port), got ${p}`
  ),
  Flag.withMetavar("PORT")
)

/** `--envelope`: how the `event` field is encoded; the consumer must read what the sink wrote. */
export const envelope = Flag.Literals("envelope", Envelope.formats).pipe(
  Flag.withMetavar("FORMAT"),
  Flag.withDescription(
    "Encoding of each entry's event field: native (the event as JSON), debezium ({schema: null, payload}), cloudevents (CloudEvents 1.0 JSON); a consumer must use the producer's"
  ),
  Flag.withDefault("native")
)

/** `--lease TTL`: run as one of several processes of a pipeline, one active and the others standing by. */
export const lease = Flag.String("lease").pipe(
  Flag.withMetavar("TTL"),
  Flag.withDescription(
    "Hold the pipeline's lease in Redis while writing (e.g. 5s): a second process with the same --pipeline waits as a standby and takes over within TTL when this one dies; a batch of a process paused past its lease is refused (LeaseFenced). Needs --checkpoint redis"
  ),
  Flag.optional
)

const UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/**
 * A time flag's value in milliseconds: `500ms`, `5s`, `1m`, `12h`, `7d`, or an Effect duration such as `5 seconds`;
 * at least `min` ms. A value it cannot read fails naming `flag`, with `examples` of what it takes.
 */
export const millisOf = (
  flag: string,
  value: string,
  options: { readonly min: number; readonly examples: string }
): Effect.Effect<number, UsageError> => {
  const ms = parseMillis(value, options.min)
  return ms !== undefined
    ? Effect.succeed(ms)
    : Effect.fail(
        new UsageError({ flag, message: `expected a time to live such as ${options.examples}, got "${value}"` })
      )
}

/**
 * A time such as `12h`, `7d`, `30m`, `500ms` or an Effect duration (`"5 seconds"`) in whole milliseconds, or
 * `undefined` when it is not one or is below `min`.
 */
export const parseMillis = (value: string, min: number): number | undefined => {
  const short = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(value.trim())
  let ms: number | undefined
  if (short !== null) ms = Number(short[1]) * UNITS[short[2]!]!
  else {
    try {
      const d = Duration.fromInput(value as Duration.Input)
      if (Option.isSome(d) && Duration.isFinite(d.value)) ms = Duration.toMillis(d.value)
    } catch {
      ms = undefined
    }
  }
  return ms !== undefined && Number.isFinite(ms) && ms >= min ? Math.round(ms) : undefined
}

/** A `--lease` value in milliseconds; at least 3 ms, as the lease renews every third of it. */
export const leaseTtl = (value: string): Effect.Effect<number, UsageError> =>
  millisOf("lease", value, { min: 3, examples: "5s or 500ms" })

/** `--lease` needs a checkpoint the standby reads too: the one in Redis. */
export const leaseNeedsRedisCheckpoint = new UsageError({
  flag: "lease",
  message:
    "needs --checkpoint redis: a standby, possibly on another machine, must resume from the checkpoint the active " +
    "process wrote, so the checkpoint has to live in Redis"
})
